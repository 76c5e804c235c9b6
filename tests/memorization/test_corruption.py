"""randY / randX / unique-class data (thesis 3.2): rates, distributions, bad inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.memorization import corruption


def _binomial_ok(count, n, q, sigmas=4.0):
  return abs(count - n * q) <= sigmas * np.sqrt(n * q * (1 - q)) + 1e-9


@pytest.mark.parametrize("q", [0.0, 0.2, 0.8, 1.0])
def test_random_labels_rate_and_uniformity(q):
  n, k = 20000, 10
  labels = jnp.asarray(np.arange(n) % k)
  new, mask = corruption.random_labels(jax.random.PRNGKey(1), labels, q, k)
  new, mask = np.asarray(new), np.asarray(mask)
  assert _binomial_ok(mask.sum(), n, q)                 # Binomial(N, q) drawn examples
  np.testing.assert_array_equal(new[~mask], np.asarray(labels)[~mask])
  if mask.sum() > 1000:                                 # new labels uniform on the classes
    counts = np.bincount(new[mask], minlength=k)
    m = mask.sum()
    assert np.all(np.abs(counts - m / k) <= 4 * np.sqrt(m / k * (1 - 1 / k)))
    changed = (new != np.asarray(labels)).sum()         # a replaced label keeps its value w.p. 1/K
    assert _binomial_ok(changed, n, q * (1 - 1 / k))


def test_random_inputs_match_pixel_statistics():
  key = jax.random.PRNGKey(0)
  n = 4000
  base = jax.random.uniform(key, (n, 6, 5)) * jnp.linspace(0.1, 2.0, 30).reshape(6, 5)
  x, mask = corruption.random_inputs(jax.random.PRNGKey(3), base, 0.5)
  x, mask, base = map(np.asarray, (x, mask, base))
  assert _binomial_ok(mask.sum(), n, 0.5)
  np.testing.assert_array_equal(x[~mask], base[~mask])
  noise = x[mask]
  m = mask.sum()
  mean, std = base.mean(0), base.std(0)
  np.testing.assert_array_less(np.abs(noise.mean(0) - mean), 5 * std / np.sqrt(m))
  np.testing.assert_allclose(noise.std(0), std, rtol=0.1)


def test_corrupt_dispatch_and_determinism():
  x = jax.random.uniform(jax.random.PRNGKey(0), (50, 4, 4))
  y = jnp.arange(50) % 10
  a = corruption.corrupt(jax.random.PRNGKey(5), x, y, "labels", 0.5, 10)
  b = corruption.corrupt(jax.random.PRNGKey(5), x, y, "labels", 0.5, 10)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  np.testing.assert_array_equal(a.inputs, x)
  clean = corruption.corrupt(jax.random.PRNGKey(5), x, y, "none", 0.5, 10)
  assert not np.asarray(clean.corrupted).any()
  noisy = corruption.corrupt(jax.random.PRNGKey(5), x, y, "inputs", 1.0, 10)
  assert np.asarray(noisy.corrupted).all()
  np.testing.assert_array_equal(noisy.labels, y)


def test_fraction_is_a_vmap_axis():
  labels = jnp.zeros(5000, jnp.int32)
  qs = jnp.array([0.0, 0.25, 0.5, 1.0])
  f = jax.jit(jax.vmap(lambda q: corruption.random_labels(jax.random.PRNGKey(2), labels, q, 10)[1]))
  rates = np.asarray(f(qs)).sum(1)
  for q, count in zip(np.asarray(qs), rates):
    assert _binomial_ok(count, 5000, q)


@pytest.mark.parametrize("q", [-0.1, 1.5, float("nan")])
def test_bad_fraction_raises(q):
  with pytest.raises(ValueError, match="q must lie in"):
    corruption.random_labels(jax.random.PRNGKey(0), jnp.zeros(3, jnp.int32), q, 10)
  with pytest.raises(ValueError, match="q must lie in"):
    corruption.random_inputs(jax.random.PRNGKey(0), jnp.zeros((3, 2)), q)


def test_other_bad_inputs():
  with pytest.raises(TypeError, match="labels"):
    corruption.random_labels(jax.random.PRNGKey(0), jnp.zeros(3), 0.5, 10)
  with pytest.raises(ValueError, match="num_classes"):
    corruption.random_labels(jax.random.PRNGKey(0), jnp.zeros(3, jnp.int32), 0.5, 0)
  with pytest.raises(TypeError, match="inputs"):
    corruption.random_inputs(jax.random.PRNGKey(0), jnp.zeros((3, 2), jnp.int32), 0.5)
  with pytest.raises(ValueError, match="kind"):
    corruption.corrupt(jax.random.PRNGKey(0), jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32),
                       "pixels", 0.5, 10)
  with pytest.raises(ValueError, match="num_examples"):
    corruption.unique_class_labels(0)
  with pytest.raises(ValueError, match="factor"):
    corruption.downscale(jnp.zeros((2, 28, 28)), 3)
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match=r"labels must hold class labels in \[0, num_classes = 10\)"):
    corruption.random_labels(key, jnp.array([0, 3, 12]), 0.5, 10)
  with pytest.raises(ValueError, match="labels must hold class labels in"):
    corruption.corrupt(key, jnp.zeros((2, 4)), jnp.array([-1, 2]), "labels", 0.5, 10)
  for kind in corruption.CORRUPTIONS:  # every kind checks the inputs, not only randX
    with pytest.raises(TypeError, match="inputs"):
      corruption.corrupt(key, jnp.zeros((2, 4), jnp.int32), jnp.array([0, 1]), kind, 0.5, 10)
    with pytest.raises(ValueError, match="inputs"):
      corruption.corrupt(key, jnp.zeros(2), jnp.array([0, 1]), kind, 0.5, 10)
  for bad in (True, 2.0):
    with pytest.raises(ValueError, match="num_classes"):
      corruption.random_labels(key, jnp.array([0, 1]), 0.5, bad)
    with pytest.raises(ValueError, match="factor"):
      corruption.downscale(jnp.zeros((2, 28, 28)), bad)


def test_downscale_is_block_average_and_unique_labels():
  images = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
  small = np.asarray(corruption.downscale(images, 2))
  assert small.shape == (2, 2, 3)
  np.testing.assert_allclose(small[1, 1, 2], images[1, 2:4, 4:6].mean())
  np.testing.assert_array_equal(corruption.unique_class_labels(4), [0, 1, 2, 3])
  np.testing.assert_allclose(corruption.to_unit_range(np.array([0, 255], np.uint8)), [0, 1])
