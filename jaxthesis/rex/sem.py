"""Linear structural equation models of the IRM synthetic suite (thesis appendix 11.1.9.2).

The thesis runs the SEM tasks of Arjovsky et al. (2019, section 5.1, Fig. 3) "with the same
experimental settings ... except we only run 7 trials" and reports Table 11.II. With d = 5
causes x (X1 in the thesis), a d-vector y whose sum is the target Y, d effects z (X2) and a
d-dimensional hidden confounder h, domain e draws

  h = e N_h,             x = h W_hx + e N_x
  y = x W_xy + h W_hy + σ_y N_y,      z = y W_yz + h W_hz + σ_z N_z,      Y = y · 1_d

with all N standard normal (n × d). Inputs are `[x, z] S`.

* F (fully observed): W_hx = I, W_hy = W_hz = 0, so h only adds variance to x
  (Var x = 2e²) and confounds nothing. P (partially observed): W_hx, W_hy, W_hz have
  i.i.d. N(0, 1/(2d)²) entries (`randn / dim` with dim = 2d inputs).
* O (domain-homoskedastic): (σ_y, σ_z) = (1, e): only the effects' noise changes.
  E (domain-heteroskedastic): (σ_y, σ_z) = (e, 1): the target noise changes.
* U: S = I. S (scrambled): S a random orthogonal 2d × 2d matrix.
* The chain weights W_xy, W_yz: 'gaussian', i.i.d. N(0, 1/(2d)²) entries (the default of
  the thesis authors' SEM script), or 'ones', W_xy = W_yz = I (Arjovsky et al.).
* Domains e ∈ {0.2, 2, 5}, 1,000 samples each. IRM and V-REx train on the first two; the
  last one selects the loss weighting by its squared error. ERM is least squares on all
  domains (as in Arjovsky et al.'s code).

The invariant (causal) predictor is `Y ≈ [x, z] (W_xy 1, 0)`; in input coordinates its
coefficients are `θ* = Sᵀ (W_xy 1, 0)`.

Training follows the protocol of the same code base: Adam (step 1e-3, 10⁵ steps, no
schedule) on `ρ Σ_e R_e + (1 - ρ) P` for ρ in {0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1} (ρ = 0 is
the penalty alone; ρ = 1/(1 + λ) for a penalty weight λ). IRMv1 trains a matrix Φ from
the identity with a fixed classifier w = 1 and penalty `Σ_e mean_i (∂R_e(Φw)/∂w_i)²`;
V-REx trains the coefficient vector θ from 1 with the pairwise penalty `Σ_{e<f}(R_e - R_f)²`
(appendix 11.1.8.2.3; `(R_1 - R_2)²` for two domains).

Every task is one program with different flag values, so tasks, repetitions and loss
weightings are vmap axes. The model is linear and the loss is the squared error, so each
domain enters training through its second moments (`R_e(θ) = θᵀ G_e θ - 2 θᵀ c_e + s_e`),
the exact empirical risk of its samples.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike, PRNGKey

TASKS = ("FOU", "FOS", "FEU", "FES", "POU", "POS", "PEU", "PES")
DOMAIN_SCALES = (0.2, 2.0, 5.0)
CHAIN_WEIGHTS = ("gaussian", "ones")
PENALIZED_METHODS = ("irm", "vrex", "vrex_var_baseline")
METHODS = ("erm",) + PENALIZED_METHODS
# ρ of `ρ Σ_e R_e + (1 - ρ) P`; ρ = 0 trains on the penalty alone.
RISK_WEIGHTS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


class SEMTask(NamedTuple):
  """The three switches that name a task, e.g. 'PES' = confounded, heteroskedastic,
  scrambled."""
  confounded: bool       # P: a hidden confounder h feeds x, y and z (F: fully observed)
  heteroskedastic: bool  # E: the target noise scales with the domain (O: the effects' noise)
  scrambled: bool        # S: inputs multiplied by a random orthogonal matrix (U: not)


class SEMParams(NamedTuple):
  """One draw of the SEM's fixed parameters; the flag is a float array so tasks vmap."""
  cause_to_target: Array   # f32[d, d], W_xy
  target_to_effect: Array  # f32[d, d], W_yz
  hidden_to_x: Array       # f32[d, d], W_hx (I when fully observed)
  hidden_to_y: Array       # f32[d, d], W_hy (0 when fully observed)
  hidden_to_z: Array       # f32[d, d], W_hz (0 when fully observed)
  scramble: Array          # f32[2d, 2d], orthogonal S (identity when unscrambled)
  heteroskedastic: Array   # f32[], 1.0 for the E tasks


class DomainMoments(NamedTuple):
  """Sufficient statistics of one domain for linear least squares (leading axes allowed)."""
  gram: Array        # f32[..., D, D], Xᵀ X / n
  cross: Array       # f32[..., D], Xᵀ Y / n
  target_sq: Array   # f32[...], Yᵀ Y / n
  target_var: Array  # f32[...], the variance of Y


class FitResult(NamedTuple):
  """A trained linear predictor and its end-of-training diagnostics."""
  coefficients: Array  # f32[D], θ in the (possibly scrambled) input coordinates
  risks: Array         # f32[m], training risks R_e at the end
  penalty: Array       # f32[], the method's penalty at the end


class SuiteResult(NamedTuple):
  """Outcome of `run_suite`; leading axes [task, rep] and then [method] = `METHODS`."""
  causal_error: Array          # f32[T, R, M], mean over x of (S θ̂ - W_xy 1)²
  noncausal_error: Array       # f32[T, R, M], mean over z of (S θ̂)²
  table_causal_error: Array    # f32[T, R, M], Table 11.II's: over entries where θ* ≠ 0
  table_noncausal_error: Array  # f32[T, R, M], Table 11.II's: over entries where θ* = 0
  coefficients: Array          # f32[T, R, M, 2d], S θ̂: estimates in [x, z] coordinates
  true_coefficients: Array     # f32[T, R, 2d], (W_xy 1, 0)
  selected_risk_weight: Array  # f32[T, R, M], the ρ chosen on the last domain (1 for ERM)
  validation_risk: Array       # f32[T, R, M-1, K], last-domain risk of every candidate ρ


# --------------------------------------------------------------------------- validation


def parse_task(name: str) -> SEMTask:
  """'FOU' -> SEMTask(confounded=False, heteroskedastic=False, scrambled=False)."""
  if not isinstance(name, str):
    raise TypeError(f"task must be a str such as 'FOU', got {type(name).__name__}")
  _checks.check_choice("task", name, TASKS)
  return SEMTask(confounded=name[0] == "P", heteroskedastic=name[1] == "E",
                 scrambled=name[2] == "S")


def _check_positive_int(name: str, value, minimum: int = 1) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(value).__name__}")
  if value < minimum:
    raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_key(name: str, key) -> None:
  if not isinstance(key, jax.Array):
    raise TypeError(f"{name} must be a jax PRNG key, got {type(key).__name__}")
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.ndim != 0:
      raise ValueError(f"{name} must be a single key, got shape {key.shape}")
  elif key.shape != (2,) or key.dtype != jnp.uint32:
    raise ValueError(f"{name} must be a single PRNG key (uint32[2] or a typed key), got "
                     f"{key.dtype}{list(key.shape)}")


def _check_risk_weights(name: str, weights) -> None:
  _checks.check_rank(name, weights, 1)
  _checks.check_nonempty(name, weights)
  _checks.check_nonnegative(name, weights)
  if np.any(np.asarray(weights) > 1):
    raise ValueError(f"{name} must lie in [0, 1] (ρ of ρ ΣR + (1 - ρ) P), got "
                     f"{np.asarray(weights).tolist()}")


def _check_params(params) -> None:
  if not isinstance(params, SEMParams):
    raise TypeError(f"params must be SEMParams from sem_init, got {type(params).__name__}")


# ---------------------------------------------------------------------------- generator


def scramble_matrix(key: PRNGKey, size: int) -> Array:
  """A Haar-random orthogonal matrix: Q of the QR factorization of a Gaussian matrix, with
  the signs fixed by diag(R) > 0 so that Q is uniformly distributed."""
  _check_key("key", key)
  _check_positive_int("size", size)
  return _scramble_matrix(key, size)


def _scramble_matrix(key, size):
  q, r = jnp.linalg.qr(jax.random.normal(key, (size, size)))
  return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)[None, :]


def _sem_init(key: PRNGKey, confounded: Array, heteroskedastic: Array, scrambled: Array,
              gaussian_chain: Array, dim: int) -> SEMParams:
  k_xy, k_yz, k_hx, k_hy, k_hz, k_s = jax.random.split(key, 6)
  scale = 1.0 / (2 * dim)  # randn / dim with dim = 2d inputs
  eye, zero = jnp.eye(dim), jnp.zeros((dim, dim))
  draw = lambda k: scale * jax.random.normal(k, (dim, dim))
  pick = lambda flag, a, b: jnp.where(flag > 0, a, b)
  return SEMParams(
      cause_to_target=pick(gaussian_chain, draw(k_xy), eye),
      target_to_effect=pick(gaussian_chain, draw(k_yz), eye),
      hidden_to_x=pick(confounded, draw(k_hx), eye),
      hidden_to_y=pick(confounded, draw(k_hy), zero),
      hidden_to_z=pick(confounded, draw(k_hz), zero),
      scramble=pick(scrambled, _scramble_matrix(k_s, 2 * dim), jnp.eye(2 * dim)),
      heteroskedastic=jnp.asarray(heteroskedastic, jnp.float32))


def sem_init(key: PRNGKey, task: str, dim: int = 5,
             chain_weights: str = "gaussian") -> SEMParams:
  """Draws the fixed parameters (chain, confounder and scrambling matrices) of one SEM.

  Args:
    key: PRNG key; one per repetition.
    task: one of `TASKS`, e.g. 'POS'.
    dim: d, the number of causes (= effects = confounders); 5 in the thesis.
    chain_weights: 'gaussian' (W_xy, W_yz with N(0, 1/(2d)²) entries) or 'ones' (I).

  Returns:
    `SEMParams`. Every matrix is drawn whatever the task, so a key gives the same chain
    weights and scrambling for every task.
  """
  _check_key("key", key)
  spec = parse_task(task)
  _check_positive_int("dim", dim)
  _checks.check_choice("chain_weights", chain_weights, CHAIN_WEIGHTS)
  return _sem_init(key, float(spec.confounded), float(spec.heteroskedastic),
                   float(spec.scrambled), float(chain_weights == "gaussian"), dim)


def _noise_scales(params: SEMParams, scale: Array) -> tuple[Array, Array]:
  """(σ_y, σ_z): (e, 1) in the heteroskedastic tasks, (1, e) in the homoskedastic ones."""
  hetero = params.heteroskedastic > 0
  return jnp.where(hetero, scale, 1.0), jnp.where(hetero, 1.0, scale)


def _sem_sample(key: PRNGKey, params: SEMParams, scale: Array,
                num_samples: int) -> tuple[Array, Array]:
  dim = params.cause_to_target.shape[0]
  k_h, k_x, k_y, k_z = jax.random.split(key, 4)
  noise = lambda k: jax.random.normal(k, (num_samples, dim))
  sigma_y, sigma_z = _noise_scales(params, scale)
  hidden = scale * noise(k_h)
  causes = hidden @ params.hidden_to_x + scale * noise(k_x)
  target_parts = causes @ params.cause_to_target + hidden @ params.hidden_to_y + sigma_y * noise(k_y)
  effects = (target_parts @ params.target_to_effect + hidden @ params.hidden_to_z
             + sigma_z * noise(k_z))
  inputs = jnp.concatenate([causes, effects], axis=1) @ params.scramble
  return inputs, jnp.sum(target_parts, axis=1)


def sem_sample(key: PRNGKey, params: SEMParams, scale: ArrayLike,
               num_samples: int) -> tuple[Array, Array]:
  """Samples one domain of the SEM (appendix 11.1.9.2).

  Args:
    key: PRNG key for this domain's noise.
    params: from `sem_init`.
    scale: the domain's e > 0 (0.2, 2 or 5 in the thesis).
    num_samples: n, 1,000 in the thesis.

  Returns:
    `(inputs f32[n, 2d], target f32[n])`, inputs = `[x, z] S`, target Y = y · 1.
  """
  _check_key("key", key)
  _check_params(params)
  _checks.check_scalar("scale", scale, positive=True)
  _check_positive_int("num_samples", num_samples)
  return _sem_sample(key, params, jnp.asarray(scale, jnp.float32), num_samples)


def population_moments(params: SEMParams, scale: ArrayLike) -> DomainMoments:
  """The exact second moments of one domain, from the SEM's linear map of its noise.

  With u = (N_h, N_x, N_y, N_z) ~ N(0, I_{4d}) every variable is `u M` for a fixed M, so
  `E[XᵀX] = M_Xᵀ M_X`, `E[XᵀY] = M_Xᵀ M_Y` and `E[Y²] = M_Yᵀ M_Y` (all means are zero).
  """
  _check_params(params)
  _checks.check_scalar("scale", scale, positive=True)
  return _population_moments(params, jnp.asarray(scale, jnp.float32))


def _population_moments(params: SEMParams, scale: Array) -> DomainMoments:
  dim = params.cause_to_target.shape[0]
  sigma_y, sigma_z = _noise_scales(params, scale)
  eye, zero = jnp.eye(dim), jnp.zeros((dim, dim))
  block = lambda h, nx, ny, nz: jnp.concatenate([h, nx, ny, nz], axis=0)  # [4d, d]
  causes = block(scale * params.hidden_to_x, scale * eye, zero, zero)
  parts = causes @ params.cause_to_target + block(scale * params.hidden_to_y, zero,
                                                  sigma_y * eye, zero)
  effects = parts @ params.target_to_effect + block(scale * params.hidden_to_z, zero, zero,
                                                    sigma_z * eye)
  inputs = jnp.concatenate([causes, effects], axis=1) @ params.scramble  # [4d, 2d]
  target = jnp.sum(parts, axis=1)                                          # [4d]
  target_sq = target @ target
  return DomainMoments(gram=inputs.T @ inputs, cross=inputs.T @ target, target_sq=target_sq,
                       target_var=target_sq)


def true_coefficients(params: SEMParams) -> Array:
  """The causal solution `(W_xy 1, 0)` in unscrambled coordinates [x, z]; in the input
  coordinates `[x, z] S` it is `Sᵀ (W_xy 1, 0)`."""
  _check_params(params)
  return _true_coefficients(params)


def _true_coefficients(params: SEMParams) -> Array:
  causal = jnp.sum(params.cause_to_target, axis=1)
  return jnp.concatenate([causal, jnp.zeros_like(causal)])


def domain_moments(inputs: ArrayLike, target: ArrayLike) -> DomainMoments:
  """Second moments of one domain: `Xᵀ X / n`, `Xᵀ Y / n`, `Yᵀ Y / n`, Var(Y)."""
  _checks.check_rank("inputs", inputs, 2)
  _checks.check_rank("target", target, 1)
  _checks.check_floating("inputs", inputs)
  _checks.check_floating("target", target)
  if _checks.shape_of(inputs)[0] != _checks.shape_of(target)[0]:
    raise ValueError(f"target must have {_checks.shape_of(inputs)[0]} rows like inputs, got "
                     f"shape {_checks.shape_of(target)}")
  return _domain_moments(jnp.asarray(inputs), jnp.asarray(target))


def _domain_moments(inputs: Array, target: Array) -> DomainMoments:
  n = inputs.shape[0]
  return DomainMoments(gram=inputs.T @ inputs / n, cross=inputs.T @ target / n,
                       target_sq=jnp.mean(target ** 2), target_var=jnp.var(target))


def quadratic_risk(coefficients: Array, moments: DomainMoments) -> Array:
  """The mean squared error `mean((X θ - Y)²) = θᵀ G θ - 2 θᵀ c + s` of one domain."""
  return (coefficients @ moments.gram @ coefficients - 2.0 * coefficients @ moments.cross
          + moments.target_sq)


# ---------------------------------------------------------------------------- penalties


def least_squares(moments: DomainMoments) -> Array:
  """ERM: least squares on the pooled domains (equal sizes), `(Σ_e G_e)⁻¹ Σ_e c_e`."""
  return jnp.linalg.solve(jnp.sum(moments.gram, axis=0), jnp.sum(moments.cross, axis=0))


def irmv1_linear_penalty(feature_map: Array, moments: DomainMoments) -> Array:
  """IRMv1 penalty of a linear regressor with a vector dummy classifier (Eq. 5.3's IRMv1).

  `Σ_e mean_i (∂R_e(Φ w)/∂w_i |_{w=1})²`; in closed form `∂R_e/∂w = 2 Φᵀ (G_e θ - c_e)` with
  θ = Φ 1, so the penalty is `(4/D) Σ_e ‖Φᵀ (G_e θ - c_e)‖²`. It vanishes iff every
  domain's risk gradient `G_e θ - c_e` is orthogonal to the range of Φ.

  Args:
    feature_map: Φ, f32[D, D].
    moments: `DomainMoments` with a leading domain axis [m].
  """
  theta = jnp.sum(feature_map, axis=1)
  risk_grads = 2.0 * (moments.gram @ theta - moments.cross)  # ∇_θ R_e, [m, D]
  return jnp.sum(jnp.mean((risk_grads @ feature_map) ** 2, axis=-1))


def pairwise_risk_penalty(risks: Array) -> Array:
  """`Σ_{e<f} (R_e - R_f)² = m Σ_e (R_e - R̄)²`: V-REx's penalty in its pairwise form
  (appendix 11.1.8.2.3), `m²` times `Var({R_e})` of Eq. 5.8; `(R_1 - R_2)²` for m = 2."""
  return risks.shape[0] * jnp.sum((risks - jnp.mean(risks)) ** 2)


def vrex_linear_penalty(coefficients: Array, moments: DomainMoments,
                        baselines: Array) -> Array:
  """V-REx penalty of a linear regressor, risks shifted by baselines r_e (Eq. 5.5)."""
  risks = jax.vmap(quadratic_risk, in_axes=(None, 0))(coefficients, moments)
  return pairwise_risk_penalty(risks - baselines)


# ------------------------------------------------------------------------------ fitting


def _initial_params(method: str, dim: int) -> Array:
  # IRMv1 learns the matrix Φ from the identity (w = 1 fixed); V-REx learns θ from 1.
  return jnp.eye(dim) if method == "irm" else jnp.ones(dim)


def _coefficients_of(method: str, params: Array) -> Array:
  return jnp.sum(params, axis=1) if method == "irm" else params


def _penalty_of(method: str, params: Array, moments: DomainMoments, baselines: Array):
  if method == "irm":
    return irmv1_linear_penalty(params, moments)
  return vrex_linear_penalty(params, moments, baselines)


def _weighted_loss(params, moments, baselines, risk_weight, *, method):
  coefficients = _coefficients_of(method, params)
  risks = jax.vmap(quadratic_risk, in_axes=(None, 0))(coefficients, moments)
  penalty = _penalty_of(method, params, moments, baselines)
  loss = risk_weight * jnp.sum(risks) + (1.0 - risk_weight) * penalty
  return loss, (risks, penalty)


def _fit_penalized(moments: DomainMoments, risk_weight: Array, baselines: Array,
                   learning_rate: Array, *, method: str, num_steps: int) -> FitResult:
  dim = moments.gram.shape[-1]
  optimizer = optax.adam(learning_rate)
  grad_fn = jax.grad(lambda p: _weighted_loss(p, moments, baselines, risk_weight,
                                              method=method)[0])

  def step(carry, _):
    params, opt_state = carry
    updates, opt_state = optimizer.update(grad_fn(params), opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  params = _initial_params(method, dim)
  (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None,
                                length=num_steps)
  _, (risks, penalty) = _weighted_loss(params, moments, baselines, risk_weight, method=method)
  return FitResult(coefficients=_coefficients_of(method, params), risks=risks, penalty=penalty)


def _baselines(method: str, moments: DomainMoments) -> Array:
  if method == "vrex_var_baseline":
    return moments.target_var
  return jnp.zeros_like(moments.target_var)


def _check_moments(moments) -> None:
  if not isinstance(moments, DomainMoments):
    raise TypeError(f"moments must be DomainMoments, got {type(moments).__name__}")
  _checks.check_rank("moments.gram", moments.gram, 3)
  shape = _checks.shape_of(moments.gram)
  if shape[1] != shape[2] or shape[0] < 2:
    raise ValueError(f"moments.gram must be [m >= 2 domains, D, D], got {shape}")
  _checks.check_same_shape("moments.gram[:, 0]", moments.gram[:, 0], "moments.cross",
                           moments.cross)


def _check_training(learning_rate, num_steps) -> None:
  _checks.check_scalar("learning_rate", learning_rate, positive=True)
  _check_positive_int("num_steps", num_steps)


def fit_penalized(moments: DomainMoments, risk_weight: ArrayLike, *, method: str,
                  learning_rate: float = 1e-3, num_steps: int = 100_000) -> FitResult:
  """Trains IRMv1 or V-REx with Adam on `ρ Σ_e R_e + (1 - ρ) P`.

  ρ = 0 minimizes the penalty alone; ρ = 1/(1 + λ) is `Σ_e R_e + λ P` up to a factor.

  Args:
    moments: `DomainMoments` with a leading domain axis [m] (the training domains).
    risk_weight: ρ in [0, 1], a scalar (see `fit_weight_grid` for a batch).
    method: 'irm' (Φ ∈ R^{D×D} from I, w = 1, `irmv1_linear_penalty`), 'vrex' (θ from 1,
      `pairwise_risk_penalty` with r_e = 0) or 'vrex_var_baseline' (r_e = Var(Y_e),
      appendix 11.1.9.2).
    learning_rate: Adam step size (constant).
    num_steps: training steps (a `lax.scan`).

  Returns:
    `FitResult`; `coefficients` is θ = Φ 1 for IRM.
  """
  _checks.check_choice("method", method, PENALIZED_METHODS)
  _check_moments(moments)
  _checks.check_scalar("risk_weight", risk_weight)
  _checks.check_nonnegative("risk_weight", risk_weight)
  if float(risk_weight) > 1:
    raise ValueError(f"risk_weight must lie in [0, 1], got {float(risk_weight)}")
  _check_training(learning_rate, num_steps)
  return _fit_penalized_jit(moments, jnp.asarray(risk_weight, jnp.float32),
                            _baselines(method, moments), jnp.asarray(learning_rate, jnp.float32),
                            method=method, num_steps=num_steps)


_fit_penalized_jit = jax.jit(_fit_penalized, static_argnames=("method", "num_steps"))


def fit_weight_grid(moments: DomainMoments, risk_weights: ArrayLike, *, method: str,
                    learning_rate: float = 1e-3, num_steps: int = 100_000) -> FitResult:
  """`fit_penalized` for every candidate ρ at once: the weights are a vmap axis.

  Returns:
    `FitResult` with a leading axis [K] over `risk_weights`.
  """
  _checks.check_choice("method", method, PENALIZED_METHODS)
  _check_moments(moments)
  _check_risk_weights("risk_weights", risk_weights)
  _check_training(learning_rate, num_steps)
  return _fit_weight_grid_jit(moments, jnp.asarray(risk_weights, jnp.float32),
                              jnp.asarray(learning_rate, jnp.float32), method=method,
                              num_steps=num_steps)


def _fit_weight_grid(moments, risk_weights, learning_rate, *, method, num_steps):
  fit = lambda rho: _fit_penalized(moments, rho, _baselines(method, moments), learning_rate,
                                   method=method, num_steps=num_steps)
  return jax.vmap(fit)(risk_weights)


_fit_weight_grid_jit = jax.jit(_fit_weight_grid, static_argnames=("method", "num_steps"))


# ----------------------------------------------------------------------- the whole suite


def coefficient_errors(estimate: Array, params: SEMParams) -> tuple[Array, Array, Array]:
  """MSE to the causal solution on the causes and on the effects, un-scrambled.

  Predictions are `[x, z] S θ̂`, so the estimate in [x, z] coordinates is `S θ̂`.

  Returns:
    `(causal_error, noncausal_error, unscrambled_estimate)`.
  """
  _check_params(params)
  return _coefficient_errors(estimate, params)


def _coefficient_errors(estimate, params):
  dim = params.cause_to_target.shape[0]
  unscrambled = params.scramble @ estimate
  truth = _true_coefficients(params)
  return (jnp.mean((unscrambled[:dim] - truth[:dim]) ** 2), jnp.mean(unscrambled[dim:] ** 2),
          unscrambled)


def table_errors(estimate: Array, params: SEMParams) -> tuple[Array, Array]:
  """Table 11.II's errors: in input coordinates, the MSE to θ* = Sᵀ (W_xy 1, 0) over the
  entries where θ* ≠ 0 ("causal") and where θ* = 0 ("non-causal"; 0 when there are none).

  Unscrambled, these are `coefficient_errors`. Scrambled, θ* has no zero entry, so the
  "causal" error is the MSE over all 2d coefficients and the "non-causal" one is 0,
  which is why every S column of Table 11.II reads 0.000 ± 0.000.
  """
  _check_params(params)
  return _table_errors(estimate, params)


def _table_errors(estimate, params):
  truth = params.scramble.T @ _true_coefficients(params)
  causal = truth != 0
  sq = (estimate - truth) ** 2
  mean_over = lambda mask: jnp.sum(jnp.where(mask, sq, 0.0)) / jnp.maximum(jnp.sum(mask), 1)
  return mean_over(causal), mean_over(~causal)


def _one_task_rep(key, flags, scales, risk_weights, learning_rate, *, dim, num_samples,
                  num_steps):
  k_params, k_data = jax.random.split(key)
  params = _sem_init(k_params, flags[0], flags[1], flags[2], flags[3], dim)
  domain_keys = jax.random.split(k_data, scales.shape[0])
  inputs, target = jax.vmap(_sem_sample, in_axes=(0, None, 0, None))(
      domain_keys, params, scales, num_samples)
  moments = jax.vmap(_domain_moments)(inputs, target)
  train = jax.tree_util.tree_map(lambda a: a[:-1], moments)
  held_out = jax.tree_util.tree_map(lambda a: a[-1], moments)

  estimates = [least_squares(moments)]
  chosen = [jnp.ones(())]
  validation = []
  for method in PENALIZED_METHODS:  # three static methods, each fit vmapped over ρ
    fits = _fit_weight_grid(train, risk_weights, learning_rate, method=method,
                            num_steps=num_steps)
    val = jax.vmap(quadratic_risk, in_axes=(0, None))(fits.coefficients, held_out)
    # A diverged fit (non-finite validation risk) is never selected; ties go to the first.
    best = jnp.argmin(jnp.where(jnp.isfinite(val), val, jnp.inf))
    estimates.append(fits.coefficients[best])
    chosen.append(risk_weights[best])
    validation.append(val)
  estimates = jnp.stack(estimates)
  causal, noncausal, unscrambled = jax.vmap(_coefficient_errors, in_axes=(0, None))(
      estimates, params)
  table_causal, table_noncausal = jax.vmap(_table_errors, in_axes=(0, None))(estimates, params)
  return SuiteResult(causal_error=causal, noncausal_error=noncausal,
                     table_causal_error=table_causal, table_noncausal_error=table_noncausal,
                     coefficients=unscrambled, true_coefficients=_true_coefficients(params),
                     selected_risk_weight=jnp.stack(chosen),
                     validation_risk=jnp.stack(validation))


def _run_suite(key, task_ids, flags, scales, risk_weights, learning_rate, *, num_reps, dim,
               num_samples, num_steps):
  one = lambda k, f: _one_task_rep(k, f, scales, risk_weights, learning_rate, dim=dim,
                                   num_samples=num_samples, num_steps=num_steps)
  task_keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), num_reps))(
      task_ids)
  over_reps = jax.vmap(one, in_axes=(0, None))
  return jax.vmap(over_reps)(task_keys, flags)


_run_suite_jit = jax.jit(_run_suite,
                         static_argnames=("num_reps", "dim", "num_samples", "num_steps"))


def run_suite(key: PRNGKey, tasks: Sequence[str] = TASKS,
              risk_weights: ArrayLike = RISK_WEIGHTS, *, num_reps: int = 7,
              num_samples: int = 1000, domain_scales: Sequence[float] = DOMAIN_SCALES,
              dim: int = 5, chain_weights: str = "gaussian", learning_rate: float = 1e-3,
              num_steps: int = 100_000) -> SuiteResult:
  """Table 11.II in one compiled program: tasks × repetitions × candidate ρ vmapped.

  For every task and repetition: draw the SEM, sample every domain, fit ERM (least squares
  on all domains) and, for each candidate ρ, IRMv1 and V-REx (r_e = 0 and r_e = Var(Y_e))
  on all domains but the last; keep the ρ whose fit has the lowest squared error on the
  last domain; score the estimate against the causal solution.

  Args:
    key: PRNG key; a task uses `fold_in(key, TASKS.index(task))`, split into one key per
      repetition, so its draws do not depend on which other tasks run.
    tasks: names from `TASKS`.
    risk_weights: candidate ρ in [0, 1] of `ρ Σ_e R_e + (1 - ρ) P`.
    num_reps: repetitions (7 in the thesis).
    num_samples: samples per domain (1,000).
    domain_scales: e for each domain; the last is the selection domain (0.2, 2, 5).
    dim: d, causes = effects = confounders (5).
    chain_weights: 'gaussian' or 'ones', see `sem_init`.
    learning_rate: Adam step size (1e-3).
    num_steps: Adam steps (10⁵).

  Returns:
    `SuiteResult` with axes [task, rep, method] in the order of `METHODS`.
  """
  _check_key("key", key)
  if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
    raise TypeError(f"tasks must be a non-empty sequence of names from {TASKS}, got {tasks!r}")
  specs = [parse_task(t) for t in tasks]
  _check_risk_weights("risk_weights", risk_weights)
  _check_positive_int("num_reps", num_reps)
  _check_positive_int("num_samples", num_samples, minimum=2)
  _check_positive_int("dim", dim)
  _checks.check_choice("chain_weights", chain_weights, CHAIN_WEIGHTS)
  _check_training(learning_rate, num_steps)
  scales = np.asarray(domain_scales, np.float32)
  if scales.ndim != 1 or scales.size < 3:
    raise ValueError(f"domain_scales must list at least 3 domains (2 to train, 1 to select), "
                     f"got {list(np.atleast_1d(scales))}")
  if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
    raise ValueError(f"domain_scales must be finite and > 0, got {scales.tolist()}")
  gaussian = float(chain_weights == "gaussian")
  flags = jnp.asarray([[s.confounded, s.heteroskedastic, s.scrambled, gaussian]
                       for s in specs], jnp.float32)
  task_ids = jnp.asarray([TASKS.index(t) for t in tasks], jnp.int32)
  return _run_suite_jit(key, task_ids, flags, jnp.asarray(scales),
                        jnp.asarray(risk_weights, jnp.float32),
                        jnp.asarray(learning_rate, jnp.float32), num_reps=num_reps, dim=dim,
                        num_samples=num_samples, num_steps=num_steps)
