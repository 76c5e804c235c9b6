"""jaxthesis.vi: the ELBO (Eq. 7.2) and the importance-weighted bound on a conjugate Gaussian
model with a closed-form evidence, the annealing and learning-rate schedules."""
import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import vi

# theta ~ N(0, 1), y | theta ~ N(theta, s2): the posterior is N(y / (1 + s2), s2 / (1 + s2))
# and the evidence p(y) = N(y; 0, 1 + s2).
Y, S2 = 1.3, 0.5
POST_MEAN, POST_VAR = Y / (1 + S2), S2 / (1 + S2)
LOG_EVIDENCE = -0.5 * Y ** 2 / (1 + S2) - 0.5 * math.log(2 * math.pi * (1 + S2))


def _log_normal(x, mean, var):
  return -0.5 * (x - mean) ** 2 / var - 0.5 * jnp.log(2 * jnp.pi * var)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _terms(key, num, q_mean, q_var, shape=()):
  theta = q_mean + math.sqrt(q_var) * jax.random.normal(key, shape + (num,))
  return (_log_normal(Y, theta, S2), _log_normal(theta, q_mean, q_var),
          _log_normal(theta, 0.0, 1.0))


def _gaussian_kl(m1, v1, m2, v2):
  return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def test_elbo_is_the_evidence_when_q_is_the_posterior():
  # log p(y | θ) + log p(θ) - log q(θ) = log p(y) for every θ when q is the posterior.
  ll, lq, lp = _terms(jax.random.PRNGKey(0), 64, POST_MEAN, POST_VAR)
  np.testing.assert_allclose(vi.elbo(ll, lq, lp), LOG_EVIDENCE, rtol=0, atol=2e-6)
  np.testing.assert_allclose(vi.iw_bound(ll + lp - lq), LOG_EVIDENCE, rtol=0, atol=2e-6)


def test_elbo_is_evidence_minus_kl_to_the_posterior_and_iw_bound_sits_between():
  q_mean, q_var = 0.2, 0.3
  exact = LOG_EVIDENCE - _gaussian_kl(q_mean, q_var, POST_MEAN, POST_VAR)
  ll, lq, lp = _terms(jax.random.PRNGKey(1), 400_000, q_mean, q_var)
  # Monte Carlo over 4e5 samples: the integrand's std is < 1, so 4 s.e. < 0.007.
  assert abs(float(vi.elbo(ll, lq, lp)) - exact) < 0.007
  # E[iw_bound] rises with K from the ELBO towards log p(y) (Burda et al.): 2,000 repeats,
  # the first K of 100 samples each.
  @jax.jit
  def iw_means(key):
    ll, lq, lp = _terms(key, 100, q_mean, q_var, shape=(2000,))
    log_w = ll + lp - lq
    return [vi.iw_bound(log_w[:, :k], axis=-1).mean() for k in (1, 10, 100)]

  means = [float(m) for m in iw_means(jax.random.PRNGKey(2))]
  assert abs(means[0] - exact) < 0.03
  assert means[0] < means[1] < means[2] < LOG_EVIDENCE
  assert LOG_EVIDENCE - means[2] < 0.1 * (LOG_EVIDENCE - exact)


def test_elbo_weights_are_linear_and_axis_averages_samples():
  ll, lq, lp = _terms(jax.random.PRNGKey(3), 50, 0.0, 1.0, shape=(3,))
  mean = lambda x: np.asarray(x, np.float64).mean()
  for beta in (0.0, 0.25, 1.0):
    np.testing.assert_allclose(vi.elbo(ll, lq, lp, kl_weight=beta),
                               mean(ll) - beta * (mean(lq) - mean(lp)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vi.elbo(ll, lq, lp, likelihood_weight=beta),
                               beta * mean(ll) - (mean(lq) - mean(lp)), rtol=1e-5, atol=1e-5)
  per_row = vi.elbo(ll, lq, lp, axis=-1)
  assert per_row.shape == (3,)
  np.testing.assert_allclose(per_row.mean(), vi.elbo(ll, lq, lp), rtol=1e-6)
  # The prior folded into the likelihood gives the same bound; a scalar prior broadcasts.
  np.testing.assert_allclose(vi.elbo(ll + lp, lq), vi.elbo(ll, lq, lp), rtol=1e-6)
  np.testing.assert_allclose(vi.elbo(ll, lq, -0.7), mean(ll) - mean(lq) - 0.7, rtol=1e-5)
  # The weight may be traced (a schedule's value inside a jitted step).
  traced = jax.jit(lambda b: vi.elbo(ll, lq, lp, kl_weight=b))(jnp.float32(0.25))
  np.testing.assert_allclose(traced, vi.elbo(ll, lq, lp, kl_weight=0.25), rtol=1e-6)


def test_elbo_gradient_is_the_reparameterized_kl_gradient():
  # d/dm of the ELBO for q = N(m, v) with fixed noise: at the posterior mean it vanishes,
  # elsewhere it equals -d/dm KL(q || posterior) = -(m - μ) / σ². The integrand is quadratic
  # in θ, so antithetic noise (ε and -ε) makes the Monte Carlo gradient exact.
  half = jax.random.normal(jax.random.PRNGKey(4), (10_000,))
  eps = jnp.concatenate([half, -half])

  def objective(m, v=POST_VAR):
    theta = m + math.sqrt(v) * eps
    return vi.elbo(_log_normal(Y, theta, S2), _log_normal(theta, m, v),
                   _log_normal(theta, 0.0, 1.0))

  assert abs(float(jax.grad(objective)(jnp.float32(POST_MEAN)))) < 1e-4
  np.testing.assert_allclose(jax.grad(objective)(jnp.float32(0.0)), POST_MEAN / POST_VAR,
                             rtol=1e-4)


def test_iw_bound_is_a_stable_log_mean_exp():
  log_w = jnp.array([[1000.0, -1000.0], [1000.0 + math.log(3.0), -1001.0]])
  np.testing.assert_allclose(vi.iw_bound(log_w, axis=0),
                             [1000.0 + math.log(2.0), -1000.0 + math.log((1 + math.exp(-1)) / 2)],
                             rtol=1e-6)
  np.testing.assert_allclose(vi.iw_bound(jnp.array([[0.5, -2.0]]), axis=0), [0.5, -2.0])


@pytest.mark.parametrize("call,error,needle", [
    (lambda: vi.elbo(jnp.ones(3, jnp.int32), jnp.ones(3)), TypeError, "log_likelihood"),
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(4)), ValueError, r"broadcast.*log_q \(4,\)"),
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(3), kl_weight=jnp.ones(2)), ValueError, "kl_weight"),
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(3), likelihood_weight=math.inf), ValueError,
     "likelihood_weight"),
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(3), axis=1), ValueError, "axis"),
    (lambda: vi.iw_bound(jnp.float32(1.0)), ValueError, "log_weights"),
    (lambda: vi.iw_bound(jnp.ones((0, 2))), ValueError, "log_weights"),
    (lambda: vi.iw_bound(jnp.ones(3), axis=2), ValueError, "axis"),
    (lambda: vi.iw_bound(jnp.ones(3, jnp.int32)), TypeError, "log_weights"),
])
def test_bounds_reject_bad_input_naming_the_argument(call, error, needle):
  with pytest.raises(error, match=needle):
    call()


def test_linear_anneal_rises_from_start_to_one():
  values = [float(vi.linear_anneal(t, 1000, 0.01, 0.2)) for t in (0, 100, 200, 999)]
  np.testing.assert_allclose(values, [0.01, 0.01 + 0.99 * 0.5, 1.0, 1.0], rtol=1e-6)
  schedule = vi.kl_weight_schedule(1000, 0.2, start=0.01)
  assert float(jax.jit(schedule)(jnp.asarray(50))) == pytest.approx(0.01 + 0.99 * 0.25)
  steps = jnp.arange(1000)
  np.testing.assert_array_equal(jax.vmap(schedule)(steps),
                                vi.linear_anneal(steps, 1000, 0.01, 0.2))
  # No annealing step: 1 throughout; a warm-up from 0 is allowed.
  assert float(vi.kl_weight_schedule(1000, 0.0)(0)) == 1.0
  assert float(vi.linear_anneal(5, 10, 0.0, 1.0)) == pytest.approx(0.5)


def test_anneal_schedule_compiles_once():
  schedule = jax.jit(chex.assert_max_traces(vi.kl_weight_schedule(100, 0.5), n=1))
  for t in range(3):
    schedule(jnp.int32(t))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(num_steps=0), "num_steps"), (dict(num_steps=2.5), "num_steps"),
    (dict(fraction=1.5), "fraction"), (dict(start=-0.1), "start"),
    (dict(start=math.nan), "start"),
])
def test_anneal_rejects_bad_settings(kwargs, needle):
  args = {"num_steps": 100, "fraction": 0.5, "start": 0.01, **kwargs}
  with pytest.raises(ValueError, match=needle):
    vi.kl_weight_schedule(**args)
  with pytest.raises(ValueError, match=needle):
    vi.linear_anneal(0, **args)


def test_constant_then_cosine_holds_then_decays():
  assert vi.constant_then_cosine(1e-2, 100, 0.0) == 1e-2
  schedule = vi.constant_then_cosine(1e-2, 100, 0.3, final_scale=0.05)
  np.testing.assert_allclose([schedule(0), schedule(69), schedule(70)], [1e-2] * 3, rtol=1e-6)
  for t in (75, 85, 95, 100):
    expected = 1e-2 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (t - 70) / 30)))
    np.testing.assert_allclose(schedule(t), expected, rtol=1e-5)
  whole = vi.constant_then_cosine(1.0, 10, 1.0, final_scale=0.0)
  np.testing.assert_allclose([whole(0), whole(5), whole(10)], [1.0, 0.5, 0.0], atol=1e-6)


@pytest.mark.parametrize("args,needle", [
    ((0.0, 100, 0.3), "learning_rate"), ((1e-2, 0, 0.3), "num_steps"),
    ((1e-2, 100, -0.1), "decay_fraction"), ((1e-2, 100, 0.3, 2.0), "final_scale"),
])
def test_constant_then_cosine_rejects_bad_settings(args, needle):
  with pytest.raises(ValueError, match=needle):
    vi.constant_then_cosine(*args)
