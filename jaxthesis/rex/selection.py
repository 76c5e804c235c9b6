"""Model selection the DomainBed way, on Colored MNIST (thesis 4.3, 5.4.3).

Gulrajani and Lopez-Paz (2021) make the selection rule part of the method:

* **training-domain validation**: hold out 20 % of every training domain; pick the
  hyperparameters and the checkpoint with the best mean held-out accuracy;
* **leave-one-domain-out**: for each training domain, train on the others and score on
  it; pick the hyperparameters with the best mean left-out accuracy, then report the
  model trained on all training domains (last checkpoint);
* **oracle** (test-domain validation): pick by accuracy on a 20 % split of the *test*
  domain, last checkpoint only. Not a legitimate method (thesis 4.3, 5.4.3): it reads the
  test distribution; it bounds what tuning could achieve.

Reported accuracy is always on the test domain's other 80 %. The rules are pure array
functions over `[configurations, trials, checkpoints]`; the split data and samplers for
Colored MNIST are here too.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.rex import colored_mnist
from jaxthesis.rex.colored_mnist import ColoredMNIST
from jaxthesis.typing import Array, PRNGKey

HOLDOUT_FRACTION = 0.2
RULES = ("training_domain", "leave_one_domain_out", "oracle")


class SplitCMNIST(NamedTuple):
  """Training domains (80 % splits), validation domains and a split test domain."""
  train_pixels: Array      # f32[k, n, 196]
  train_digits: Array      # i32[k, n]
  train_mask: Array        # f32[k, n]: the examples trained on
  train_color_flip: Array  # f32[k]
  val_pixels: Array        # f32[v, n, 196]
  val_digits: Array        # i32[v, n]
  val_mask: Array          # f32[v, n]: the examples scored for selection
  val_color_flip: Array    # f32[v]
  test_pixels: Array       # f32[n_test, 196]
  test_digits: Array       # i32[n_test]
  test_in_mask: Array      # f32[n_test]: reported (80 %)
  test_out_mask: Array     # f32[n_test]: the oracle's validation split (20 %)
  test_color_flip: Array   # f32[]
  label_noise: Array       # f32[]


def holdout_masks(key: PRNGKey, mask: Array, fraction: float = HOLDOUT_FRACTION):
  """Splits the valid entries of each row of `mask` into `(in, out)` 0/1 masks.

  Exactly `round(fraction · count)` valid entries of each row go out, chosen uniformly.

  Args:
    key: PRNG key (one fold per row).
    mask: `f32[m, n]` or `f32[n]` 0/1 validity mask.
    fraction: share held out, in [0, 1).
  """
  _checks.check_rank("mask", mask, (1, 2))
  if not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction must be a number in [0, 1), got {fraction!r}")
  mask = np.asarray(mask, np.float32)
  rows = mask[None] if mask.ndim == 1 else mask
  out = np.zeros_like(rows)
  for e, row in enumerate(rows):  # eager dataset construction, m rows
    valid = np.flatnonzero(row > 0)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(key, e), len(valid)))
    out[e, valid[order[:int(round(fraction * len(valid)))]]] = 1.0
  inside = rows * (1.0 - out)
  if mask.ndim == 1:
    return jnp.asarray(inside[0]), jnp.asarray(out[0])
  return jnp.asarray(inside), jnp.asarray(out)


def split_cmnist(key: PRNGKey, data: ColoredMNIST,
                 fraction: float = HOLDOUT_FRACTION) -> SplitCMNIST:
  """Training domains minus a held-out `fraction` each (which become the validation
  domains), and the test domain split into reported / oracle parts."""
  if not isinstance(data, ColoredMNIST):
    raise TypeError(f"data must be a colored_mnist.ColoredMNIST, got {type(data).__name__}")
  train_key, test_key = jax.random.split(key)
  train_in, train_out = holdout_masks(train_key, data.train_mask, fraction)
  test_in, test_out = holdout_masks(test_key, jnp.ones(data.test_digits.shape), fraction)
  return SplitCMNIST(
      train_pixels=data.train_pixels, train_digits=data.train_digits, train_mask=train_in,
      train_color_flip=data.train_color_flip,
      val_pixels=data.train_pixels, val_digits=data.train_digits, val_mask=train_out,
      val_color_flip=data.train_color_flip,
      test_pixels=data.test_pixels, test_digits=data.test_digits, test_in_mask=test_in,
      test_out_mask=test_out, test_color_flip=data.test_color_flip,
      label_noise=data.label_noise)


def leave_one_out(split: SplitCMNIST, left_out: int) -> SplitCMNIST:
  """Trains on the 80 % splits of every training domain but `left_out`, which becomes
  the only validation domain, scored on all of its examples."""
  m = split.train_digits.shape[0]
  if m < 2:
    raise ValueError(f"leave-one-domain-out needs >= 2 training domains, got {m}")
  if not isinstance(left_out, (int, np.integer)) or not 0 <= left_out < m:
    raise ValueError(f"left_out must be an int in [0, {m}), got {left_out!r}")
  keep = np.array([e for e in range(m) if e != left_out])
  full = split.train_mask + split.val_mask
  return split._replace(
      train_pixels=split.train_pixels[keep], train_digits=split.train_digits[keep],
      train_mask=split.train_mask[keep], train_color_flip=split.train_color_flip[keep],
      val_pixels=split.train_pixels[left_out:left_out + 1],
      val_digits=split.train_digits[left_out:left_out + 1],
      val_mask=full[left_out:left_out + 1],
      val_color_flip=split.train_color_flip[left_out:left_out + 1])


def _color_stack(key: PRNGKey, pixels, digits, flips, label_noise):
  keys = jax.random.split(key, digits.shape[0])
  return jax.vmap(colored_mnist.color_digits, in_axes=(0, 0, 0, 0, None))(
      keys, pixels, digits, flips, label_noise)


def sample_train_domains(key: PRNGKey, data: SplitCMNIST):
  """A `train.DomainSampler`: the training splits, coloured with `key`."""
  x, y = _color_stack(key, data.train_pixels, data.train_digits, data.train_color_flip,
                      data.label_noise)
  return x, y, data.train_mask


def sample_eval_sets(key: PRNGKey, data: SplitCMNIST) -> dict:
  """A `train.EvalSampler`: ``train`` (pooled training splits, the data key's draw, as
  trained on under fixed noise), ``val_e`` per validation domain, ``test_in``, ``test_out``."""
  x, y = _color_stack(key, data.train_pixels, data.train_digits, data.train_color_flip,
                      data.label_noise)
  k, n = y.shape
  sets = {"train": (x.reshape(k * n, -1), y.reshape(k * n), data.train_mask.reshape(k * n))}
  # Held-out examples are other digits than the training split, so a fresh draw for the
  # validation domains is as good as the training draw; fold_in keeps it independent.
  xv, yv = _color_stack(jax.random.fold_in(key, 2), data.val_pixels, data.val_digits,
                        data.val_color_flip, data.label_noise)
  for e in range(yv.shape[0]):
    sets[f"val_{e}"] = (xv[e], yv[e], data.val_mask[e])
  xt, yt = colored_mnist.color_digits(jax.random.fold_in(key, 1), data.test_pixels,
                                      data.test_digits, data.test_color_flip, data.label_noise)
  sets["test_in"] = (xt, yt, data.test_in_mask)
  sets["test_out"] = (xt, yt, data.test_out_mask)
  return sets


# ------------------------------------------------------------------------------ rules


class Selection(NamedTuple):
  """What a rule picked, per trial."""
  accuracy: np.ndarray    # [T] reported (test-domain) accuracy of the pick
  config: np.ndarray      # [T] index of the configuration
  checkpoint: np.ndarray  # [T] index of the checkpoint


def select_best(score, report) -> Selection:
  """Per trial, the (configuration, checkpoint) maximizing `score`; `report` there.

  Args:
    score: `[C, T]` or `[C, T, K]` selection scores (C configurations, T trials,
      K checkpoints). NaN scores are never picked.
    report: same shape: the accuracy to report for each candidate.
  """
  score, report = np.asarray(score, np.float64), np.asarray(report, np.float64)
  if score.ndim == 2:
    score, report = score[..., None], report[..., None]
  if score.ndim != 3:
    raise ValueError(f"score must be [C, T] or [C, T, K], got shape {score.shape}")
  if report.shape != score.shape:
    raise ValueError(f"report must have the shape of score {score.shape}, got {report.shape}")
  c, t, k = score.shape
  flat = np.moveaxis(score, 1, 0).reshape(t, c * k)
  flat = np.where(np.isnan(flat), -np.inf, flat)
  best = np.argmax(flat, axis=1)
  config, checkpoint = best // k, best % k
  return Selection(accuracy=report[config, np.arange(t), checkpoint], config=config,
                   checkpoint=checkpoint)


def training_domain_validation(val_acc, test_acc) -> Selection:
  """Pick configuration and checkpoint by mean held-out training-domain accuracy.

  Args:
    val_acc: `[C, T, K]` mean accuracy on the training domains' held-out splits.
    test_acc: `[C, T, K]` test-domain accuracy (reported split).
  """
  _checks.check_rank("val_acc", val_acc, 3)
  return select_best(val_acc, test_acc)


def oracle(test_out_acc, test_in_acc) -> Selection:
  """Pick the configuration by test-domain validation accuracy at the last checkpoint.

  Args:
    test_out_acc: `[C, T]` accuracy on the test domain's validation split (last checkpoint).
    test_in_acc: `[C, T]` accuracy on its reported split (last checkpoint).
  """
  _checks.check_rank("test_out_acc", test_out_acc, 2)
  return select_best(test_out_acc, test_in_acc)


def leave_one_domain_out(left_out_acc, test_acc) -> Selection:
  """Pick the configuration by mean left-out-domain accuracy; report the all-domain model.

  Args:
    left_out_acc: `[C, T]` accuracy on each left-out training domain, averaged over the
      choices of left-out domain (each from a model trained without it, last checkpoint).
    test_acc: `[C, T]` test accuracy of the model trained on all training domains.
  """
  _checks.check_rank("left_out_acc", left_out_acc, 2)
  return select_best(left_out_acc, test_acc)
