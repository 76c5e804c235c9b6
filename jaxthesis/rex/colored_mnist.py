"""Colored MNIST (thesis 5.4.1; the construction of Arjovsky et al., 2019).

Digits are downsampled to 14×14, labelled `digit < 5`, the label is flipped with
probability 0.25, and a colour is drawn that agrees with the (noisy) label except with a
per-domain probability `e` (0.2 and 0.1 in training, 0.9 at test). The image goes in the
colour's channel of two; the other channel is zero.

Everything here is a pure function of arrays: loading digits from disk is the
experiment's business.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, PRNGKey

LABEL_NOISE = 0.25
TRAIN_COLOR_FLIPS = (0.2, 0.1)
TEST_COLOR_FLIP = 0.9
NUM_PIXELS = 14 * 14
# How label noise and colours are drawn: once per restart (the paper) or every step.
NOISE_PROTOCOLS = ("fixed", "population")


class ColoredMNIST(NamedTuple):
  """Digits of every domain, before label noise and colouring.

  Training domains are stacked `[m, n, ...]` with a 0/1 mask for unequal sizes.
  """
  train_pixels: Array       # f32[m, n, 196], in [0, 1]
  train_digits: Array       # i32[m, n]
  train_mask: Array         # f32[m, n]
  train_color_flip: Array   # f32[m]
  test_pixels: Array        # f32[n_test, 196]
  test_digits: Array        # i32[n_test]
  test_color_flip: Array    # f32[]
  label_noise: Array        # f32[]


def downsample(images: np.ndarray) -> np.ndarray:
  """uint8[N, 28, 28] → f32[N, 196]: every second pixel, scaled to [0, 1]."""
  _checks.check_rank("images", images, 3)
  if np.shape(images)[1:] != (28, 28):
    raise ValueError(f"images must be [N, 28, 28], got {np.shape(images)}")
  return (np.asarray(images)[:, ::2, ::2].reshape(len(images), NUM_PIXELS) / 255.0).astype(np.float32)


def color_digits(key: PRNGKey, pixels: Array, digits: Array, color_flip: Array,
                 label_noise: Array = LABEL_NOISE) -> tuple[Array, Array]:
  """Draws noisy labels and colours for one domain.

  Args:
    key: PRNG key for the label-noise and colour-flip draws.
    pixels: `f32[n, 196]` downsampled digits.
    digits: `i32[n]` digit classes 0-9.
    color_flip: probability that the colour disagrees with the noisy label.
    label_noise: probability that the label disagrees with `digit < 5`.

  Returns:
    `(x f32[n, 2·196], y f32[n])`, channel-major: the first 196 inputs are channel 0.
  """
  noise_key, color_key = jax.random.split(key)
  n = digits.shape[0]
  labels = (digits < 5).astype(jnp.float32)
  labels = jnp.abs(labels - jax.random.bernoulli(noise_key, label_noise, (n,)))
  colors = jnp.abs(labels - jax.random.bernoulli(color_key, color_flip, (n,)))
  # Channel c keeps the digit when colour == c (the channel 1 - colour is zeroed). Built
  # as [n, 2, 196] and reshaped (channel-major), which XLA compiles to one loop writing x;
  # two masked channels concatenated were two loops and a copy, in every step of a
  # population-noise run.
  in_channel = colors[:, None] == jnp.arange(2, dtype=colors.dtype)  # [n, 2]
  x = pixels[:, None, :] * in_channel[:, :, None]
  return x.reshape(n, 2 * pixels.shape[-1]), labels


def color_domains(key: PRNGKey, data: ColoredMNIST) -> tuple[Array, Array]:
  """All training domains at once, one key per domain (vmapped)."""
  keys = jax.random.split(key, data.train_digits.shape[0])
  return jax.vmap(color_digits, in_axes=(0, 0, 0, 0, None))(
      keys, data.train_pixels, data.train_digits, data.train_color_flip, data.label_noise)


def to_grayscale(x: Array) -> Array:
  """Sums the colour channels: `f32[..., C·196] → f32[..., 196]` (no colour information)."""
  return x.reshape(x.shape[:-1] + (-1, NUM_PIXELS)).sum(axis=-2)


def make_colored_mnist(train_images: np.ndarray, train_labels: np.ndarray,
                       test_images: np.ndarray, test_labels: np.ndarray, *,
                       shuffle_key: Optional[PRNGKey] = None,
                       train_color_flips=TRAIN_COLOR_FLIPS,
                       test_color_flip: float = TEST_COLOR_FLIP,
                       label_noise: float = LABEL_NOISE) -> ColoredMNIST:
  """Builds the domains: the training pool (optionally shuffled) split round-robin.

  With two training domains this is the IRM protocol's even/odd split: with the full
  data, the pool is the first 50,000 training images and the test domain the last 10,000;
  with the built-in digits, the 4,000-example pool and the 1,000 test digits.
  """
  _checks.check_rank("train_images", train_images, 3)
  _checks.check_rank("test_images", test_images, 3)
  if len(train_images) != len(train_labels):
    raise ValueError(f"train_labels must have {len(train_images)} entries, got {len(train_labels)}")
  if len(test_images) != len(test_labels):
    raise ValueError(f"test_labels must have {len(test_images)} entries, got {len(test_labels)}")
  flips = np.asarray(train_color_flips, np.float32)
  _checks.check_rank("train_color_flips", flips, 1)
  m = flips.shape[0]
  if m < 1 or len(train_images) < m:
    raise ValueError(f"train_color_flips names {m} domains for {len(train_images)} images")
  for name, p in (("train_color_flips", flips), ("test_color_flip", test_color_flip),
                  ("label_noise", label_noise)):
    if np.any(np.asarray(p) < 0) or np.any(np.asarray(p) > 1):
      raise ValueError(f"{name} must be probabilities in [0, 1], got {p}")
  pixels = downsample(train_images)
  digits = np.asarray(train_labels, np.int32)
  if shuffle_key is not None:
    order = np.asarray(jax.random.permutation(shuffle_key, len(pixels)))
    pixels, digits = pixels[order], digits[order]
  n = len(pixels) // m
  # Round-robin: domain e gets examples e, e + m, e + 2m, ... (even/odd for m = 2).
  train_pixels = np.stack([pixels[e::m][:n] for e in range(m)])
  train_digits = np.stack([digits[e::m][:n] for e in range(m)])
  return ColoredMNIST(
      train_pixels=jnp.asarray(train_pixels),
      train_digits=jnp.asarray(train_digits),
      train_mask=jnp.ones(train_digits.shape, jnp.float32),
      train_color_flip=jnp.asarray(flips),
      test_pixels=jnp.asarray(downsample(test_images)),
      test_digits=jnp.asarray(np.asarray(test_labels, np.int32)),
      test_color_flip=jnp.asarray(test_color_flip, jnp.float32),
      label_noise=jnp.asarray(label_noise, jnp.float32))


def sample_train_domains(key: PRNGKey, data: ColoredMNIST) -> tuple[Array, Array, Array]:
  """A `DomainSampler` for `jaxthesis.rex.train`: `(x [m, n, 392], y [m, n], mask [m, n])`."""
  x, y = color_domains(key, data)
  return x, y, data.train_mask


def sample_eval_sets(key: PRNGKey, data: ColoredMNIST) -> dict[str, tuple[Array, ...]]:
  """An `EvalSampler`: one fixed draw of every training domain and of the test domain.

  Drawn from the restart's data key, so under the `fixed` protocol the training domains
  are exactly the data the model trains on.
  """
  x, y = color_domains(key, data)
  m, n = y.shape
  sets = {"train": (x.reshape(m * n, -1), y.reshape(m * n), data.train_mask.reshape(m * n))}
  for e in range(m):
    sets[f"train_{e}"] = (x[e], y[e], data.train_mask[e])
  sets["test"] = color_digits(jax.random.fold_in(key, 1), data.test_pixels, data.test_digits,
                              data.test_color_flip, data.label_noise)
  return sets
