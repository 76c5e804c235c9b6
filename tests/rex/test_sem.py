"""Mathematical checks of the linear SEM suite (thesis appendix 11.1.9.2)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.rex import objectives, sem


def _moments(task, key=0, n=1000, scales=sem.DOMAIN_SCALES):
  params = sem.sem_init(jax.random.key(key), task)
  ms = [sem.domain_moments(*sem.sem_sample(jax.random.key(100 + i), params, e, n))
        for i, e in enumerate(scales)]
  return params, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)


@pytest.mark.parametrize("task,scale", [("FOU", 2.0), ("FEU", 2.0), ("FOU", 0.2)])
def test_generator_statistics(task, scale):
  params = sem.sem_init(jax.random.key(1), task)
  inputs, y = sem.sem_sample(jax.random.key(2), params, scale, 40_000)
  x, z = np.asarray(inputs[:, :5]), np.asarray(inputs[:, 5:])
  hetero = task[1] == "E"
  sigma_y, sigma_z = (scale, 1.0) if hetero else (1.0, scale)
  np.testing.assert_allclose(np.var(x, axis=0), scale ** 2, rtol=0.05)
  # y = x · 1 + N(0, σ_y²): regression coefficients 1, residual variance σ_y².
  coef, *_ = np.linalg.lstsq(x, np.asarray(y), rcond=None)
  np.testing.assert_allclose(coef, 1.0, atol=0.05 * max(sigma_y / scale, 1.0))
  np.testing.assert_allclose(np.var(np.asarray(y) - x.sum(1)), sigma_y ** 2, rtol=0.05)
  # z = y 1ᵀ + N(0, σ_z² I): independent noise with variance σ_z².
  residual = z - np.asarray(y)[:, None]
  np.testing.assert_allclose(np.var(residual, axis=0), sigma_z ** 2, rtol=0.05)
  cov = np.cov(residual.T)
  assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 0.05 * sigma_z ** 2


def test_confounded_covariance():
  params = sem.sem_init(jax.random.key(3), "POU")
  scale = 2.0
  inputs, _ = sem.sem_sample(jax.random.key(4), params, scale, 40_000)
  w = np.asarray(params.hidden_to_x)
  expected = scale ** 2 * (np.eye(5) + w.T @ w)  # x = n + h W, n, h ~ N(0, e² I)
  np.testing.assert_allclose(np.cov(np.asarray(inputs[:, :5]).T), expected, atol=0.15)
  assert 0.03 < np.std(w) < 0.3  # randn / 10


def test_fully_observed_has_no_confounding():
  params = sem.sem_init(jax.random.key(3), "FOU")
  a, _ = sem.sem_sample(jax.random.key(4), params, 2.0, 2000)
  b, _ = sem.sem_sample(jax.random.key(4), params._replace(hidden_to_x=params.hidden_to_x * 0),
                        2.0, 2000)
  np.testing.assert_allclose(a, b)


def test_scramble_is_orthogonal_and_undone():
  s = sem.scramble_matrix(jax.random.key(5), 10)
  np.testing.assert_allclose(s.T @ s, np.eye(10), atol=1e-5)
  params = sem.sem_init(jax.random.key(6), "FOS")
  np.testing.assert_allclose(params.scramble @ params.scramble.T, np.eye(10), atol=1e-5)
  np.testing.assert_allclose(sem.sem_init(jax.random.key(6), "FOU").scramble, np.eye(10))
  # The same SEM draw, scrambled or not: inputs differ by S, and un-scrambling maps the
  # scrambled least-squares estimate onto the unscrambled one.
  unscrambled = params._replace(scramble=jnp.eye(10))
  xs, y = sem.sem_sample(jax.random.key(7), params, 2.0, 500)
  xu, _ = sem.sem_sample(jax.random.key(7), unscrambled, 2.0, 500)
  np.testing.assert_allclose(xs, xu @ params.scramble, atol=1e-4)
  theta_s = np.linalg.lstsq(np.asarray(xs), np.asarray(y), rcond=None)[0]
  theta_u = np.linalg.lstsq(np.asarray(xu), np.asarray(y), rcond=None)[0]
  np.testing.assert_allclose(params.scramble @ theta_s, theta_u, atol=1e-3)


def test_quadratic_risk_matches_sample_risk_and_erm_is_least_squares():
  params = sem.sem_init(jax.random.key(8), "POS")
  data = [sem.sem_sample(jax.random.key(9 + i), params, e, 300) for i, e in enumerate((0.2, 2.0))]
  moments = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                   *[sem.domain_moments(x, y) for x, y in data])
  theta = jax.random.normal(jax.random.key(10), (10,))
  preds = jnp.stack([x @ theta for x, _ in data])
  targets = jnp.stack([y for _, y in data])
  sample = objectives.domain_risks(lambda p, t: (p - t) ** 2, preds, targets)
  quad = jax.vmap(sem.quadratic_risk, in_axes=(None, 0))(theta, moments)
  np.testing.assert_allclose(quad, sample, rtol=1e-4)
  pooled_x = np.concatenate([np.asarray(x) for x, _ in data])
  pooled_y = np.concatenate([np.asarray(y) for _, y in data])
  np.testing.assert_allclose(sem.least_squares(moments),
                             np.linalg.lstsq(pooled_x, pooled_y, rcond=None)[0], atol=2e-3)


def test_penalties_match_objectives():
  _, moments = _moments("FOU")
  train = jax.tree_util.tree_map(lambda a: a[:2], moments)
  phi = jnp.eye(10) + 0.1 * jax.random.normal(jax.random.key(11), (10, 10))
  theta = phi @ jnp.ones(10)
  # V-REx penalty is objectives.variance_penalty of the (baselined) risks.
  risks = jax.vmap(sem.quadratic_risk, in_axes=(None, 0))(theta, train)
  np.testing.assert_allclose(sem.vrex_linear_penalty(theta, train, train.target_var),
                             objectives.variance_penalty(risks - train.target_var), rtol=1e-5)
  # The vector-dummy IRMv1 gradient's component along w = 1 is the scalar-dummy penalty.
  grads = jax.vmap(lambda m: jax.grad(lambda w: sem.quadratic_risk(phi @ w, m))(
      jnp.ones(10)))(train)
  np.testing.assert_allclose(sem.irmv1_linear_penalty(phi, train), jnp.sum(grads ** 2),
                             rtol=1e-5)
  k = jax.random.key(12)
  x, y = sem.sem_sample(k, sem.sem_init(k, "FOU"), 2.0, 200)
  m = sem.domain_moments(x, y)
  g = jax.grad(lambda w: sem.quadratic_risk(phi @ w, m))(jnp.ones(10))
  scalar = objectives.irmv1_penalty(lambda p, t: (p - t) ** 2, x @ theta, y)
  np.testing.assert_allclose(jnp.sum(g) ** 2, scalar, rtol=1e-3)
  # The invariant solution has (almost) zero penalties in the homoskedastic task.
  causal = sem.true_coefficients()
  assert sem.vrex_linear_penalty(causal, train, jnp.zeros(2)) < 5e-3
  assert sem.irmv1_linear_penalty(jnp.diag(causal), train) < 0.05


def test_weight_grid_vmap_equals_one_by_one():
  _, moments = _moments("FOU", n=200)
  train = jax.tree_util.tree_map(lambda a: a[:2], moments)
  weights = jnp.array([0.0, 10.0, 1e3])
  for method in ("irm", "vrex"):
    grid = sem.fit_weight_grid(train, weights, method=method, num_steps=60, anneal_steps=10)
    for i, w in enumerate(weights):
      single = sem.fit_penalized(train, w, method=method, num_steps=60, anneal_steps=10)
      np.testing.assert_allclose(grid.coefficients[i], single.coefficients, rtol=1e-4,
                                 atol=1e-5)


def test_vrex_recovers_causal_and_fails_heteroskedastic():
  for task, causal_ok in (("FOU", True), ("FEU", False)):
    _, moments = _moments(task, key=1)
    train = jax.tree_util.tree_map(lambda a: a[:2], moments)
    fit = sem.fit_penalized(train, 1e4, method="vrex", num_steps=1500, anneal_steps=150)
    causal, noncausal, _ = sem.coefficient_errors(fit.coefficients, jnp.eye(10), 5)
    if causal_ok:  # the thesis analysis: β = 0, α = 1 in the domain-homoskedastic case
      assert causal < 0.1 and noncausal < 0.01
    else:  # ... and the anti-causal α = 0, Σβ = 1 (here β = 1/5) when σ_y varies
      np.testing.assert_allclose(causal, 1.0, atol=0.15)
      np.testing.assert_allclose(noncausal, 0.04, atol=0.01)


def test_run_suite_shapes_and_errors():
  r = sem.run_suite(jax.random.key(0), ("FOU", "PES"), (0.0, 1e3), num_reps=2,
                    num_samples=100, num_steps=20, anneal_steps=5)
  assert r.causal_error.shape == (2, 2, 4)
  assert r.validation_risk.shape == (2, 2, 3, 2)
  np.testing.assert_allclose(r.selected_weight[..., 0], 0.0)


def test_bad_inputs_name_the_argument():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="task"):
    sem.sem_init(key, "XYZ")
  with pytest.raises(ValueError, match="penalty_weights"):
    sem.run_suite(key, ("FOU",), (-1.0, 1.0))
  with pytest.raises(ValueError, match="penalty_weights"):
    sem.run_suite(key, ("FOU",), [[1.0]])
  with pytest.raises(ValueError, match="domain_scales"):
    sem.run_suite(key, ("FOU",), domain_scales=(0.2, 2.0))
  with pytest.raises(TypeError, match="num_reps"):
    sem.run_suite(key, ("FOU",), num_reps=2.5)
  with pytest.raises(ValueError, match="scale"):
    sem.sem_sample(key, sem.sem_init(key, "FOU"), -1.0, 10)
  with pytest.raises(ValueError, match="inputs"):
    sem.domain_moments(jnp.ones(3), jnp.ones(3))
  with pytest.raises(TypeError, match="inputs"):
    sem.domain_moments(jnp.ones((3, 2), jnp.int32), jnp.ones(3))
  _, moments = _moments("FOU", n=50)
  with pytest.raises(ValueError, match="method"):
    sem.fit_penalized(moments, 1.0, method="dro")
  with pytest.raises(ValueError, match="penalty_weight"):
    sem.fit_penalized(moments, -1.0, method="vrex")
  with pytest.raises(ValueError, match="anneal_steps"):
    sem.fit_penalized(moments, 1.0, method="vrex", num_steps=10, anneal_steps=10)
