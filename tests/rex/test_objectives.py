"""The mathematics of the REx objectives (thesis 5.3.3, appendix 11.1.8)."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxthesis.rex import objectives as obj

jax.config.update("jax_enable_x64", False)
KEY = jax.random.PRNGKey(0)


def _risks(m, key=KEY):
  return jax.random.uniform(key, (m,), minval=0.1, maxval=2.0)


def test_irmv1_penalty_matches_logistic_closed_form():
  z = jax.random.normal(KEY, (64,)) * 3
  y = jax.random.bernoulli(jax.random.PRNGKey(1), 0.4, (64,)).astype(jnp.float32)
  closed = jnp.mean((jax.nn.sigmoid(z) - y) * z) ** 2
  np.testing.assert_allclose(obj.irmv1_penalty(obj.binary_cross_entropy, z, y), closed, rtol=1e-5)


def test_irmv1_penalty_respects_mask():
  z = jax.random.normal(KEY, (10,))
  y = (jnp.arange(10) % 2).astype(jnp.float32)
  mask = (jnp.arange(10) < 6).astype(jnp.float32)
  full = obj.irmv1_penalty(obj.binary_cross_entropy, z[:6], y[:6])
  np.testing.assert_allclose(obj.irmv1_penalty(obj.binary_cross_entropy, z, y, mask), full,
                             rtol=1e-5)


def test_unbiased_irmv1_is_product_of_half_gradients_and_unbiased():
  z = jax.random.normal(KEY, (40,))
  y = jax.random.bernoulli(jax.random.PRNGKey(2), 0.5, (40,)).astype(jnp.float32)
  g = lambda zz, yy: jnp.mean((jax.nn.sigmoid(zz) - yy) * zz)
  expected = g(z[::2], y[::2]) * g(z[1::2], y[1::2])
  np.testing.assert_allclose(obj.irmv1_penalty_unbiased(obj.binary_cross_entropy, z, y),
                             expected, rtol=1e-5)
  # Statistical check: over many batches the split estimate averages to the squared
  # population gradient while the plain square is biased upward by Var(g)/n.
  keys = jax.random.split(jax.random.PRNGKey(3), 4000)

  def draw(k):
    kz, ky = jax.random.split(k)
    zz = jax.random.normal(kz, (20,)) + 1.0
    yy = jax.random.bernoulli(ky, 0.3, (20,)).astype(jnp.float32)
    return (obj.irmv1_penalty(obj.binary_cross_entropy, zz, yy),
            obj.irmv1_penalty_unbiased(obj.binary_cross_entropy, zz, yy))

  biased, unbiased = jax.vmap(draw)(keys)
  zz = jax.random.normal(jax.random.PRNGKey(9), (400000,)) + 1.0
  yy = jax.random.bernoulli(jax.random.PRNGKey(10), 0.3, (400000,)).astype(jnp.float32)
  truth = g(zz, yy) ** 2
  se = unbiased.std() / np.sqrt(len(keys))
  assert abs(unbiased.mean() - truth) < 4 * se + 1e-4
  assert biased.mean() > truth + 4 * biased.std() / np.sqrt(len(keys))


@pytest.mark.parametrize("m", [2, 3, 5])
def test_vrex_variance_is_half_mean_pairwise_squared_difference(m):
  r = _risks(m)
  pairwise = sum((r[i] - r[j]) ** 2 for i in range(m) for j in range(m)) / (2 * m * m)
  np.testing.assert_allclose(obj.variance_penalty(r), pairwise, rtol=1e-5)
  np.testing.assert_allclose(obj.vrex(r, 7.0), 7.0 * pairwise + r.sum(), rtol=1e-5)
  np.testing.assert_allclose(obj.vrex(r, 0.0), r.sum(), rtol=1e-6)  # β = 0 is ERM


def test_mmrex_two_domains_equals_mae_form():
  # 11.1.8.2.2: with m = 2, 2·R_MM = R1 + R2 + β_MAE |R1 - R2| with β_MAE = 1 - 2 λ_min.
  for lam in (-3.0, -0.5, 0.0, 0.25):
    for r in (jnp.array([0.3, 1.1]), jnp.array([1.4, 0.2])):
      beta_mae = 1 - 2 * lam
      np.testing.assert_allclose(2 * obj.mmrex(r, lam), r.sum() + beta_mae * jnp.abs(r[0] - r[1]),
                                 rtol=1e-5)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_mmrex_is_the_max_over_the_perturbation_set(m):
  # Eq 5.6: brute-force the max of Σ λ_e R_e over vertices of {Σλ = 1, λ ≥ λ_min}.
  r = _risks(m, jax.random.PRNGKey(m))
  lam = -0.7
  vertices = []
  for e in range(m):
    v = np.full(m, lam)
    v[e] = 1 - (m - 1) * lam
    vertices.append(v)
  brute = max(float(np.dot(v, r)) for v in vertices)
  np.testing.assert_allclose(obj.mmrex(r, lam), brute, rtol=1e-5)
  # mean + (1 - m λ) (max - mean) is the same thing
  np.testing.assert_allclose(
      obj.mmrex(r, lam), r.mean() + obj.mmrex_penalty_weight(lam, m) * obj.minimax_penalty(r),
      rtol=1e-5)


def test_risk_interpolation_is_mmrex_at_zero():
  r = _risks(4)
  np.testing.assert_allclose(obj.risk_interpolation(r), obj.mmrex(r, 0.0), rtol=1e-6)
  np.testing.assert_allclose(obj.risk_interpolation(r), r.max(), rtol=1e-6)


def test_erm_pooled_risk_weights_by_domain_size():
  losses = [jnp.array([1.0, 2.0, 3.0]), jnp.array([10.0])]
  risks = jnp.array([2.0, 10.0])
  np.testing.assert_allclose(obj.erm(risks, jnp.array([3.0, 1.0])),
                             jnp.concatenate(losses).mean(), rtol=1e-6)
  np.testing.assert_allclose(obj.erm(risks), 6.0, rtol=1e-6)


def test_domain_risks_vmaps_masked_means():
  z = jax.random.normal(KEY, (3, 8))
  y = jnp.ones((3, 8))
  mask = jnp.array([[1] * 8, [1] * 4 + [0] * 4, [1] * 2 + [0] * 6], jnp.float32)
  risks = obj.domain_risks(obj.binary_cross_entropy, z, y, mask)
  for e, n in enumerate((8, 4, 2)):
    np.testing.assert_allclose(risks[e], obj.binary_cross_entropy(z[e, :n], y[e, :n]).mean(),
                               rtol=1e-5)


def test_binary_cross_entropy_is_stable():
  z = jnp.array([-1e4, -10.0, 0.0, 10.0, 1e4])
  for y in (0.0, 1.0):
    out = obj.binary_cross_entropy(z, jnp.full_like(z, y))
    assert jnp.all(jnp.isfinite(out))
    ref = -(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["vrex", "mmrex", "ri", "erm", "variance", "minimax"])
def test_gradients_of_risk_functionals(name):
  fns = {"vrex": lambda r: obj.vrex(r, 3.0), "mmrex": lambda r: obj.mmrex(r, -2.0),
         "ri": obj.risk_interpolation, "erm": obj.erm, "variance": obj.variance_penalty,
         "minimax": obj.minimax_penalty}
  r = jnp.array([0.3, 1.1, 0.7])  # distinct entries: max is differentiable here
  check_grads(fns[name], (r,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_gradient_of_irmv1_penalty_through_logits():
  y = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0])
  f = lambda z: obj.irmv1_penalty(obj.binary_cross_entropy, z, y)
  check_grads(f, (jnp.array([0.5, -1.0, 2.0, 0.1, -0.3]),), order=1, modes=["rev"],
              atol=1e-2, rtol=1e-2)


def test_groupdro_moves_weight_to_the_worst_domain():
  state = obj.groupdro_init(3)
  risks = jnp.array([0.1, 0.5, 0.2])
  for _ in range(50):
    loss, state = obj.groupdro_update(state, risks, 0.5)
  q = jnp.exp(state.log_q)
  np.testing.assert_allclose(q.sum(), 1.0, rtol=1e-5)
  # closed form: q ∝ exp(η t R)
  expected = jax.nn.softmax(0.5 * 50 * risks)
  np.testing.assert_allclose(q, expected, rtol=1e-4)
  assert jnp.argmax(q) == 1
  grad = jax.grad(lambda r: obj.groupdro_update(obj.groupdro_init(3), r, 0.5)[0])(risks)
  np.testing.assert_allclose(grad, jax.nn.softmax(0.5 * risks), rtol=1e-5)


def test_penalty_schedule_and_rescaling():
  w = jax.vmap(lambda t: obj.penalty_weight_at(t, 100.0, 5))(jnp.arange(8))
  np.testing.assert_allclose(w, [1, 1, 1, 1, 1, 100, 100, 100])
  np.testing.assert_allclose(obj.penalized_loss(2.0, 3.0, 100.0), (2 + 300) / 100)
  np.testing.assert_allclose(obj.penalized_loss(2.0, 3.0, 0.5), 2 + 1.5)
  np.testing.assert_allclose(obj.penalized_loss(2.0, 3.0, 100.0, rescale=False), 302.0)


@pytest.mark.parametrize("call,match", [
    (lambda: obj.vrex(jnp.ones((2, 2)), 1.0), "risks must have rank 1"),
    (lambda: obj.vrex(jnp.zeros((0,)), 1.0), "risks must be non-empty"),
    (lambda: obj.vrex(jnp.array([1, 2]), 1.0), "risks must be a floating-point"),
    (lambda: obj.vrex(jnp.ones(2), -1.0), "beta must be >= 0"),
    (lambda: obj.mmrex(jnp.ones(2), 0.9), "lambda_min must be <= 1/m"),
    (lambda: obj.erm(jnp.ones(2), jnp.array([1.0, -1.0])), "domain_sizes must be >= 0"),
    (lambda: obj.erm(jnp.ones(2), jnp.ones(3)), "domain_sizes must have the shape"),
    (lambda: obj.irmv1_penalty(obj.binary_cross_entropy, jnp.ones(3), jnp.ones(4)),
     "labels must have the shape"),
    (lambda: obj.domain_risks(obj.binary_cross_entropy, jnp.ones(3), jnp.ones(3)),
     "logits must have rank 2"),
    (lambda: obj.groupdro_update(obj.groupdro_init(2), jnp.ones(2), -0.1),
     "step_size must be >= 0"),
    (lambda: obj.groupdro_init(0), "num_domains"),
])
def test_bad_inputs_name_the_argument(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()
