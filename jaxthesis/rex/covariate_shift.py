"""Colored MNIST with covariate shift: class, digit and colour imbalance (thesis 5.4.1).

Each variant adds a shift in P(X) to the interventional shift of Colored MNIST. With
shift level p ∈ [0, 1] (p = 1: no imbalance; p = 0: disjoint supports), training domain
1 has imbalance rate `p' = p/(1+p)`, domain 2 has `p' = 1/(1+p)` and the test domain
`p' = 0.5` (Fig. 5.4, Figs. 11.5-11.7):

* ``class``: keep each class-0 example (digits 5-9) with probability p' and each
  class-1 example (digits 0-4) with probability 1 - p', before label noise;
* ``digit``: digits 0 and 5 removed; keep {1, 2, 6, 7} with probability p' and
  {3, 4, 8, 9} with probability 1 - p' (a shift in shape only, P(Y) balanced);
* ``color``: four channels [R1, R2, G1, G2]; a red digit goes in R1 with probability p'
  (else R2), a green digit in G1 with probability 1 - p' (else G2), as the issue that
  specified this module reads. A shift in the colour feature only; the grayscale model
  sums the four channels.
* ``color-thesis``: the same four channels with the thesis's wording of 5.4.1,
  p = P(R1 | Red) = P(G1 | Green): green goes in G1 with probability p' (else G2).
  The two readings differ only in which green channel carries the rate; both shift
  P(X) in the colour feature alone.

Colour 0 (the first block of `colored_mnist.color_digits`) is called red, colour 1 green.
Label noise and colour flips are those of standard Colored MNIST.

Subsampling (class and digit variants) is part of building the dataset, done eagerly
once with an explicit key: kept examples are moved to the front of each domain and the
domains padded to a common size with a 0/1 mask, so that every shift level stacks into
one array (`jaxthesis.sweeps.stack_data`) and one compiled program trains them all.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.rex import colored_mnist
from jaxthesis.rex.colored_mnist import NUM_PIXELS, ColoredMNIST
from jaxthesis.typing import Array, PRNGKey

VARIANTS = ("class", "digit", "color", "color-thesis")
COLOR_VARIANTS = ("color", "color-thesis")
SHIFT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
TEST_IMBALANCE = 0.5
# Digit groups of the digit-imbalance variant: kept with probability p', 1 - p', never.
DIGIT_GROUP_RATE = (1, 2, 6, 7)
DIGIT_GROUP_COMPLEMENT = (3, 4, 8, 9)
DIGITS_REMOVED = (0, 5)


class ShiftedCMNIST(NamedTuple):
  """Digits of every domain after subsampling, before label noise and colouring.

  `train_*` are stacked `[m, n, ...]` with a validity mask; `*_channel_rate` is the
  p' of the colour-imbalance variant (stored for every variant, used only by ``color``).
  """
  train_pixels: Array        # f32[m, n, 196]
  train_digits: Array        # i32[m, n]
  train_mask: Array          # f32[m, n]
  train_color_flip: Array    # f32[m]
  train_channel_rate: Array  # f32[m]
  test_pixels: Array         # f32[n_test, 196]
  test_digits: Array         # i32[n_test]
  test_mask: Array           # f32[n_test]
  test_color_flip: Array     # f32[]
  test_channel_rate: Array   # f32[]
  label_noise: Array         # f32[]


def _check_variant(variant: str) -> None:
  _checks.check_choice("variant", variant, VARIANTS)


def domain_imbalances(p: float) -> tuple[float, float]:
  """The training domains' imbalance rates `(p/(1+p), 1/(1+p))` for shift level p."""
  if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
    raise TypeError(f"p must be a number, got {type(p).__name__}")
  if not 0.0 <= float(p) <= 1.0:
    raise ValueError(f"p must lie in [0, 1] (1: no shift, 0: disjoint supports), got {p}")
  p = float(p)
  return p / (1.0 + p), 1.0 / (1.0 + p)


def input_dim(variant: str) -> int:
  """Width of the model input: 2·196 (two colours) or 4·196 (colour variant)."""
  _check_variant(variant)
  return (4 if variant in COLOR_VARIANTS else 2) * NUM_PIXELS


def keep_probability(variant: str, digits: Array, rate: Array) -> Array:
  """Probability that an example of each digit is kept in a domain of imbalance `rate`.

  Args:
    variant: one of `VARIANTS` (the colour variants keep everything).
    digits: `i32[n]` digit classes 0-9.
    rate: the domain's p'.

  Returns:
    `f32[n]`.
  """
  _check_variant(variant)
  _checks.check_rank("digits", digits, 1)
  _checks.check_scalar("rate", rate)
  if _checks.is_concrete(rate) and not 0.0 <= float(rate) <= 1.0:
    raise ValueError(f"rate must be a probability in [0, 1], got {float(rate)}")
  digits = jnp.asarray(digits)
  rate = jnp.asarray(rate, jnp.float32)
  if variant == "class":
    return jnp.where(digits >= 5, rate, 1.0 - rate)
  if variant == "digit":
    in_group = jnp.isin(digits, jnp.array(DIGIT_GROUP_RATE))
    removed = jnp.isin(digits, jnp.array(DIGITS_REMOVED))
    return jnp.where(removed, 0.0, jnp.where(in_group, rate, 1.0 - rate))
  return jnp.ones(digits.shape, jnp.float32)


def imbalance_keep_mask(key: PRNGKey, variant: str, digits: Array, rate: Array) -> Array:
  """Independent Bernoulli(keep_probability) draws: `bool[n]`, which examples stay."""
  prob = keep_probability(variant, digits, rate)
  return jax.random.uniform(key, prob.shape) < prob


def color_four_channels(key: PRNGKey, pixels: Array, digits: Array, color_flip: Array,
                        channel_rate: Array,
                        label_noise: Array = colored_mnist.LABEL_NOISE,
                        green_rate: str = "color") -> tuple[Array, Array]:
  """Noisy labels, colours and colour channels of the colour-imbalance variants.

  The label is `digit < 5` flipped with probability `label_noise`; the colour is the
  label flipped with probability `color_flip`; then, with one `b ~ Bernoulli(p')` per
  example, red (colour 0) goes to R1 if b else R2. Green (colour 1) goes to G1 if not b
  else G2 under ``green_rate="color"`` (`P(R1 | red) = p'`, `P(G1 | green) = 1 - p'`),
  and to G1 if b under ``"color-thesis"`` (`P(R1 | red) = P(G1 | green) = p'`, 5.4.1).

  Args:
    key: PRNG key.
    pixels: `f32[n, 196]`.
    digits: `i32[n]`.
    color_flip: probability that the colour disagrees with the noisy label.
    channel_rate: p'.
    label_noise: probability that the label disagrees with `digit < 5`.
    green_rate: ``"color"`` or ``"color-thesis"``: which reading of the rate (above).

  Returns:
    `(x f32[n, 4·196] channel-major [R1, R2, G1, G2], y f32[n])`.
  """
  _checks.check_rank("pixels", pixels, 2)
  _checks.check_rank("digits", digits, 1)
  _checks.check_choice("green_rate", green_rate, COLOR_VARIANTS)
  if _checks.shape_of(pixels)[0] != _checks.shape_of(digits)[0]:
    raise ValueError(f"digits must have {_checks.shape_of(pixels)[0]} entries (one per row "
                     f"of pixels), got {_checks.shape_of(digits)[0]}")
  noise_key, color_key, channel_key = jax.random.split(key, 3)
  n = digits.shape[0]
  labels = (digits < 5).astype(jnp.float32)
  labels = jnp.abs(labels - jax.random.bernoulli(noise_key, label_noise, (n,)))
  colors = jnp.abs(labels - jax.random.bernoulli(color_key, color_flip, (n,)))
  first = jax.random.bernoulli(channel_key, channel_rate, (n,))
  red, green = colors == 0, colors == 1
  green_first = ~first if green_rate == "color" else first
  channels = [red & first, red & ~first, green & green_first, green & ~green_first]
  x = jnp.concatenate([pixels * c[:, None] for c in channels], axis=-1)
  return x, labels


def _compact(keep: np.ndarray, size: int) -> np.ndarray:
  """Indices putting kept examples first (stable), padded/truncated to `size`."""
  order = np.argsort(~keep, kind="stable")
  if size > len(order):
    order = np.concatenate([order, np.zeros(size - len(order), order.dtype)])
  return order[:size]


def make_shifted_cmnist(key: PRNGKey, data: ColoredMNIST, variant: str, p: float, *,
                        train_size: Optional[int] = None,
                        test_size: Optional[int] = None) -> ShiftedCMNIST:
  """Builds one shift level of one variant from the standard two-domain Colored MNIST.

  Runs eagerly (the kept counts are data-dependent). Kept examples are compacted to the
  front of each domain and padded to `train_size` / `test_size` (default: the largest
  kept count) with mask 0.

  Args:
    key: PRNG key for the subsampling draws (one fold per domain).
    data: `colored_mnist.make_colored_mnist(...)` with two training domains.
    variant: one of `VARIANTS`.
    p: shift level in [0, 1].
    train_size: padded size of each training domain.
    test_size: padded size of the test domain.
  """
  _check_variant(variant)
  if not isinstance(data, ColoredMNIST):
    raise TypeError(f"data must be a colored_mnist.ColoredMNIST, got {type(data).__name__}")
  m = data.train_digits.shape[0]
  if m != 2:
    raise ValueError(f"data must have 2 training domains (rates p/(1+p) and 1/(1+p)), got {m}")
  rates = domain_imbalances(p)
  keep_rates = rates if variant not in COLOR_VARIANTS else (1.0, 1.0)
  train_keep = np.stack([
      np.asarray(imbalance_keep_mask(jax.random.fold_in(key, e), variant,
                                     data.train_digits[e], keep_rates[e]))
      & (np.asarray(data.train_mask[e]) > 0) for e in range(m)])
  test_keep = np.asarray(imbalance_keep_mask(
      jax.random.fold_in(key, m), variant, data.test_digits,
      TEST_IMBALANCE if variant not in COLOR_VARIANTS else 1.0))
  train_size = int(train_keep.sum(1).max()) if train_size is None else train_size
  test_size = int(test_keep.sum()) if test_size is None else test_size
  for name, size, need in (("train_size", train_size, int(train_keep.sum(1).max())),
                           ("test_size", test_size, int(test_keep.sum()))):
    if not isinstance(size, (int, np.integer)) or size < need:
      raise ValueError(f"{name} must be an int >= the kept count {need}, got {size!r}")
  train_order = np.stack([_compact(train_keep[e], train_size) for e in range(m)])
  test_order = _compact(test_keep, test_size)
  take = lambda a, idx: np.take_along_axis(np.asarray(a), idx, axis=1)
  train_pixels = np.stack([np.asarray(data.train_pixels[e])[train_order[e]] for e in range(m)])
  train_mask = (np.arange(train_size)[None, :] < train_keep.sum(1)[:, None]).astype(np.float32)
  test_mask = (np.arange(test_size) < test_keep.sum()).astype(np.float32)
  return ShiftedCMNIST(
      train_pixels=jnp.asarray(train_pixels),
      train_digits=jnp.asarray(take(data.train_digits, train_order)),
      train_mask=jnp.asarray(train_mask),
      train_color_flip=jnp.asarray(data.train_color_flip, jnp.float32),
      train_channel_rate=jnp.asarray(rates, jnp.float32),
      test_pixels=jnp.asarray(np.asarray(data.test_pixels)[test_order]),
      test_digits=jnp.asarray(np.asarray(data.test_digits)[test_order]),
      test_mask=jnp.asarray(test_mask),
      test_color_flip=jnp.asarray(data.test_color_flip, jnp.float32),
      test_channel_rate=jnp.asarray(TEST_IMBALANCE, jnp.float32),
      label_noise=jnp.asarray(data.label_noise, jnp.float32))


def make_shift_levels(key: PRNGKey, data: ColoredMNIST, variant: str,
                      levels: Sequence[float] = SHIFT_LEVELS) -> list[ShiftedCMNIST]:
  """`make_shifted_cmnist` for every level, padded to one common size (stackable)."""
  if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or not levels:
    raise ValueError(f"levels must be a non-empty sequence of shift levels, got {levels!r}")
  keys = [jax.random.fold_in(key, i) for i in range(len(levels))]
  unpadded = [make_shifted_cmnist(k, data, variant, p) for k, p in zip(keys, levels)]
  train_size = max(d.train_mask.shape[1] for d in unpadded)
  test_size = max(d.test_mask.shape[0] for d in unpadded)
  return [make_shifted_cmnist(k, data, variant, p, train_size=train_size, test_size=test_size)
          for k, p in zip(keys, levels)]


def _color(variant: str, key: PRNGKey, pixels, digits, color_flip, channel_rate, label_noise):
  if variant in COLOR_VARIANTS:
    return color_four_channels(key, pixels, digits, color_flip, channel_rate, label_noise,
                               green_rate=variant)
  return colored_mnist.color_digits(key, pixels, digits, color_flip, label_noise)


def _color_train(variant: str, key: PRNGKey, data: ShiftedCMNIST) -> tuple[Array, Array]:
  keys = jax.random.split(key, data.train_digits.shape[0])
  color = lambda k, px, dg, flip, rate: _color(variant, k, px, dg, flip, rate, data.label_noise)
  return jax.vmap(color)(keys, data.train_pixels, data.train_digits, data.train_color_flip,
                         data.train_channel_rate)


def train_sampler(variant: str) -> Callable[[PRNGKey, ShiftedCMNIST], tuple[Array, Array, Array]]:
  """A `jaxthesis.rex.train.DomainSampler`: `(key, data) -> (x [m, n, d], y [m, n], mask)`."""
  _check_variant(variant)

  def sample(key: PRNGKey, data: ShiftedCMNIST):
    x, y = _color_train(variant, key, data)
    return x, y, data.train_mask

  return sample


def eval_sampler(variant: str) -> Callable[[PRNGKey, ShiftedCMNIST], dict]:
  """A `jaxthesis.rex.train.EvalSampler`: the fixed draw of every training domain
  (pooled as ``train`` and one by one as ``train_e``) and the test domain (p' = 0.5)."""
  _check_variant(variant)

  def sample(key: PRNGKey, data: ShiftedCMNIST):
    x, y = _color_train(variant, key, data)
    m, n = y.shape
    sets = {"train": (x.reshape(m * n, -1), y.reshape(m * n), data.train_mask.reshape(m * n))}
    for e in range(m):
      sets[f"train_{e}"] = (x[e], y[e], data.train_mask[e])
    x_test, y_test = _color(variant, jax.random.fold_in(key, 1), data.test_pixels,
                            data.test_digits, data.test_color_flip, data.test_channel_rate,
                            data.label_noise)
    sets["test"] = (x_test, y_test, data.test_mask)
    return sets

  return sample
