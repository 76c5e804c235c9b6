"""Covariate-shift Colored MNIST (thesis 5.4.1, Fig 5.4): imbalance rates and batching."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import sweeps
from jaxthesis.rex import colored_mnist, covariate_shift as cs, train


def _binomial_ok(kept: np.ndarray, rate: float, sigmas: float = 4.0) -> bool:
  """Is the kept fraction within `sigmas` binomial standard errors of `rate`?"""
  n = kept.size
  tol = sigmas * np.sqrt(max(rate * (1 - rate), 1e-12) / n)
  return abs(kept.mean() - rate) <= tol + 1e-12


def _synthetic_cmnist(key, n_train=60, n_test=40):
  """A tiny ColoredMNIST from random 'images' with random digits (no MNIST needed)."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  to_img = lambda k, n: np.asarray(jax.random.randint(k, (n, 28, 28), 0, 256), np.uint8)
  digits = lambda k, n: np.asarray(jax.random.randint(k, (n,), 0, 10))
  return colored_mnist.make_colored_mnist(to_img(k1, 2 * n_train), digits(k2, 2 * n_train),
                                          to_img(k3, n_test), digits(k4, n_test))


def test_domain_imbalances():
  np.testing.assert_allclose(cs.domain_imbalances(1.0), (0.5, 0.5))
  np.testing.assert_allclose(cs.domain_imbalances(0.25), (0.2, 0.8))
  np.testing.assert_allclose(cs.domain_imbalances(0.0), (0.0, 1.0))
  with pytest.raises(ValueError, match="p must lie"):
    cs.domain_imbalances(1.5)
  with pytest.raises(TypeError, match="p must be a number"):
    cs.domain_imbalances("0.1")


@pytest.mark.parametrize("rate", [0.1 / 1.1, 0.5, 1 / 1.3])
def test_class_imbalance_rates(rate):
  digits = jax.random.randint(jax.random.PRNGKey(0), (40_000,), 0, 10)
  keep = np.asarray(cs.imbalance_keep_mask(jax.random.PRNGKey(1), "class", digits, rate))
  d = np.asarray(digits)
  assert _binomial_ok(keep[d >= 5], rate)        # class 0 (digits 5-9) kept at p'
  assert _binomial_ok(keep[d < 5], 1 - rate)     # class 1 (digits 0-4) kept at 1 - p'


def test_digit_imbalance_rates():
  rate = 0.2 / 1.2
  digits = jax.random.randint(jax.random.PRNGKey(2), (50_000,), 0, 10)
  keep = np.asarray(cs.imbalance_keep_mask(jax.random.PRNGKey(3), "digit", digits, rate))
  d = np.asarray(digits)
  assert not keep[np.isin(d, (0, 5))].any()
  assert _binomial_ok(keep[np.isin(d, (1, 2, 6, 7))], rate)
  assert _binomial_ok(keep[np.isin(d, (3, 4, 8, 9))], 1 - rate)
  # P(Y) stays balanced: each kept group is half class 0, half class 1 in expectation.
  kept = d[keep]
  assert _binomial_ok(kept < 5, 0.5)


@pytest.mark.parametrize("green_rate", cs.COLOR_VARIANTS)
def test_color_imbalance_rates(green_rate):
  n, rate, flip = 40_000, 0.3 / 1.3, 0.2
  digits = jax.random.randint(jax.random.PRNGKey(4), (n,), 0, 10)
  pixels = jnp.ones((n, colored_mnist.NUM_PIXELS))
  x, y = cs.color_four_channels(jax.random.PRNGKey(5), pixels, digits, flip, rate,
                                green_rate=green_rate)
  blocks = np.asarray(x).reshape(n, 4, -1)[..., 0]      # [n, (R1, R2, G1, G2)]
  np.testing.assert_array_equal(blocks.sum(1), 1.0)     # exactly one channel carries the digit
  red, green = blocks[:, :2].sum(1) == 1, blocks[:, 2:].sum(1) == 1
  assert _binomial_ok(blocks[red, 0] == 1, rate)          # P(R1 | red) = p'
  # P(G1 | green) = 1 - p' (the reading) or p' (the thesis's, 5.4.1).
  assert _binomial_ok(blocks[green, 2] == 1, 1 - rate if green_rate == "color" else rate)
  y = np.asarray(y)
  color = green.astype(np.float32)                        # colour 1 = green
  assert _binomial_ok(color != y, flip)                   # colour flip
  assert _binomial_ok(y != (np.asarray(digits) < 5), colored_mnist.LABEL_NOISE)
  # The grayscale model sees no colour: the four channels sum to the digit.
  np.testing.assert_allclose(colored_mnist.to_grayscale(x), pixels)


@pytest.mark.parametrize("variant", cs.VARIANTS)
def test_shift_levels_stack_and_keep_the_right_digits(variant):
  data = _synthetic_cmnist(jax.random.PRNGKey(6))
  levels = cs.make_shift_levels(jax.random.PRNGKey(7), data, variant, (0.1, 1.0))
  stacked = sweeps.stack_data(levels)
  assert stacked.train_mask.shape[0] == 2
  for level, p in zip(levels, (0.1, 1.0)):
    mask, digits = np.asarray(level.train_mask), np.asarray(level.train_digits)
    # Kept examples come first: each mask row is ones then zeros.
    assert np.all(np.diff(mask, axis=1) <= 0)
    np.testing.assert_allclose(level.train_channel_rate, cs.domain_imbalances(p), rtol=1e-6)
    kept = digits[mask > 0]
    if variant == "digit":
      assert not np.isin(kept, (0, 5)).any()
      assert not np.isin(np.asarray(level.test_digits)[np.asarray(level.test_mask) > 0],
                         (0, 5)).any()
    if variant in cs.COLOR_VARIANTS:
      np.testing.assert_array_equal(mask.sum(1), 60)  # nothing removed
  x, y, mask = cs.train_sampler(variant)(jax.random.PRNGKey(8), levels[0])
  assert x.shape[-1] == cs.input_dim(variant)
  assert set(cs.eval_sampler(variant)(jax.random.PRNGKey(9), levels[0])) == {
      "train", "train_0", "train_1", "test"}


def test_class_imbalance_shifts_the_domains_in_opposite_directions():
  data = _synthetic_cmnist(jax.random.PRNGKey(10), n_train=3000, n_test=10)
  level = cs.make_shifted_cmnist(jax.random.PRNGKey(11), data, "class", 0.25)
  d, mask = np.asarray(level.train_digits), np.asarray(level.train_mask) > 0
  original = np.asarray(data.train_digits)
  for e, rate in enumerate(cs.domain_imbalances(0.25)):
    # Share of the domain's class-0 digits that survived: Binomial(n_class0, p') / n_class0.
    n_class0, kept_class0 = (original[e] >= 5).sum(), (d[e][mask[e]] >= 5).sum()
    assert _binomial_ok(np.arange(n_class0) < kept_class0, rate)


def test_make_shifted_cmnist_validates():
  data = _synthetic_cmnist(jax.random.PRNGKey(12))
  with pytest.raises(ValueError, match="variant"):
    cs.make_shifted_cmnist(jax.random.PRNGKey(0), data, "shape", 0.5)
  with pytest.raises(ValueError, match="train_size"):
    cs.make_shifted_cmnist(jax.random.PRNGKey(0), data, "color", 0.5, train_size=3)
  with pytest.raises(ValueError, match="green_rate"):
    cs.color_four_channels(jax.random.PRNGKey(0), jnp.ones((2, 196)), jnp.zeros(2, jnp.int32),
                           0.1, 0.5, green_rate="blue")
  with pytest.raises(TypeError, match="ColoredMNIST"):
    cs.make_shifted_cmnist(jax.random.PRNGKey(0), {"x": 1}, "class", 0.5)


def test_indexed_hparams_validates():
  hp = train.domain_hparams(2, learning_rate=1e-3, l2_weight=0.0)
  with pytest.raises(ValueError, match="data_index must lie"):
    sweeps.indexed_hparams(hp, np.array([0, 2]), 2)
  with pytest.raises(ValueError, match="data_index must be a 1-D integer"):
    sweeps.indexed_hparams(hp, np.array([0.0, 1.0]), 2)
  with pytest.raises(ValueError, match="restart axis"):
    sweeps.indexed_hparams(hp, np.array([0, 1, 1]), 2)
  with pytest.raises(ValueError, match="leaf shapes"):
    sweeps.stack_data([{"a": np.zeros(2)}, {"a": np.zeros(3)}])
