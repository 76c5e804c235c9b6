"""Monte-Carlo predictive, uncertainty scores, calibration and detection metrics.

* `predictive(probs)`: `p(y | x, D) ~ (1/S) sum_s p(y | x, theta_s)` (Eq. 7.4).
* Scores over per-sample class probabilities `[S, B, C]`, one sign convention (higher =
  more uncertain), registry `SCORES`: `variation_ratio` (1 - max predictive probability),
  `predictive_entropy`, `bald` (mutual information between y and theta), `mean_std`
  (the mean over classes of the standard deviation over samples) -- the acquisition
  functions of Gal et al. used as anomaly scores in Section 7.4.4.
* Calibration: `nll`, `brier`, `expected_calibration_error` (15 bins), `reliability`.
* Detection: `auroc`, `average_precision`, `detection_metrics` (AUROC, AUPR-in,
  AUPR-out as in Hendrycks and Gimpel; anomalies are the positives of AUROC / AUPR-out).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.bhn.objectives import PROB_CLIP
from jaxthesis.typing import Array, ArrayLike

_LOG_EPS = 1e-12


def _check_probs(probs: ArrayLike, name: str = "probs") -> None:
  _checks.check_floating(name, probs)
  if np.ndim(probs) != 3:
    raise ValueError(f"{name} must have shape [S, B, C] (samples, examples, classes), "
                     f"got {np.shape(probs)}")


def _check_predictive(p: ArrayLike, name: str = "probs") -> None:
  _checks.check_floating(name, p)
  if np.ndim(p) != 2:
    raise ValueError(f"{name} must have shape [B, C], got {np.shape(p)}")


def _check_labels(labels: ArrayLike, n: int, num_classes: int, name: str = "labels") -> None:
  """Integer labels `[n]`, each in `[0, num_classes)` when concrete."""
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"{name} must hold integer labels, got dtype {jnp.result_type(labels)}")
  if np.shape(labels) != (n,):
    raise ValueError(f"{name} must have shape [{n}], got {np.shape(labels)}")
  # Out-of-range labels index past the classes (NaN) or wrap around (negative) silently.
  _checks.check_below(name, labels, num_classes, "class labels")


def sample_probabilities(logits: ArrayLike, clip: bool = True) -> Array:
  """Per-sample class probabilities `[S, B, C]` from logits, clipped to (0.001, 0.999) and
  renormalized (Section 7.3.3 clips the softmax in the predictive as well)."""
  _check_probs(logits, "logits")
  p = jax.nn.softmax(jnp.asarray(logits), -1)
  if clip:
    p = jnp.clip(p, *PROB_CLIP)
    p = p / jnp.sum(p, -1, keepdims=True)
  return p


def predictive(probs: ArrayLike) -> Array:
  """The Monte-Carlo predictive `(1/S) sum_s p_s` (Eq. 7.4): `[S, B, C] -> [B, C]`."""
  _check_probs(probs)
  return jnp.mean(jnp.asarray(probs), 0)


def _entropy(p: Array) -> Array:
  return -jnp.sum(p * jnp.log(p + _LOG_EPS), -1)


def variation_ratio(probs: ArrayLike) -> Array:
  """`1 - max_c p(c | x, D)` with the MC predictive: `[S, B, C] -> [B]`."""
  _check_probs(probs)
  return 1.0 - jnp.max(jnp.mean(jnp.asarray(probs), 0), -1)


def predictive_entropy(probs: ArrayLike) -> Array:
  """`H[p(y | x, D)] = -sum_c pbar_c log pbar_c`: `[S, B, C] -> [B]`."""
  _check_probs(probs)
  return _entropy(jnp.mean(jnp.asarray(probs), 0))


def bald(probs: ArrayLike) -> Array:
  """BALD: `I[y; theta | x, D] = H[pbar] - (1/S) sum_s H[p_s]` (>= 0): `[S, B, C] -> [B]`."""
  _check_probs(probs)
  probs = jnp.asarray(probs)
  return _entropy(jnp.mean(probs, 0)) - jnp.mean(_entropy(probs), 0)


def mean_std(probs: ArrayLike) -> Array:
  """`(1/C) sum_c std_s p_s(c)` (population std over samples): `[S, B, C] -> [B]`."""
  _check_probs(probs)
  return jnp.mean(jnp.std(jnp.asarray(probs), 0), -1)


SCORES: dict[str, Callable[[ArrayLike], Array]] = {
    "variation_ratio": variation_ratio,
    "entropy": predictive_entropy,
    "bald": bald,
    "mean_std": mean_std,
}


def score(name: str, probs: ArrayLike) -> Array:
  """The score `name` from `SCORES` (higher = more uncertain)."""
  _checks.check_choice("name", name, tuple(SCORES))
  return SCORES[name](probs)


# --------------------------------------------------------------------- calibration


def nll(probs: ArrayLike, labels: ArrayLike) -> Array:
  """Mean negative log predictive probability of the labels; probs [B, C]."""
  _check_predictive(probs)
  _check_labels(labels, *np.shape(probs))
  p = jnp.take_along_axis(jnp.asarray(probs), jnp.asarray(labels)[:, None], -1)[:, 0]
  return -jnp.mean(jnp.log(p + _LOG_EPS))


def brier(probs: ArrayLike, labels: ArrayLike) -> Array:
  """Brier score `mean_i sum_c (p_ic - [y_i = c])^2`; probs [B, C]."""
  _check_predictive(probs)
  _check_labels(labels, *np.shape(probs))
  onehot = jax.nn.one_hot(labels, np.shape(probs)[1])
  return jnp.mean(jnp.sum(jnp.square(jnp.asarray(probs) - onehot), -1))


def reliability(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> dict[str, Array]:
  """Reliability-diagram statistics over equal-width confidence bins.

  Confidence is `max_c p_ic`; example i falls in bin `k` when `k/M < conf <= (k+1)/M`.

  Returns:
    `{"confidence": [M] mean confidence per bin, "accuracy": [M], "count": [M],
      "edges": [M + 1]}` (empty bins: confidence and accuracy 0).
  """
  _check_predictive(probs)
  _check_labels(labels, *np.shape(probs))
  if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
  probs = jnp.asarray(probs)
  conf = jnp.max(probs, -1)
  correct = (jnp.argmax(probs, -1) == jnp.asarray(labels)).astype(jnp.float32)
  edges = jnp.linspace(0.0, 1.0, num_bins + 1)
  bins = jnp.clip(jnp.searchsorted(edges, conf, side="left") - 1, 0, num_bins - 1)
  count = jnp.zeros(num_bins).at[bins].add(1.0)
  conf_sum = jnp.zeros(num_bins).at[bins].add(conf)
  acc_sum = jnp.zeros(num_bins).at[bins].add(correct)
  safe = jnp.maximum(count, 1.0)
  return {"confidence": conf_sum / safe, "accuracy": acc_sum / safe, "count": count,
          "edges": edges}


def expected_calibration_error(probs: ArrayLike, labels: ArrayLike, num_bins: int = 15) -> Array:
  """ECE = `sum_k (n_k / n) |acc_k - conf_k|` over 15 equal-width confidence bins."""
  r = reliability(probs, labels, num_bins)
  return jnp.sum(r["count"] * jnp.abs(r["accuracy"] - r["confidence"])) / jnp.sum(r["count"])


# ----------------------------------------------------------------------- detection


def _check_detection(scores: ArrayLike, is_positive: ArrayLike) -> None:
  _checks.check_floating("scores", scores)
  _checks.check_rank("scores", scores, 1)
  if np.shape(is_positive) != np.shape(scores):
    raise ValueError(f"is_positive must have the shape of scores {np.shape(scores)}, "
                     f"got {np.shape(is_positive)}")
  if _checks.is_concrete(is_positive):
    pos = np.asarray(is_positive).astype(bool)
    if pos.all() or not pos.any():
      raise ValueError("is_positive must contain both positives and negatives")


def auroc(scores: ArrayLike, is_positive: ArrayLike) -> Array:
  """Area under the ROC curve: P(score of a positive > score of a negative), ties = 1/2.

  Computed from mid-ranks (the Mann-Whitney statistic); equals scikit-learn's
  `roc_auc_score(is_positive, scores)`.
  """
  _check_detection(scores, is_positive)
  s = jnp.asarray(scores)
  pos = jnp.asarray(is_positive).astype(jnp.float32)
  sorted_s = jnp.sort(s)
  ranks = 0.5 * (jnp.searchsorted(sorted_s, s, side="left")
                 + jnp.searchsorted(sorted_s, s, side="right") + 1)
  n_pos = jnp.sum(pos)
  n_neg = s.shape[0] - n_pos
  return (jnp.sum(ranks * pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: ArrayLike, is_positive: ArrayLike) -> Array:
  """Area under the precision-recall curve, `sum_k (R_k - R_{k-1}) P_k` over thresholds.

  Thresholds are the distinct scores (tied scores enter together), as scikit-learn's
  `average_precision_score(is_positive, scores)`.
  """
  _check_detection(scores, is_positive)
  s = jnp.asarray(scores)
  pos = jnp.asarray(is_positive).astype(jnp.float32)
  order = jnp.argsort(-s)
  s_desc, pos_desc = s[order], pos[order]
  tp = jnp.cumsum(pos_desc)
  n = jnp.arange(1, s.shape[0] + 1)
  last = jnp.concatenate([s_desc[1:] != s_desc[:-1], jnp.array([True])])
  tp_at = jnp.where(last, tp, 0.0)
  prev_tp = jnp.concatenate([jnp.zeros(1), jax.lax.cummax(tp_at)[:-1]])
  precision = tp / n
  gain = jnp.where(last, tp - prev_tp, 0.0)
  return jnp.sum(gain * precision) / jnp.sum(pos)


def detection_metrics(in_scores: ArrayLike, out_scores: ArrayLike) -> dict[str, Array]:
  """AUROC, AUPR-in and AUPR-out for separating anomalies by a score (higher = anomalous).

  AUROC and AUPR-out treat the out-of-distribution examples as positives, AUPR-in the
  in-distribution ones (with the negated score), as in Table 7.II.
  """
  _checks.check_floating("in_scores", in_scores)
  _checks.check_floating("out_scores", out_scores)
  _checks.check_rank("in_scores", in_scores, 1)
  _checks.check_rank("out_scores", out_scores, 1)
  _checks.check_nonempty("in_scores", in_scores)
  _checks.check_nonempty("out_scores", out_scores)
  s = jnp.concatenate([jnp.asarray(in_scores), jnp.asarray(out_scores)])
  is_out = np.concatenate([np.zeros(np.shape(in_scores)[0], bool),
                           np.ones(np.shape(out_scores)[0], bool)])
  return {"auroc": auroc(s, is_out), "aupr_in": average_precision(-s, ~is_out),
          "aupr_out": average_precision(s, is_out)}
