"""IRMv1 for a linear regressor (thesis appendix 11.1.9.2, Table 11.II's IRM rows).

The penalty against its closed form, the two-domain problem with one cause and one effect
solved on paper, and why IRMv1 reached a non-causal point on the SEM this project used
before issue 13: there every effect was a noisy copy of the target (z_i = Y + N(0, e²))
and the causes' variance scaled with the domain, which gives the penalty a non-causal zero
that gradient descent from Φ = I falls into; the thesis's SEM does not lead it there.
"""
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis.rex import objectives, sem


def _stack(ms):
  return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ms)


def _copy_sem(d, e):
  """Population moments of x ~ N(0, e² I_d), Y = Σ x + N(0, 1), z_i = Y + N(0, e²)."""
  var_y = d * e ** 2 + 1.0
  ones = jnp.ones((d, d))
  gram = jnp.block([[e ** 2 * jnp.eye(d), e ** 2 * ones],
                    [e ** 2 * ones, var_y * ones + e ** 2 * jnp.eye(d)]])
  cross = jnp.concatenate([e ** 2 * jnp.ones(d), var_y * jnp.ones(d)])
  return sem.DomainMoments(gram, cross, jnp.asarray(var_y), jnp.asarray(var_y))


def _scalar_penalty(theta, moments):
  """Σ_e (d/ds R_e(s θ)|_{s=1})² = Σ_e (2 θᵀ(G_e θ - c_e))²: the scalar-dummy IRMv1."""
  return jnp.sum(jax.vmap(lambda m: 2.0 * theta @ (m.gram @ theta - m.cross))(moments) ** 2)


def test_penalty_matches_autodiff_and_closed_form():
  params = sem.sem_init(jax.random.key(0), "PEU")
  data = [sem.sem_sample(jax.random.key(1 + i), params, e, 400) for i, e in enumerate((0.2, 2.0))]
  moments = _stack([sem.domain_moments(x, y) for x, y in data])
  phi = jnp.eye(10) + 0.3 * jax.random.normal(jax.random.key(3), (10, 10))

  def dummy_grad(x, y):  # ∇_w mean((X Φ w - Y)²) at w = 1, by autodiff on the samples
    return jax.grad(lambda w: jnp.mean((x @ phi @ w - y) ** 2))(jnp.ones(10))

  by_autodiff = sum(jnp.mean(dummy_grad(x, y) ** 2) for x, y in data)
  np.testing.assert_allclose(sem.irmv1_linear_penalty(phi, moments), by_autodiff, rtol=1e-4)
  theta = phi @ jnp.ones(10)
  closed = 4.0 / 10 * jnp.sum((jnp.einsum("ij,ejk,k->ei", phi.T, moments.gram, theta)
                                - moments.cross @ phi) ** 2)
  np.testing.assert_allclose(sem.irmv1_linear_penalty(phi, moments), closed, rtol=1e-4)


def test_rank_one_feature_map_gives_the_scalar_penalty_and_is_the_minimum():
  # For fixed θ = Φ 1, ‖Φᵀ g‖² ≥ (1ᵀ Φᵀ g)²/D = (θᵀ g)²/D, with equality at Φ = θ 1ᵀ/D:
  # profiled over Φ, the vector-dummy penalty is the scalar-dummy one divided by D².
  params = sem.sem_init(jax.random.key(4), "FOU")
  x, y = sem.sem_sample(jax.random.key(5), params, 2.0, 500)
  moments = _stack([sem.domain_moments(x, y)] * 2)
  theta = jax.random.normal(jax.random.key(6), (10,))
  scalar = objectives.irmv1_penalty(lambda p, t: (p - t) ** 2, x @ theta, y)
  np.testing.assert_allclose(_scalar_penalty(theta, moments) / 2, scalar, rtol=1e-3)
  rank_one = sem.irmv1_linear_penalty(jnp.outer(theta, jnp.ones(10)) / 10, moments)
  np.testing.assert_allclose(rank_one, _scalar_penalty(theta, moments) / 100, rtol=1e-4)
  for k in range(5):  # other Φ with the same θ = Φ 1 have a larger penalty
    noise = jax.random.normal(jax.random.key(7 + k), (10, 10))
    phi = jnp.outer(theta, jnp.ones(10)) / 10 + noise - noise.mean(1, keepdims=True)
    np.testing.assert_allclose(phi @ jnp.ones(10), theta, atol=1e-5)
    assert sem.irmv1_linear_penalty(phi, moments) > rank_one


def test_one_cause_one_effect_on_paper():
  # x ~ N(0, 1), Y = x + N(0, 1), z = Y + N(0, e²), domains e = 0.5 and 2. With ŷ = αx + βz,
  # θᵀ(G_e θ - c_e) = (α+β)² + β²(1 + e²) - α - 2β: its difference between the domains is
  # β²(e_1² - e_2²), so the penalty vanishes only where β = 0, and then α(α - 1) = 0:
  # the zeros are exactly (0, 0) and the causal (1, 0).
  def moments(e):
    return sem.DomainMoments(jnp.array([[1.0, 1.0], [1.0, 2.0 + e ** 2]]), jnp.array([1.0, 2.0]),
                             jnp.asarray(2.0), jnp.asarray(2.0))
  two = _stack([moments(0.5), moments(2.0)])
  grid = jnp.stack(jnp.meshgrid(jnp.linspace(-2, 2, 201), jnp.linspace(-2, 2, 201)), -1)
  pen = jax.vmap(jax.vmap(lambda th: _scalar_penalty(th, two)))(grid).ravel()
  pts = grid.reshape(-1, 2)
  # The two domains' zero curves are tangent at the zeros (their difference is second order
  # in β), so the penalty is small but positive along a thin valley around them.
  near_zero = np.asarray(pts[pen < 1e-6])
  dist = np.minimum(np.linalg.norm(near_zero - [0, 0], axis=1),
                    np.linalg.norm(near_zero - [1, 0], axis=1))
  assert len(near_zero) >= 2 and np.all(dist < 0.03)
  assert float(_scalar_penalty(jnp.array([1.0, 0.0]), two)) == 0.0
  # ... and IRMv1 (penalty alone, Φ from I) finds the causal one.
  fit = sem.fit_penalized(two, 0.0, method="irm", learning_rate=1e-2, num_steps=20_000)
  np.testing.assert_allclose(fit.coefficients, [1.0, 0.0], atol=0.01)


def test_copy_sem_has_a_non_causal_zero_that_irm_finds():
  # The same SEM with d causes and d effects, every effect a copy of Y, causes with
  # variance e². For θ = (α 1, b 1) the residual is (α + db - 1) Σx + (db - 1) N_y + b e Σm,
  # and θᵀ(G_e θ - c_e) = d [e² ((α + db - 1)(α + db) + b²) + b (db - 1)]. It is zero in
  # two domains iff b (db - 1) = 0 and (α + db - 1)(α + db) + b² = 0: besides 0 and the
  # causal (1, 0), b = 1/d with α² + α + 1/d² = 0, real for d ≥ 2. At d = 1 (the problem
  # above with Var x = e²) there is none.
  d = 5
  moments = _stack([_copy_sem(d, 0.2), _copy_sem(d, 2.0)])
  alpha = (-1 + np.sqrt(1 - 4 / d ** 2)) / 2
  non_causal = jnp.concatenate([alpha * jnp.ones(d), jnp.ones(d) / d])
  causal = jnp.concatenate([jnp.ones(d), jnp.zeros(d)])
  assert float(_scalar_penalty(non_causal, moments)) < 1e-9
  assert float(_scalar_penalty(causal, moments)) == 0.0
  assert float(sem.irmv1_linear_penalty(jnp.outer(non_causal, jnp.ones(2 * d)) / (2 * d),
                                        moments)) < 1e-10
  # IRMv1 with the penalty alone, from Φ = I, converges to the non-causal zero.
  found = sem.fit_penalized(moments, 0.0, method="irm", learning_rate=1e-3,
                            num_steps=20_000).coefficients
  np.testing.assert_allclose(found, non_causal, atol=0.015)
  # Along the line from the causal solution to the one found, the penalty profiled over Φ
  # (the scalar penalty / D², see above) rises from 0 to a barrier and falls back: two
  # separate basins. The non-causal zero's risks are unequal, e² (d α² + 1/d); the causal
  # solution's are both 1.
  ts = jnp.linspace(0.0, 1.0, 21)
  line = jax.vmap(lambda t: _scalar_penalty((1 - t) * causal + t * found, moments))(ts)
  line = np.asarray(line) / (2 * d) ** 2
  assert line[0] == 0.0 and line[-1] < 0.05 * line.max()
  assert np.argmax(line) in range(5, 16) and np.all(line[3:18] > line[-1])
  risks = jax.vmap(sem.quadratic_risk, in_axes=(None, 0))(non_causal, moments)
  np.testing.assert_allclose(risks, np.array([0.04, 4.0]) * (d * alpha ** 2 + 1 / d), rtol=1e-4)


def test_thesis_sem_irm_reaches_the_causal_solution():
  # On the SEM as the thesis defines it (appendix 11.1.9.2), the same descent from Φ = I
  # lands on the causal solution.
  params = sem.sem_init(jax.random.key(20), "FOU")
  moments = _stack([sem.population_moments(params, e) for e in (0.2, 2.0)])
  fit = sem.fit_penalized(moments, 0.0, method="irm", learning_rate=1e-2, num_steps=5000)
  causal, noncausal, _ = sem.coefficient_errors(fit.coefficients, params)
  assert causal < 1e-6 and noncausal < 1e-6
