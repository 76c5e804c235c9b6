"""Noise data sets of thesis chapter 3 (3.2): randY, randX and unique-class labels.

Following Zhang et al. (thesis 3.2), a fraction q of the training set has either its labels
replaced by uniform random labels (*randY*) or its inputs replaced by i.i.d. Gaussian noise
with the data set's per-pixel mean and variance (*randX*). Every example is chosen
independently with probability q, so the number corrupted is Binomial(N, q); the returned
`corrupted` mask says which ones were, so per-example statistics can be split by it.

All functions are pure, take an explicit PRNG key and may be jitted (q may be traced, so
noise levels can be a vmap axis).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike, PRNGKey


class Corrupted(NamedTuple):
  """A (partly) corrupted data set."""
  inputs: Array     # f32[N, ...]
  labels: Array     # i32[N]
  corrupted: Array  # bool[N]: the example was drawn for replacement


def _check_fraction(name: str, q) -> None:
  if np.ndim(q) != 0:
    raise ValueError(f"{name} must be a scalar fraction in [0, 1], got shape {np.shape(q)}")
  if _checks.is_concrete(q):
    value = float(np.asarray(q))
    if not 0.0 <= value <= 1.0:  # also rejects nan
      raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _check_label_range(labels, num_classes: int) -> None:
  _checks.check_below("labels", labels, num_classes, "class labels", upper_name="num_classes")


def _check_labels(labels) -> None:
  _checks.check_rank("labels", labels, 1)
  _checks.check_nonempty("labels", labels)
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    raise TypeError(f"labels must be an integer array, got dtype {jnp.result_type(labels)}")


def random_labels(key: PRNGKey, labels: ArrayLike, q: ArrayLike, num_classes: int
                  ) -> tuple[Array, Array]:
  """randY: each label is replaced, with probability q, by a uniform draw from the classes.

  A replaced label may by chance equal the original (as in Zhang et al.); `corrupted` marks
  the drawn examples, not only the changed ones.

  Args:
    key: PRNG key.
    labels: int[N].
    q: fraction in [0, 1] (scalar; may be traced).
    num_classes: K; new labels are uniform on {0, ..., K-1}.

  Returns:
    `(labels i32[N], corrupted bool[N])`.
  """
  _check_labels(labels)
  _check_fraction("q", q)
  _checks.check_positive_int("num_classes", num_classes)
  _check_label_range(labels, num_classes)
  labels = jnp.asarray(labels, jnp.int32)
  pick_key, label_key = jax.random.split(key)
  corrupted = jax.random.uniform(pick_key, labels.shape) < q
  noise = jax.random.randint(label_key, labels.shape, 0, num_classes, jnp.int32)
  return jnp.where(corrupted, noise, labels), corrupted


def random_inputs(key: PRNGKey, inputs: ArrayLike, q: ArrayLike, *,
                  mean: Optional[ArrayLike] = None, std: Optional[ArrayLike] = None
                  ) -> tuple[Array, Array]:
  """randX: each input is replaced, with probability q, by Gaussian noise.

  The noise is `mean + std · ε`, ε ~ N(0, I), with the per-pixel mean and standard
  deviation of `inputs` (thesis 3.2: "i.i.d. Gaussian noise matching the real dataset's
  mean and variance") unless given.

  Args:
    key: PRNG key.
    inputs: f32[N, ...].
    q: fraction in [0, 1] (scalar; may be traced).
    mean, std: optional per-pixel statistics of shape `inputs.shape[1:]` (or scalars).

  Returns:
    `(inputs f32[N, ...], corrupted bool[N])`.
  """
  _checks.check_floating("inputs", inputs)
  _checks.check_rank("inputs", inputs, (2, 3, 4))
  _checks.check_nonempty("inputs", inputs)
  _check_fraction("q", q)
  pixel_shape = np.shape(inputs)[1:]
  for name, value in (("mean", mean), ("std", std)):
    if value is not None and np.ndim(value) and np.shape(value) != pixel_shape:
      raise ValueError(f"{name} must be a scalar or have the pixel shape {pixel_shape}, got "
                       f"{np.shape(value)}")
  if std is not None:
    _checks.check_nonnegative("std", std)
  inputs = jnp.asarray(inputs)
  mean = jnp.mean(inputs, axis=0) if mean is None else jnp.asarray(mean, inputs.dtype)
  std = jnp.std(inputs, axis=0) if std is None else jnp.asarray(std, inputs.dtype)
  pick_key, noise_key = jax.random.split(key)
  n = inputs.shape[0]
  corrupted = jax.random.uniform(pick_key, (n,)) < q
  noise = mean + std * jax.random.normal(noise_key, inputs.shape, inputs.dtype)
  where = corrupted.reshape((n,) + (1,) * (inputs.ndim - 1))
  return jnp.where(where, noise, inputs), corrupted


def corrupt(key: PRNGKey, inputs: ArrayLike, labels: ArrayLike, kind: str, q: ArrayLike,
            num_classes: int) -> Corrupted:
  """randX (`kind='inputs'`), randY (`kind='labels'`) or clean (`kind='none'`) data.

  Returns:
    `Corrupted(inputs, labels, corrupted)`.
  """
  _checks.check_choice("kind", kind, CORRUPTIONS)
  _checks.check_floating("inputs", inputs)
  _checks.check_rank("inputs", inputs, (2, 3, 4))
  _check_labels(labels)
  _checks.check_positive_int("num_classes", num_classes)
  _check_label_range(labels, num_classes)
  if np.shape(inputs)[:1] != np.shape(labels):
    raise ValueError(f"labels must have one entry per input ({np.shape(inputs)[0]}), got "
                     f"shape {np.shape(labels)}")
  if kind == "labels":
    new_labels, mask = random_labels(key, labels, q, num_classes)
    return Corrupted(jnp.asarray(inputs), new_labels, mask)
  if kind == "inputs":
    new_inputs, mask = random_inputs(key, inputs, q)
    return Corrupted(new_inputs, jnp.asarray(labels, jnp.int32), mask)
  _check_fraction("q", q)
  return Corrupted(jnp.asarray(inputs), jnp.asarray(labels, jnp.int32),
                   jnp.zeros(np.shape(labels), bool))


CORRUPTIONS = ("none", "inputs", "labels")


def unique_class_labels(num_examples: int) -> Array:
  """Every example its own class (Fig. 3.3, right): labels `0, ..., N-1`."""
  _checks.check_positive_int("num_examples", num_examples)
  return jnp.arange(num_examples, dtype=jnp.int32)


def downscale(images: ArrayLike, factor: int = 2) -> Array:
  """Average-pools `[N, H, W]` images by `factor` (28×28 MNIST → 14×14 for Figs. 3.3-3.4)."""
  _checks.check_rank("images", images, 3)
  _checks.check_positive_int("factor", factor)
  n, h, w = np.shape(images)
  if h % factor or w % factor:
    raise ValueError(f"images of size {h}×{w} are not divisible by factor {factor}")
  x = jnp.asarray(images, jnp.float32).reshape(n, h // factor, factor, w // factor, factor)
  return x.mean(axis=(2, 4))


def to_unit_range(images: ArrayLike) -> Array:
  """uint8 pixels in [0, 255] as float32 in [0, 1]."""
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise TypeError(f"images must be uint8 pixels, got dtype {images.dtype}")
  return jnp.asarray(images, jnp.float32) / 255.0
