"""Closed forms of the REx toy examples (thesis appendices 11.1.4 and 11.1.5)."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.rex import toy

PARAMS = toy.SixDParams(a=0.1, b=0.05, c=0.2, d=0.25, e=0.15, f=0.25, k=0.1)


def test_six_d_domains_are_distributions_with_the_stated_shifts():
  dom = np.asarray(toy.six_d_domains(PARAMS))
  np.testing.assert_allclose(dom.sum(1), 1.0, atol=1e-6)
  # P(Y | X = 0, 1) is the same in every domain; P(Y | X = 2) differs between e1 and e2.
  cond = dom.reshape(3, 3, 2)
  cond = cond[..., 1] / cond.sum(-1)
  np.testing.assert_allclose(cond[:, :2], cond[:1, :2].repeat(3, 0), atol=1e-6)
  assert abs(cond[0, 2] - cond[1, 2]) > 0.05


@pytest.mark.parametrize("method", toy.SIX_D_METHODS)
def test_six_d_solutions_match_closed_forms(method):
  closed = toy.six_d_closed_forms(PARAMS)[method]
  solved = toy.six_d_solve(PARAMS, method, num_steps=3000)
  np.testing.assert_allclose(solved.p_y1, closed.p_y1, atol=5e-3)
  np.testing.assert_allclose(solved.capacity, closed.capacity, atol=5e-3)


def test_six_d_closed_form_values():
  cf = toy.six_d_closed_forms(PARAMS)
  a, b, c, d, e, f, k = PARAMS
  assert cf["erm"].p_y1[2] == pytest.approx((3 * f + k) / (3 * e + 3 * f))
  assert cf["irm"].p_y1[2] == cf["rex"].p_y1[2] == 0.5
  # Equal conditional entropies give REx an exactly equal split of X = 0 / X = 1.
  sym = toy.SixDParams(a=0.1, b=0.05, c=0.3, d=0.15, e=0.15, f=0.25, k=0.1)
  cap = toy.six_d_closed_forms(sym)["rex"].capacity
  assert cap[0] == pytest.approx(cap[1])


@pytest.mark.parametrize("q1,q2", [(0.1, 0.2), (0.2, 0.5), (0.5, 0.8), (0.1, 0.5)])
def test_covariate_shift_solutions(q1, q2):
  u, v = 2.0, 4.0
  omega = u / (u + v)
  solved = toy.covariate_shift_solve(q1, q2, u=u, v=v, beta=1e4)
  closed = toy.covariate_shift_closed_forms(q1, q2, u=u, v=v, beta=1e4)
  tol = 2e-5
  assert float(solved.minimax) == pytest.approx(omega, abs=tol)
  assert float(solved.erm) == pytest.approx(closed["erm"], abs=tol)
  assert closed["erm"] in (0.0, 1.0)
  assert float(solved.risk_interpolation) == pytest.approx(closed["risk_interpolation"],
                                                           abs=tol)
  assert float(solved.vrex) == pytest.approx(closed["vrex"], abs=tol)
  assert float(solved.vrex) == pytest.approx(omega, abs=3e-3)  # large β: the minimax point
  # R_q(ω) = uv/(u+v) for every q, and it is the smallest worst-case risk.
  np.testing.assert_allclose(toy.covariate_shift_risk(omega, jnp.linspace(0, 1, 5), u, v),
                             u * v / (u + v), rtol=1e-6)
  assert np.all(np.asarray(solved.worst_case_risk) >= u * v / (u + v) - 1e-4)


def test_bad_inputs_name_the_argument():
  with pytest.raises(ValueError, match="q1, q2"):
    toy.covariate_shift_solve(0.5, 0.2)
  with pytest.raises(ValueError, match="u"):
    toy.covariate_shift_solve(0.1, 0.2, u=-1.0)
  with pytest.raises(ValueError, match="beta"):
    toy.covariate_shift_solve(0.1, 0.2, beta=-1.0)
  with pytest.raises(ValueError, match="method"):
    toy.six_d_solve(PARAMS, "dro")
  with pytest.raises(ValueError, match="params.k"):
    toy.six_d_domains(PARAMS._replace(k=0.5))
  with pytest.raises(ValueError, match="sum to 1"):
    toy.six_d_domains(PARAMS._replace(a=0.5))
