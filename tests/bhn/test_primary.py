"""Weight-norm layers and primary nets: Eq. 7.7 against plain layers, data-dependent init."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import bhn

KEY = jax.random.PRNGKey(0)


def test_weightnorm_dense_equals_dense_with_normalized_weights():
  k1, k2, k3, k4 = jax.random.split(KEY, 4)
  params = {"v": jax.random.normal(k1, (5, 4)), "b": jax.random.normal(k2, (4,))}
  g = jax.random.normal(k3, (4,))
  x = jax.random.normal(k4, (7, 5))
  w = g * params["v"] / np.linalg.norm(np.asarray(params["v"]), axis=0)
  np.testing.assert_allclose(bhn.weightnorm_dense(params, g, x), x @ w + params["b"],
                             rtol=1e-5, atol=1e-5)


def test_weightnorm_conv_equals_conv_with_normalized_filters():
  k1, k2, k3, k4 = jax.random.split(KEY, 4)
  v = jax.random.normal(k1, (3, 3, 2, 4))
  params = {"v": v, "b": jax.random.normal(k2, (4,))}
  g = jax.random.normal(k3, (4,))
  x = jax.random.normal(k4, (2, 6, 6, 2))
  w = g * v / np.sqrt(np.sum(np.asarray(v) ** 2, axis=(0, 1, 2)))
  # Direct correlation sum at an interior pixel (SAME padding, stride 1).
  out = bhn.weightnorm_conv(params, g, x)
  i, j = 2, 3
  patch = x[:, i - 1:i + 2, j - 1:j + 2, :]
  expected = jnp.einsum("bhwi,hwio->bo", patch, w) + params["b"]
  np.testing.assert_allclose(out[:, i, j], expected, rtol=1e-4, atol=1e-4)


def test_data_dependent_init_gives_unit_variance_preactivations():
  x = 3.0 * jax.random.normal(KEY, (256, 10)) + 1.0
  net = bhn.weightnorm_mlp(10, (32, 16), 3)
  params, theta = net.init(jax.random.PRNGKey(1), x)
  # Layer 1 pre-activations on the init batch: zero mean, unit variance per unit.
  g1 = theta[:32]
  pre = bhn.weightnorm_dense(params[0], g1, x)
  np.testing.assert_allclose(pre.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(pre.var(0), 1.0, rtol=1e-3)
  # Layer 2 as well (DDI runs layer by layer on the initialized lower layers).
  pre2 = bhn.weightnorm_dense(params[1], theta[32:48], jax.nn.relu(pre))
  np.testing.assert_allclose(pre2.var(0), 1.0, rtol=1e-3)
  # And the output layer's logits.
  out = net.apply(params, theta, x)
  np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-3)


def test_cnn_ddi_and_split_equals_apply():
  x = jax.random.uniform(KEY, (8, 8, 8, 3))
  net = bhn.weightnorm_cnn((8, 8, 3), (4, 4), (1,), (6,), 5)
  params, theta = net.init(jax.random.PRNGKey(1), x)
  assert theta.shape == (net.num_random,) == (4 + 4 + 6 + 5,)
  out = net.apply(params, theta, x)
  assert out.shape == (8, 5)
  np.testing.assert_allclose(out.var(0), 1.0, rtol=1e-2)


def test_dense_mlp_theta_is_every_weight():
  net = bhn.dense_mlp(3, (4,), 2)
  assert net.num_random == 3 * 4 + 4 + 4 * 2 + 2
  params, theta = net.init(KEY, jnp.zeros((1, 3)))
  x = jax.random.normal(KEY, (5, 3))
  w1 = theta[:12].reshape(3, 4)
  # ravel_pytree orders dict keys alphabetically: b before w within a layer.
  flat = np.asarray(theta)
  b1, w1 = flat[:4], flat[4:16].reshape(3, 4)
  b2, w2 = flat[16:18], flat[18:26].reshape(4, 2)
  expected = np.maximum(np.asarray(x) @ w1 + b1, 0) @ w2 + b2
  np.testing.assert_allclose(net.apply(params, theta, x), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="hidden_sizes"):
    bhn.weightnorm_mlp(3, (0,), 2)
  with pytest.raises(ValueError, match="activation"):
    bhn.weightnorm_mlp(3, (4,), 2, activation="swish")
  net = bhn.weightnorm_mlp(3, (4,), 2)
  with pytest.raises(ValueError, match="x_init"):
    net.init(KEY, jnp.zeros((5, 4)))
  with pytest.raises(TypeError, match="x_init"):
    net.init(KEY, jnp.zeros((5, 3), jnp.int32))
  params, theta = net.init(KEY, jnp.ones((5, 3)) * jnp.arange(5.0)[:, None])
  with pytest.raises(ValueError, match="theta"):
    net.apply(params, theta[:-1], jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match="g must"):
    bhn.weightnorm_dense(params[0], jnp.ones(3), jnp.zeros((2, 3)))
