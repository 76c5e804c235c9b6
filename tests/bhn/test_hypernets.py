"""Contract suite over the `HYPERNETS` registry: log-dets, identity at init, round trips."""
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import bhn

D = 5
KEY = jax.random.PRNGKey(0)
LAYERS = {"gaussian": 0, "realnvp": 2, "iaf": 2, "dsf": 1}


def test_contract_suite_covers_registry():
  assert set(LAYERS) == set(bhn.HYPERNETS)


def _build(name):
  return bhn.make_hypernet(name, D, num_layers=LAYERS[name], hidden_units=16,
                           key=jax.random.PRNGKey(7))


def _perturbed(params, scale=0.3):
  """Parameters drawn at moderate scale: every leaf moved by N(0, scale^2)."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(11), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [l + scale * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", sorted(bhn.HYPERNETS))
def test_log_det_matches_slogdet_of_jacobian(name):
  """In float64: with parameters at moderate scale the stacked Jacobian is ill-conditioned
  enough that a float32 slogdet of it is off by ~0.1 while each layer's is exact."""
  h = _build(name)
  params = _perturbed(h.init(KEY, loc=0.5, scale=0.8))
  noise = jax.random.normal(jax.random.PRNGKey(3), (3, D))
  with jax.enable_x64(True):
    params64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)

    @jax.jit
    def both(p, eps):
      bij = h.bijector(p)
      log_det = bij.forward_and_log_det(eps)[1]
      return log_det, jnp.linalg.slogdet(jax.jacfwd(bij.forward)(eps))

    log_det, (sign, expected) = jax.vmap(both, (None, 0))(params64, jnp.asarray(noise, jnp.float64))
    assert np.all(sign != 0)
    np.testing.assert_allclose(log_det, expected, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", sorted(bhn.HYPERNETS))
def test_log_prob_is_change_of_variables_and_matches_distrax(name):
  h = _build(name)
  params = _perturbed(h.init(KEY, loc=-0.2, scale=1.3))
  eps = jax.random.normal(jax.random.PRNGKey(4), (6, D))
  theta, log_q = jax.jit(h.transform)(params, eps)
  _, log_det = jax.jit(lambda p, e: h.bijector(p).forward_and_log_det(e))(params, eps)
  base = distrax.MultivariateNormalDiag(jnp.zeros(D), jnp.ones(D)).log_prob(eps)
  np.testing.assert_allclose(log_q, base - log_det, rtol=1e-5, atol=1e-5)
  if name in ("gaussian", "realnvp"):  # exact inverses: distrax's log_prob agrees
    params = _perturbed(h.init(KEY, loc=-0.2, scale=1.3), scale=0.1)
    theta, log_q = h.transform(params, eps)
    np.testing.assert_allclose(h.distribution(params).log_prob(theta), log_q, rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("name", sorted(bhn.HYPERNETS))
def test_identity_after_affine_at_init(name):
  """At init every coupling / IAF step is the identity: q = N(loc, scale^2) exactly
  (DSF: up to its squeeze)."""
  h = _build(name)
  loc, scale = jnp.linspace(-1.0, 1.0, D), 0.5
  params = h.init(KEY, loc=loc, scale=scale)
  eps = jax.random.normal(jax.random.PRNGKey(6), (8, D))
  theta, log_q = jax.jit(h.transform)(params, eps)
  tol = 2e-2 if name == "dsf" else 1e-6
  np.testing.assert_allclose(theta, loc + scale * eps, atol=tol)
  expected = distrax.MultivariateNormalDiag(loc, jnp.full(D, scale)).log_prob(loc + scale * eps)
  np.testing.assert_allclose(log_q, expected, atol=5 * tol if name == "dsf" else 1e-4)


def test_realnvp_inverse_round_trip():
  h = _build("realnvp")
  bij = h.bijector(_perturbed(h.init(KEY), scale=0.1))
  eps = jax.random.normal(jax.random.PRNGKey(8), (4, D))
  theta, log_det = bij.forward_and_log_det(eps)
  back, inv_log_det = bij.inverse_and_log_det(theta)
  np.testing.assert_allclose(back, eps, atol=1e-4)
  np.testing.assert_allclose(inv_log_det, -log_det, atol=1e-4)


def test_deep_realnvp_stays_finite_at_moderate_parameters():
  # With an unbounded exp(log-scale), 4 couplings at this perturbation gave inf / NaN
  # (each coupling scales what the next one reads: 2.4 -> 5.0 -> 22.8 -> 2.5e16 -> inf).
  dim = 20
  h = bhn.make_hypernet("realnvp", dim, num_layers=8, hidden_units=64, key=jax.random.PRNGKey(7))
  params = _perturbed(h.init(KEY), scale=0.3)
  eps = jax.random.normal(jax.random.PRNGKey(9), (64, dim))
  theta, log_q = jax.jit(h.transform)(params, eps)
  assert np.all(np.isfinite(theta)) and np.all(np.isfinite(log_q))
  back, _ = jax.jit(lambda p, t: h.bijector(p).inverse_and_log_det(t))(params, theta)
  assert np.all(np.isfinite(back))
  # the bound is exact inside [-4, 4] and smooth, increasing and bounded by 6 outside
  from jaxthesis.bhn.hypernets import _bounded_log_scale
  r = jnp.linspace(-30.0, 30.0, 601)
  c = _bounded_log_scale(r)
  inside = np.abs(np.asarray(r)) <= 4.0
  np.testing.assert_array_equal(np.asarray(c)[inside], np.asarray(r)[inside])
  # non-decreasing up to float32 tanh's last-ulp wobble near saturation
  assert np.all(np.diff(np.asarray(c)) >= -1e-6) and np.abs(np.asarray(c)).max() <= 6.0
  near = np.abs(np.asarray(r)) <= 8.0  # strictly increasing until float32 saturates
  assert np.all(np.diff(np.asarray(c)[near]) > 0)
  slope = jax.vmap(jax.grad(_bounded_log_scale))(jnp.array([3.999, 4.001, -4.001]))
  np.testing.assert_allclose(slope, 1.0, atol=1e-3)


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="name"):
    bhn.make_hypernet("glow", D)
  with pytest.raises(ValueError, match="num_layers"):
    bhn.make_hypernet("gaussian", D, num_layers=2)
  with pytest.raises(ValueError, match="num_dims"):
    bhn.make_hypernet("realnvp", 1, num_layers=2, key=KEY)
  with pytest.raises(ValueError, match="key"):
    bhn.make_hypernet("iaf", D, num_layers=2)
  h = _build("iaf")
  with pytest.raises(ValueError, match="scale"):
    h.init(KEY, scale=-1.0)
  with pytest.raises(ValueError, match="loc"):
    h.init(KEY, loc=jnp.zeros(D + 1))
  with pytest.raises(ValueError, match="eps"):
    h.transform(h.init(KEY), jnp.zeros((2, D + 1)))
