"""The linear SEM suite (thesis appendix 11.1.9.2; Arjovsky et al. 2019, section 5.1):
every property the definition states about the generated data, the penalties' closed
forms, and Table 11.II's error convention."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.rex import sem

D = 5


def _stack(ms):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)


def _sample_moments(params, scale, n, key):
  return sem.domain_moments(*sem.sem_sample(jax.random.key(key), params, scale, n))


def _regress_on_causes(moments):
  """Population regression of Y on x alone: coefficients and residual variance."""
  gxx, cx = moments.gram[:D, :D], moments.cross[:D]
  coef = jnp.linalg.solve(gxx, cx)
  return coef, moments.target_sq - cx @ coef


@pytest.mark.parametrize("task", ["FOU", "PES"])
def test_population_moments_match_samples(task):
  # population_moments (the noise → variables linear map) and sem_sample (the structural
  # equations) are two implementations; 60k samples agree to sampling error.
  params = sem.sem_init(jax.random.key(1), task)
  n = 20_000
  for i, e in enumerate((0.2, 2.0)):
    pop = sem.population_moments(params, e)
    emp = _sample_moments(params, e, n, 10 + i)
    g, c, s = np.asarray(pop.gram), np.asarray(pop.cross), float(pop.target_sq)
    # Gaussian fourth moments: Var(x_i x_j) = G_ii G_jj + G_ij², Var(x_i Y) = G_ii s + c_i².
    se_gram = np.sqrt((np.outer(np.diag(g), np.diag(g)) + g ** 2) / n)
    se_cross = np.sqrt((np.diag(g) * s + c ** 2) / n)
    assert np.all(np.abs(np.asarray(emp.gram) - g) < 5 * se_gram)
    assert np.all(np.abs(np.asarray(emp.cross) - c) < 5 * se_cross)
    assert abs(float(emp.target_sq) - s) < 5 * np.sqrt(2 * s ** 2 / n)


def test_fully_observed_causes_target_and_effects():
  params = sem.sem_init(jax.random.key(2), "FOU")
  # F: W_hx = I, W_hy = W_hz = 0; the chain weights have N(0, 1/(2d)²) entries.
  np.testing.assert_array_equal(params.hidden_to_x, np.eye(D))
  np.testing.assert_array_equal(params.hidden_to_y, 0.0)
  np.testing.assert_array_equal(params.hidden_to_z, 0.0)
  for e in (0.2, 2.0, 5.0):
    inputs, target = sem.sem_sample(jax.random.key(3), params, e, 40_000)
    x, y = np.asarray(inputs[:, :D]), np.asarray(target)
    # x = h + e N with h = e N_h: Var(x) = 2 e² I.
    np.testing.assert_allclose(np.cov(x.T), 2 * e ** 2 * np.eye(D), atol=0.04 * 2 * e ** 2)
    # E[Y | x] = x W_xy 1, residual variance d σ_y² = d (σ_y = 1 in O tasks).
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    np.testing.assert_allclose(coef, sem.true_coefficients(params)[:D],
                               atol=4 * np.sqrt(D / (40_000 * 2 * e ** 2)))
    np.testing.assert_allclose(np.var(y - x @ coef), D, rtol=0.03)


@pytest.mark.parametrize("task,target_noise,effect_noise",
                         [("FOU", lambda e: 1.0, lambda e: e),
                          ("FEU", lambda e: e, lambda e: 1.0)])
def test_what_changes_between_domains(task, target_noise, effect_noise):
  # O: only the effects' noise scales with e; E: only the target's noise does. The
  # mechanism E[Y | x] = x W_xy 1 is the same in every domain.
  params = sem.sem_init(jax.random.key(4), task)
  beta = sem.true_coefficients(params)[:D]
  for e in (0.2, 2.0, 5.0):
    pop = sem.population_moments(params, e)
    coef, residual = _regress_on_causes(pop)
    np.testing.assert_allclose(coef, beta, atol=1e-5)
    np.testing.assert_allclose(residual, D * target_noise(e) ** 2, rtol=1e-4)
    # z - y W_yz = σ_z N_z: from the population Gram, Cov(z) - W_yzᵀ Cov(y) W_yz = σ_z² I.
    w_yz, w_xy = params.target_to_effect, params.cause_to_target
    cov_y = 2 * e ** 2 * w_xy.T @ w_xy + target_noise(e) ** 2 * np.eye(D)
    np.testing.assert_allclose(pop.gram[D:, D:] - w_yz.T @ cov_y @ w_yz,
                               effect_noise(e) ** 2 * np.eye(D), atol=1e-4 * (1 + e ** 2))


def test_invariant_risk_of_the_causal_solution():
  # R_e(θ*) = d σ_y²: the same in every domain when O, proportional to e² when E.
  for task, expected in (("FOU", lambda e: D), ("FEU", lambda e: D * e ** 2)):
    params = sem.sem_init(jax.random.key(5), task)
    theta = sem.true_coefficients(params)
    for e in (0.2, 2.0, 5.0):
      np.testing.assert_allclose(sem.quadratic_risk(theta, sem.population_moments(params, e)),
                                 expected(e), rtol=1e-4)


def test_confounder_and_chain_weight_scales():
  params = sem.sem_init(jax.random.key(6), "POU", dim=20)
  for w in (params.hidden_to_x, params.hidden_to_y, params.hidden_to_z,
            params.cause_to_target, params.target_to_effect):
    assert abs(np.std(np.asarray(w)) - 1 / 40) < 0.2 / 40  # randn / (2d), 400 entries
  ones = sem.sem_init(jax.random.key(6), "FOU", chain_weights="ones")
  np.testing.assert_array_equal(ones.cause_to_target, np.eye(D))
  np.testing.assert_array_equal(ones.target_to_effect, np.eye(D))
  np.testing.assert_array_equal(sem.true_coefficients(ones), np.r_[np.ones(D), np.zeros(D)])
  # Partially observed: h confounds x and Y, so least squares on x alone is biased but
  # the bias is the same in every domain (h and the noise of x both scale with e).
  params = sem.sem_init(jax.random.key(7), "POU")
  coefs = [_regress_on_causes(sem.population_moments(params, e))[0] for e in (0.2, 2.0, 5.0)]
  np.testing.assert_allclose(coefs[0], coefs[2], atol=1e-4)
  assert np.max(np.abs(coefs[0] - sem.true_coefficients(params)[:D])) > 1e-3


def test_scramble_is_orthogonal_and_only_rotates_inputs():
  s = sem.scramble_matrix(jax.random.key(8), 10)
  np.testing.assert_allclose(s.T @ s, np.eye(10), atol=1e-5)
  params = sem.sem_init(jax.random.key(9), "FOS")
  np.testing.assert_allclose(params.scramble @ params.scramble.T, np.eye(10), atol=1e-5)
  unscrambled = sem.sem_init(jax.random.key(9), "FOU")
  np.testing.assert_array_equal(unscrambled.scramble, np.eye(10))
  np.testing.assert_array_equal(unscrambled.cause_to_target, params.cause_to_target)
  xs, ys = sem.sem_sample(jax.random.key(10), params, 2.0, 500)
  xu, yu = sem.sem_sample(jax.random.key(10), unscrambled, 2.0, 500)
  np.testing.assert_allclose(xs, xu @ params.scramble, atol=1e-4)
  np.testing.assert_allclose(ys, yu)


def test_table_errors_convention():
  # Unscrambled: Table 11.II's errors are the causal / non-causal ones. Scrambled:
  # θ* = Sᵀ(W_xy 1, 0) has no zero entry, so "causal" is the MSE over all 2d entries
  # (= the mean of the un-scrambled causal and non-causal errors) and "non-causal" is 0.
  est = jax.random.normal(jax.random.key(11), (10,))
  for task in ("FOU", "POS"):
    params = sem.sem_init(jax.random.key(12), task)
    causal, noncausal, unscrambled = sem.coefficient_errors(est, params)
    np.testing.assert_allclose(unscrambled, params.scramble @ est, atol=1e-6)
    t_causal, t_noncausal = sem.table_errors(est, params)
    if task.endswith("U"):
      np.testing.assert_allclose([t_causal, t_noncausal], [causal, noncausal], rtol=1e-6)
    else:
      np.testing.assert_allclose(t_causal, (causal + noncausal) / 2, rtol=1e-5)
      assert float(t_noncausal) == 0.0


def test_quadratic_risk_and_least_squares():
  params = sem.sem_init(jax.random.key(13), "POS")
  data = [sem.sem_sample(jax.random.key(14 + i), params, e, 300) for i, e in enumerate((0.2, 2.0))]
  moments = _stack([sem.domain_moments(x, y) for x, y in data])
  theta = jax.random.normal(jax.random.key(15), (10,))
  sample = jnp.stack([jnp.mean((x @ theta - y) ** 2) for x, y in data])
  np.testing.assert_allclose(jax.vmap(sem.quadratic_risk, in_axes=(None, 0))(theta, moments),
                             sample, rtol=1e-4)
  pooled_x = np.concatenate([np.asarray(x) for x, _ in data])
  pooled_y = np.concatenate([np.asarray(y) for _, y in data])
  np.testing.assert_allclose(sem.least_squares(moments),
                             np.linalg.lstsq(pooled_x, pooled_y, rcond=None)[0], atol=2e-3)


def test_vrex_penalty_pairwise_form():
  risks = jnp.array([0.3, 1.1, 2.0])
  pairwise = sum((risks[i] - risks[j]) ** 2 for i in range(3) for j in range(i + 1, 3))
  np.testing.assert_allclose(sem.pairwise_risk_penalty(risks), pairwise, rtol=1e-6)
  np.testing.assert_allclose(sem.pairwise_risk_penalty(risks), 9 * jnp.var(risks), rtol=1e-6)
  params = sem.sem_init(jax.random.key(16), "FOU")
  moments = _stack([sem.population_moments(params, e) for e in (0.2, 2.0)])
  theta = jax.random.normal(jax.random.key(17), (10,))
  r = jax.vmap(sem.quadratic_risk, in_axes=(None, 0))(theta, moments)
  np.testing.assert_allclose(sem.vrex_linear_penalty(theta, moments, moments.target_var),
                             ((r[0] - moments.target_var[0]) - (r[1] - moments.target_var[1])) ** 2,
                             rtol=1e-5)


def test_weight_grid_vmap_equals_one_by_one():
  params = sem.sem_init(jax.random.key(18), "FOU")
  moments = _stack([_sample_moments(params, e, 200, 19 + i) for i, e in enumerate((0.2, 2.0))])
  weights = jnp.array([0.0, 1e-3, 0.1])
  for method in ("irm", "vrex"):
    grid = sem.fit_weight_grid(moments, weights, method=method, num_steps=50)
    for i, w in enumerate(weights):
      single = sem.fit_penalized(moments, w, method=method, num_steps=50)
      np.testing.assert_allclose(grid.coefficients[i], single.coefficients, rtol=1e-4,
                                 atol=1e-5)


def test_vrex_population_fit_causal_when_homoskedastic_anticausal_when_not():
  # The thesis's analysis (appendix 11.1.9.2): equal risks force the effects' weights to 0
  # when σ_z changes (O) but, when σ_y changes (E), to the anti-causal solution α = 0, whose
  # effect weights are large because W_yz is small.
  for task in ("FOU", "FEU"):
    params = sem.sem_init(jax.random.key(20), task)
    moments = _stack([sem.population_moments(params, e) for e in (0.2, 2.0)])
    fit = sem.fit_penalized(moments, 1e-4, method="vrex", learning_rate=1e-2, num_steps=10_000)
    causal, noncausal, estimate = sem.coefficient_errors(fit.coefficients, params)
    np.testing.assert_allclose(fit.risks[0], fit.risks[1], rtol=1e-3)
    if task == "FOU":
      assert causal < 2e-4 and noncausal < 1e-4
    else:
      # α → 0 (the causes' weights are lost, so the causal error is ≈ mean((W_xy 1)²)),
      # and large weights go on the effects.
      assert np.max(np.abs(np.asarray(estimate[:D]))) < 0.05
      assert noncausal > 1.0


def test_run_suite_shapes_and_selection():
  r = sem.run_suite(jax.random.key(0), ("FOU", "PES"), (0.0, 0.1), num_reps=2,
                    num_samples=100, num_steps=20)
  assert r.causal_error.shape == (2, 2, 4)
  assert r.validation_risk.shape == (2, 2, 3, 2)
  np.testing.assert_allclose(r.selected_risk_weight[..., 0], 1.0)  # ERM
  # The chosen ρ is the argmin of the last domain's risk.
  best = np.asarray(r.validation_risk).argmin(-1)
  np.testing.assert_allclose(r.selected_risk_weight[..., 1:], np.array([0.0, 0.1])[best])
  np.testing.assert_allclose(r.table_noncausal_error[1], 0.0)  # PES is scrambled
  # A task's draws depend on its name, not on its position or on the other tasks.
  again = sem.run_suite(jax.random.key(0), ("PES", "FOU"), (0.0, 0.1), num_reps=2,
                        num_samples=100, num_steps=20)
  np.testing.assert_allclose(again.coefficients[0], r.coefficients[1], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(again.causal_error[1], r.causal_error[0], rtol=1e-5, atol=1e-8)


def test_bad_inputs_name_the_argument():
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="task"):
    sem.sem_init(key, "XYZ")
  with pytest.raises(ValueError, match="chain_weights"):
    sem.sem_init(key, "FOU", chain_weights="uniform")
  with pytest.raises(ValueError, match="risk_weights"):
    sem.run_suite(key, ("FOU",), (-1.0, 0.5))
  with pytest.raises(ValueError, match="risk_weights"):
    sem.run_suite(key, ("FOU",), (0.5, 2.0))
  with pytest.raises(ValueError, match="risk_weights"):
    sem.run_suite(key, ("FOU",), [[0.1]])
  with pytest.raises(ValueError, match="domain_scales"):
    sem.run_suite(key, ("FOU",), domain_scales=(0.2, 2.0))
  with pytest.raises(TypeError, match="num_reps"):
    sem.run_suite(key, ("FOU",), num_reps=2.5)
  with pytest.raises(TypeError, match="tasks"):
    sem.run_suite(key, "FOU")
  with pytest.raises(ValueError, match="scale"):
    sem.sem_sample(key, sem.sem_init(key, "FOU"), -1.0, 10)
  with pytest.raises(TypeError, match="params"):
    sem.population_moments({"scramble": 1}, 2.0)
  with pytest.raises(ValueError, match="inputs"):
    sem.domain_moments(jnp.ones(3), jnp.ones(3))
  with pytest.raises(TypeError, match="inputs"):
    sem.domain_moments(jnp.ones((3, 2), jnp.int32), jnp.ones(3))
  moments = _stack([sem.population_moments(sem.sem_init(key, "FOU"), e) for e in (0.2, 2.0)])
  with pytest.raises(ValueError, match="method"):
    sem.fit_penalized(moments, 0.1, method="dro")
  with pytest.raises(ValueError, match="risk_weight"):
    sem.fit_penalized(moments, -1.0, method="vrex")
  with pytest.raises(ValueError, match="risk_weight"):
    sem.fit_penalized(moments, 1.5, method="vrex")
  with pytest.raises(TypeError, match="num_steps"):
    sem.fit_penalized(moments, 0.1, method="vrex", num_steps=10.0)
