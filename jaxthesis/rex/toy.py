"""Toy illustrations of Risk Extrapolation (thesis appendices 11.1.4 and 11.1.5).

* `six_d_*`: the discrete example of 11.1.4. X ∈ {0, 1, 2}, Y ∈ {0, 1}; a domain is a
  point `(P(0,0), P(0,1), P(1,0), P(1,1), P(2,0), P(2,1))` of the 6-d simplex, and the three
  training domains are `(a,b,c,d,e,f)`, `(a,b,c,d,e-k,f+k)` and
  `(2a, 2b, c(1-ρ), d(1-ρ), e, f)` with `ρ = (a+b)/(c+d)`.
* `covariate_shift_*`: the COSTLY/CHEAP example of 11.1.5, `R_q(p) = (1-p)(1-q)u + p q v`.

Solutions are computed numerically from the objectives in `jaxthesis.rex.objectives`
(gradient descent in a `lax.scan`, or exhaustive search over a grid for the 1-d problem)
and returned beside their closed forms.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks
from jaxthesis.rex import objectives
from jaxthesis.typing import Array, ArrayLike

SIX_D_METHODS = ("erm", "irm", "rex")


# ------------------------------------------------------------------- 11.1.4, the 6-D example


class SixDParams(NamedTuple):
  """The free parameters of the three domains of appendix 11.1.4."""
  a: float
  b: float
  c: float
  d: float
  e: float
  f: float
  k: float


class SixDSolution(NamedTuple):
  """A model of the 6-d example: `P̂(Y=1|X=x)` and the capacity split κ over X."""
  p_y1: Array     # f32[3], P̂(Y = 1 | X = x) for x = 0, 1, 2
  capacity: Array  # f32[3], κ_x, on the simplex


def six_d_domains(params: SixDParams) -> Array:
  """The three domains of 11.1.4 as rows `[P(x=0,y=0), P(0,1), P(1,0), P(1,1), P(2,0), P(2,1)]`.

  Raises:
    ValueError: if an entry is negative, the first domain does not sum to 1, or k or ρ
      make a probability negative.
  """
  if not isinstance(params, SixDParams):
    raise TypeError(f"params must be SixDParams, got {type(params).__name__}")
  for name, value in params._asdict().items():
    if not np.isfinite(value) or value < 0:
      raise ValueError(f"params.{name} must be a finite number >= 0, got {value}")
  a, b, c, d, e, f, k = params
  if abs(a + b + c + d + e + f - 1.0) > 1e-6:
    raise ValueError(f"params a..f must sum to 1 (a distribution), got {a + b + c + d + e + f}")
  if k > e:
    raise ValueError(f"params.k must be <= e = {e} so that P(X=2, Y=0) = e - k >= 0, got {k}")
  if c + d <= 0 or a + b > c + d:
    raise ValueError(f"params need a + b <= c + d (got {a + b} > {c + d}) so that the third "
                     "domain's P(X=1) = c + d - (a + b) is >= 0")
  rho = (a + b) / (c + d)
  return jnp.asarray([[a, b, c, d, e, f],
                      [a, b, c, d, e - k, f + k],
                      [2 * a, 2 * b, c * (1 - rho), d * (1 - rho), e, f]], jnp.float32)


def _per_type_loss(logits: Array, capacity_logits: Array) -> tuple[Array, Array, Array]:
  """Per cell (x, y): the log loss of P̂(y|x) plus the capacity cost `-log κ_x`."""
  x_of_cell = jnp.array([0, 0, 1, 1, 2, 2])
  labels = jnp.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
  cell_logits = logits[x_of_cell]
  capacity_cost = -jax.nn.log_softmax(capacity_logits)[x_of_cell]
  return cell_logits, labels, capacity_cost


def _six_d_domain_risks(logits: Array, capacity_logits: Array, domains: Array) -> Array:
  cell_logits, labels, capacity_cost = _per_type_loss(logits, capacity_logits)
  m = domains.shape[0]
  log_loss = objectives.domain_risks(objectives.binary_cross_entropy,
                                     jnp.broadcast_to(cell_logits, (m, 6)),
                                     jnp.broadcast_to(labels, (m, 6)), mask=domains)
  return log_loss + domains @ capacity_cost


def _six_d_irm_penalty(logits: Array, domains: Array) -> Array:
  """IRMv1 with a fixed vector classifier w = 1 on the one-hot features of X.

  `Σ_e ‖∇_{w | w=1} R_e(w_x z_x)‖²`: one invariance condition per input type, whose sum
  over types is the scalar-dummy derivative of `objectives.irmv1_penalty`.
  """
  cell_logits, labels, _ = _per_type_loss(logits, jnp.zeros(3))
  x_of_cell = jnp.array([0, 0, 1, 1, 2, 2])

  def domain_grad(weights):
    risk = lambda w: objectives.masked_mean(
        objectives.binary_cross_entropy(w[x_of_cell] * cell_logits, labels), weights)
    return jax.grad(risk)(jnp.ones(3))

  return jnp.sum(jax.vmap(domain_grad)(domains) ** 2)


def six_d_objective(method: str, logits: Array, capacity_logits: Array, domains: Array,
                    penalty_weight: ArrayLike) -> Array:
  """The training objective of each method on the 6-d example.

  Each domain's risk is `R_e = Σ_{x,y} P_e(x,y) [-log P̂(y|x) - log κ_x]`: the log loss
  plus the cost of the capacity κ_x that the model gives to inputs of type x (a budget on
  the simplex; ERM's optimum is the pooled frequency of x, by Gibbs' inequality).

  * 'erm': `Σ_e R_e` (Eq. 5.3).
  * 'irm': `Σ_e R_e + λ Σ_e ‖∇_{w|w=1} R_e‖²`, IRMv1 on the label predictor with a
    fixed vector classifier w = 1 over the input types (as in `sem.irmv1_linear_penalty`).
  * 'rex': V-REx, `Σ_e R_e + λ Var(R_e)` (Eq. 5.8).
  """
  _checks.check_choice("method", method, SIX_D_METHODS)
  for name, value in (("logits", logits), ("capacity_logits", capacity_logits)):
    if _checks.shape_of(value) != (3,):
      raise ValueError(f"{name} must have shape (3,) (one entry per input type), got "
                       f"{_checks.shape_of(value)}")
    _checks.check_floating(name, value)
  _checks.check_rank("domains", domains, 2)
  if _checks.shape_of(domains)[1] != 6:
    raise ValueError(f"domains must be [m, 6] (six_d_domains), got {_checks.shape_of(domains)}")
  _checks.check_scalar("penalty_weight", penalty_weight)
  logits, capacity_logits = jnp.asarray(logits), jnp.asarray(capacity_logits)
  domains = jnp.asarray(domains, logits.dtype)  # a probability table: may be integer counts
  risks = _six_d_domain_risks(logits, capacity_logits, domains)
  if method == "erm":
    return objectives.erm(risks) * risks.shape[0]
  if method == "irm":
    return jnp.sum(risks) + penalty_weight * _six_d_irm_penalty(logits, domains)
  return objectives.vrex(risks, penalty_weight)


def six_d_solve(params: SixDParams, method: str, *, penalty_weight: float = 1e4,
                num_steps: int = 6000, learning_rate: float = 0.05) -> SixDSolution:
  """Minimizes `six_d_objective` with Adam (a `lax.scan`) from the uniform model, with
  penalty weight 1 for the first quarter of the steps and λ after.

  Args:
    params: the domains' parameters.
    method: 'erm', 'irm' or 'rex'.
    penalty_weight: λ ≥ 0 of IRM and V-REx (ignored by ERM); large λ approaches the exact
      constraints (IRMv1 = 0, equal risks).
    num_steps: Adam steps.
    learning_rate: Adam step size.

  Returns:
    `SixDSolution`.
  """
  _checks.check_choice("method", method, SIX_D_METHODS)
  domains = six_d_domains(params)
  _checks.check_scalar("penalty_weight", penalty_weight)
  _checks.check_nonnegative("penalty_weight", penalty_weight)
  _checks.check_scalar("learning_rate", learning_rate, positive=True)
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
  return _six_d_solve(domains, jnp.asarray(penalty_weight, jnp.float32),
                      jnp.asarray(learning_rate, jnp.float32), method=method,
                      num_steps=num_steps)


def _six_d_solve_impl(domains, penalty_weight, learning_rate, *, method, num_steps):
  optimizer = optax.adam(learning_rate)
  # ERM first (weight 1), then λ (objectives.penalty_weight_at): from the uniform start
  # the IRMv1 penalty is already zero (all logits 0), so without this warm-up IRM stays put.
  def scaled(theta, weight):
    loss = six_d_objective(method, theta[0], theta[1], domains, weight)
    return loss / jnp.maximum(weight, 1.0)

  def step(carry, step_index):
    theta, state = carry
    weight = objectives.penalty_weight_at(step_index, penalty_weight, num_steps // 4)
    updates, state = optimizer.update(jax.grad(scaled)(theta, weight), state, theta)
    return (optax.apply_updates(theta, updates), state), None

  theta = (jnp.zeros(3), jnp.zeros(3))
  (theta, _), _ = jax.lax.scan(step, (theta, optimizer.init(theta)), jnp.arange(num_steps))
  return SixDSolution(p_y1=jax.nn.sigmoid(theta[0]), capacity=jax.nn.softmax(theta[1]))


_six_d_solve = jax.jit(_six_d_solve_impl, static_argnames=("method", "num_steps"))


def six_d_closed_forms(params: SixDParams) -> dict[str, SixDSolution]:
  """The solutions stated in 11.1.4 (equal domain sizes).

  All methods predict `P̂(Y=1|X=0) = b/(a+b)` and `P̂(Y=1|X=1) = d/(c+d)` (invariant in
  all three domains). For X = 2, ERM pools: `(3f + k)/(3e + 3f)`; IRM and REx predict 1/2.
  ERM and IRM split capacity by the pooled frequency P̄(x) of X. REx must make
  `R_1 = R_3`, i.e. (since `R_3 - R_1 = (a+b)(L_0 - L_1)`) equal risk
  `L_x = H(Y|X=x) - log κ_x` on X = 0 and X = 1: "split your capacity equally". Hence
  `κ_0 / κ_1 = exp(H_0 - H_1)` (κ_0 = κ_1 when the conditional entropies match), while
  κ_0 + κ_1 = P̄(0) + P̄(1) and κ_2 = P̄(2) as for ERM.
  """
  domains = np.asarray(six_d_domains(params), np.float64)
  a, b, c, d, e, f, k = params
  pooled_x = domains.reshape(3, 3, 2).sum(axis=2).mean(axis=0)
  p01 = [b / (a + b), d / (c + d)]
  erm = SixDSolution(p_y1=np.array(p01 + [(3 * f + k) / (3 * e + 3 * f)]), capacity=pooled_x)
  irm = SixDSolution(p_y1=np.array(p01 + [0.5]), capacity=pooled_x)
  entropy = lambda p: -(p * np.log(p) + (1 - p) * np.log(1 - p)) if 0 < p < 1 else 0.0
  ratio = np.exp(entropy(p01[0]) - entropy(p01[1]))
  share = pooled_x[0] + pooled_x[1]
  rex = SixDSolution(p_y1=np.array(p01 + [0.5]),
                     capacity=np.array([share * ratio / (1 + ratio), share / (1 + ratio),
                                        pooled_x[2]]))
  return {"erm": erm, "irm": irm, "rex": rex}


# --------------------------------------------------------- 11.1.5, covariate shift example


class CovariateShiftSolution(NamedTuple):
  """Probability p of predicting COSTLY chosen by each criterion, and its worst-case risk."""
  erm: Array
  risk_interpolation: Array
  vrex: Array
  minimax: Array
  worst_case_risk: Array  # f32[4], max_q R_q(p) of the four solutions above, in that order


def covariate_shift_risk(p: ArrayLike, q: ArrayLike, u: ArrayLike = 2.0,
                         v: ArrayLike = 4.0) -> Array:
  """`R_q(p) = (1 - p)(1 - q) u + p q v` (appendix 11.1.5); broadcasts over p and q.

  p and q are floating arrays or Python numbers (integer arrays: TypeError).
  """
  for name, value in (("p", p), ("q", q), ("u", u), ("v", v)):
    _checks.check_differentiable(name, value)
  p, q = jnp.asarray(p, jnp.result_type(float)), jnp.asarray(q, jnp.result_type(float))
  return (1.0 - p) * (1.0 - q) * u + p * q * v


def _check_costs(u, v) -> None:
  _checks.check_scalar("u", u, positive=True)
  _checks.check_scalar("v", v, positive=True)


def _check_q_pair(q1, q2) -> None:
  _checks.check_scalar("q1", q1)
  _checks.check_scalar("q2", q2)
  if not 0.0 <= float(q1) < float(q2) <= 1.0:
    raise ValueError(f"q1, q2 must satisfy 0 <= q1 < q2 <= 1, got q1={q1}, q2={q2}")


def covariate_shift_solve(q1: float, q2: float, *, u: float = 2.0, v: float = 4.0,
                          beta: float = 1e4, grid_size: int = 100_001) -> CovariateShiftSolution:
  """Each criterion's minimizer over p ∈ [0, 1], by exhaustive search on a grid.

  ERM minimizes `R_q1 + R_q2` (`objectives.erm`), risk interpolation `max(R_q1, R_q2)`
  (`objectives.risk_interpolation`), V-REx `R_q1 + R_q2 + β Var` (`objectives.vrex`), and
  the minimax criterion `max_{q ∈ [0, 1]} R_q(p) = max(R_0(p), R_1(p))` (R is linear in q).

  Args:
    q1, q2: COSTLY probabilities of the two training domains, q1 < q2.
    u, v: the costs of the two mistakes (2 and 4 in the thesis).
    beta: V-REx penalty weight.
    grid_size: number of grid points on [0, 1]; the solutions are exact to 1/(grid_size-1).
  """
  _check_q_pair(q1, q2)
  _check_costs(u, v)
  _checks.check_scalar("beta", beta)
  _checks.check_nonnegative("beta", beta)
  if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
    raise ValueError(f"grid_size must be an int >= 2, got {grid_size!r}")
  return _covariate_shift_solve(jnp.asarray([q1, q2], jnp.float32), jnp.float32(u),
                                jnp.float32(v), jnp.float32(beta), grid_size=grid_size)


def _covariate_shift_solve_impl(qs, u, v, beta, *, grid_size):
  grid = jnp.linspace(0.0, 1.0, grid_size)
  risks = jax.vmap(lambda p: covariate_shift_risk(p, qs, u, v))(grid)  # [G, 2]
  worst = jnp.maximum(covariate_shift_risk(grid, 0.0, u, v), covariate_shift_risk(grid, 1.0, u, v))
  criteria = {
      "erm": jax.vmap(objectives.erm)(risks),
      "risk_interpolation": jax.vmap(objectives.risk_interpolation)(risks),
      "vrex": jax.vmap(lambda r: objectives.vrex(r, beta))(risks),
      "minimax": worst,
  }
  best = {name: grid[jnp.argmin(values)] for name, values in criteria.items()}
  worst_at = lambda p: jnp.maximum(covariate_shift_risk(p, 0.0, u, v),
                                   covariate_shift_risk(p, 1.0, u, v))
  return CovariateShiftSolution(**best, worst_case_risk=jnp.stack(
      [worst_at(best[k]) for k in ("erm", "risk_interpolation", "vrex", "minimax")]))


_covariate_shift_solve = jax.jit(_covariate_shift_solve_impl, static_argnames=("grid_size",))


def covariate_shift_closed_forms(q1: float, q2: float, *, u: float = 2.0, v: float = 4.0,
                                 beta: float | None = None) -> dict[str, float]:
  """The solutions of appendix 11.1.5, with ω = u / (u + v).

  * minimax: p = ω, with `R_q(ω) = uv/(u+v)` for every q.
  * ERM: pools to q̄ = (q1 + q2)/2: p = 0 if q̄ > ω, 1 if q̄ < ω (any p if q̄ = ω).
  * RI: p = 0 if q1, q2 > ω; 1 if q1, q2 < ω; ω if q1 < ω < q2.
  * V-REx: `R_q1 = R_q2` only at p = ω; with finite β the minimizer of the quadratic
    `R_q1 + R_q2 + β (q2-q1)²(u - p(u+v))²/4` is `ω - 2 s / (β (q2-q1)² (u+v)²)`, clipped to
    [0, 1], where `s = (q1+q2) v - (2-q1-q2) u` is the slope of `R_q1 + R_q2`.
  """
  _check_q_pair(q1, q2)
  _check_costs(u, v)
  omega = u / (u + v)
  q_bar = (q1 + q2) / 2
  erm = 0.0 if q_bar > omega else 1.0
  if q1 > omega and q2 > omega:
    ri = 0.0
  elif q1 < omega and q2 < omega:
    ri = 1.0
  else:
    ri = omega
  out = {"omega": omega, "minimax": omega, "minimax_risk": u * v / (u + v), "erm": erm,
         "risk_interpolation": ri, "vrex_limit": omega}
  if beta is not None:
    _checks.check_scalar("beta", beta, positive=True)
    slope = (q1 + q2) * v - (2 - q1 - q2) * u
    out["vrex"] = float(np.clip(omega - 2 * slope / (beta * (q2 - q1) ** 2 * (u + v) ** 2),
                                0.0, 1.0))
  return out
