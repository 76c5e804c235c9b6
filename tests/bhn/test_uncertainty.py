"""Scores, calibration and detection metrics against hand computations and scikit-learn."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import metrics as skm

from jaxthesis import bhn

# Two samples, two examples, three classes.
PROBS = np.array([[[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]],
                  [[0.5, 0.4, 0.1], [0.6, 0.1, 0.3]]], np.float32)


def _h(p):
  p = np.asarray(p, np.float64)
  return -np.sum(p * np.log(p), -1)


def test_scores_by_hand():
  mean = PROBS.mean(0)  # [[0.6, 0.3, 0.1], [0.4, 0.3, 0.3]]
  np.testing.assert_allclose(bhn.variation_ratio(PROBS), [0.4, 0.6], rtol=1e-6)
  np.testing.assert_allclose(bhn.predictive_entropy(PROBS), _h(mean), rtol=1e-5)
  np.testing.assert_allclose(bhn.bald(PROBS), _h(mean) - _h(PROBS).mean(0), rtol=1e-4)
  # mean std: population std over the 2 samples = |a - b| / 2 per class.
  np.testing.assert_allclose(bhn.mean_std(PROBS),
                             [np.mean([0.1, 0.1, 0.0]), np.mean([0.2, 0.2, 0.0])], rtol=1e-5)
  assert set(bhn.SCORES) == {"variation_ratio", "entropy", "bald", "mean_std"}
  for name in bhn.SCORES:  # a single confident sample is the least uncertain
    certain = np.array([[[0.98, 0.01, 0.01]]] * 2, np.float32)
    assert float(bhn.score(name, certain)[0]) <= float(bhn.score(name, PROBS[:, :1])[0])
  np.testing.assert_allclose(bhn.bald(np.repeat(PROBS[:1], 3, 0)), 0.0, atol=1e-6)


def test_acquisition_functions_and_selection():
  for name in bhn.SCORES:
    np.testing.assert_allclose(bhn.acquisition_scores(name, PROBS), bhn.SCORES[name](PROBS))
    idx = bhn.acquisition_index(name)
    np.testing.assert_allclose(bhn.scores_by_index(idx, jnp.asarray(PROBS), jax.random.PRNGKey(0)),
                               bhn.SCORES[name](PROBS), rtol=1e-5)
  r = bhn.acquisition_scores("random", PROBS, jax.random.PRNGKey(1))
  assert r.shape == (2,) and np.all((r >= 0) & (r < 1))
  chosen = bhn.select_top(jnp.array([0.1, 0.9, 0.5, 0.7]), jnp.array([True, False, True, True]), 2)
  assert sorted(np.asarray(chosen).tolist()) == [2, 3]


def test_calibration_metrics_by_hand():
  probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.55, 0.45], [0.2, 0.8]], np.float32)
  labels = np.array([0, 0, 0, 1])
  np.testing.assert_allclose(bhn.nll(probs, labels), -np.mean(np.log([0.9, 0.3, 0.55, 0.8])),
                             rtol=1e-5)
  brier = np.mean([0.01 + 0.01, 0.49 + 0.49, 0.2025 + 0.2025, 0.04 + 0.04])
  np.testing.assert_allclose(bhn.brier(probs, labels), brier, rtol=1e-5)
  # Confidences 0.9, 0.7, 0.55, 0.8 with 15 bins fall in bins 13, 10, 8, 11; correct:
  # yes, no, yes, yes. ECE = (|1-.9| + |0-.7| + |1-.55| + |1-.8|) / 4.
  np.testing.assert_allclose(bhn.expected_calibration_error(probs, labels),
                             (0.1 + 0.7 + 0.45 + 0.2) / 4, rtol=1e-5)
  rel = bhn.reliability(probs, labels)
  assert np.asarray(rel["count"]).sum() == 4
  assert np.flatnonzero(np.asarray(rel["count"])).tolist() == [8, 10, 11, 13]


def test_ece_against_a_loop_on_random_predictions():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(500, 4)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  labels = rng.integers(0, 4, 500)
  conf, pred = probs.max(1), probs.argmax(1)
  edges = np.linspace(0, 1, 16)
  ece = 0.0
  for lo, hi in zip(edges[:-1], edges[1:]):
    m = (conf > lo) & (conf <= hi)
    if m.any():
      ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
  np.testing.assert_allclose(bhn.expected_calibration_error(probs.astype(np.float32), labels),
                             ece, rtol=1e-4)


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_and_aupr_match_sklearn(ties):
  rng = np.random.default_rng(1)
  scores = rng.normal(size=300).astype(np.float32)
  if ties:
    scores = np.round(scores, 1)
  positive = rng.random(300) < 0.3
  scores = (scores + 0.8 * positive).astype(np.float32)
  np.testing.assert_allclose(bhn.auroc(scores, positive), skm.roc_auc_score(positive, scores),
                             rtol=1e-5)
  np.testing.assert_allclose(bhn.average_precision(scores, positive),
                             skm.average_precision_score(positive, scores), rtol=1e-5)
  d = bhn.detection_metrics(scores[~positive], scores[positive])
  np.testing.assert_allclose(d["auroc"], skm.roc_auc_score(positive, scores), rtol=1e-5)
  np.testing.assert_allclose(d["aupr_out"], skm.average_precision_score(positive, scores), rtol=1e-5)
  np.testing.assert_allclose(d["aupr_in"], skm.average_precision_score(~positive, -scores),
                             rtol=1e-5)


def test_predictive_and_sample_probabilities():
  logits = jnp.array([[[50.0, 0.0], [0.0, 0.0]]])
  p = bhn.sample_probabilities(logits)
  np.testing.assert_allclose(p[0, 0], [0.999 / 1.0, 0.001 / 1.0], rtol=1e-5)
  np.testing.assert_allclose(bhn.predictive(PROBS), PROBS.mean(0), rtol=1e-6)


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="probs"):
    bhn.bald(PROBS[0])
  with pytest.raises(ValueError, match="name"):
    bhn.score("margin", PROBS)
  with pytest.raises(ValueError, match="name"):
    bhn.acquisition_scores("coreset", PROBS)
  with pytest.raises(ValueError, match="key"):
    bhn.acquisition_scores("random", PROBS)
  with pytest.raises(ValueError, match="is_positive"):
    bhn.auroc(np.zeros(4, np.float32), np.zeros(4, bool))
  with pytest.raises(ValueError, match="labels"):
    bhn.nll(PROBS[0], np.array([0]))
  with pytest.raises(ValueError, match="num_bins"):
    bhn.expected_calibration_error(PROBS[0], np.array([0, 1]), num_bins=0)
  with pytest.raises(ValueError, match="k must"):
    bhn.select_top(jnp.zeros(3), jnp.ones(3, bool), 4)
