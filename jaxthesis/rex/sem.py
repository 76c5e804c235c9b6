"""Linear structural equation models of the IRM synthetic suite (thesis appendix 11.1.9.2).

The SEM (Arjovsky et al., 2019, section 5.1; thesis appendix 11.1.9.2, Table 11.II) has
5 causes x, a scalar target y and 5 effects z, with an optional 5-d hidden confounder h:

  h = N(0, e² I₅) · [P]                       (h = 0 in the fully observed tasks F)
  x = N(0, e² I₅) + h W_hx
  y = x · 1₅ + N(0, σ_y²) + h · w_hy
  z = y 1₅ᵀ + N(0, σ_z² I₅) + h W_hz

with mixing matrices W_hx, W_hz = randn(5, 5)/10 and w_hy = randn(5)/10. In the
domain-homoskedastic tasks O the noise on the effects changes with the domain,
`(σ_y, σ_z) = (1, e)`; in the domain-heteroskedastic tasks E the noise on the target does,
`(σ_y, σ_z) = (e, 1)`. The inputs are `[x, z]`, or `[x, z] S` for an orthogonal S in the
scrambled tasks S (U: S = I). Domains are e ∈ {0.2, 2, 5}; models train on the first two
and the regularizer weight is selected by the squared error on the third.

Every task of the suite is the same program with different flag values, so tasks,
repetitions, domains and candidate regularizer weights are all vmap axes. Because the
model is linear and the loss is the squared error, each domain enters training through its
second moments only (`R_e(θ) = θᵀ G_e θ - 2 θᵀ c_e + s_e`), which is the exact empirical
risk on the domain's samples at a cost independent of the sample size.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks
from jaxthesis.rex import objectives
from jaxthesis.typing import Array, ArrayLike, PRNGKey

TASKS = ("FOU", "FOS", "FEU", "FES", "POU", "POS", "PEU", "PES")
DOMAIN_SCALES = (0.2, 2.0, 5.0)
PENALIZED_METHODS = ("irm", "vrex", "vrex_var_baseline")
METHODS = ("erm",) + PENALIZED_METHODS
MIXING_SCALE = 0.1  # the hidden-confounder mixing matrices are randn(5, 5) / 10


class SEMTask(NamedTuple):
  """The three switches that name a task, e.g. 'PES' = confounded, heteroskedastic,
  scrambled."""
  confounded: bool       # P: a hidden confounder h feeds x, y and z (F: fully observed)
  heteroskedastic: bool  # E: the target noise scales with the domain (O: the effects' noise)
  scrambled: bool        # S: inputs multiplied by a random orthogonal matrix (U: not)


class SEMParams(NamedTuple):
  """One draw of the SEM's fixed parameters. Flags are float arrays so tasks can be vmapped."""
  hidden_to_x: Array      # f32[d, d], W_hx
  hidden_to_y: Array      # f32[d], w_hy
  hidden_to_z: Array      # f32[d, d], W_hz
  scramble: Array         # f32[2d, 2d], orthogonal S (identity when unscrambled)
  confounded: Array       # f32[], 1.0 for the P tasks
  heteroskedastic: Array  # f32[], 1.0 for the E tasks


class DomainMoments(NamedTuple):
  """Sufficient statistics of one domain for linear least squares (leading axes allowed)."""
  gram: Array        # f32[..., D, D], Xᵀ X / n
  cross: Array       # f32[..., D], Xᵀ y / n
  target_sq: Array   # f32[...], yᵀ y / n
  target_var: Array  # f32[...], the empirical variance of y


class FitResult(NamedTuple):
  """A trained linear predictor and its last-step diagnostics."""
  coefficients: Array  # f32[D], θ = Φ w, in the (possibly scrambled) input coordinates
  risks: Array         # f32[m], training risks R_e at the end
  penalty: Array       # f32[], the method's penalty at the end


class SuiteResult(NamedTuple):
  """Outcome of `run_suite`; leading axes [task, rep]."""
  causal_error: Array      # f32[T, R, M], mean (θ̂_x - 1)² over the 5 causes, per method
  noncausal_error: Array   # f32[T, R, M], mean θ̂_z² over the 5 effects, per method
  coefficients: Array      # f32[T, R, M, 2d], selected estimates, unscrambled
  selected_weight: Array   # f32[T, R, M], the regularizer weight chosen on the third domain
  validation_risk: Array   # f32[T, R, M-1, K], third-domain risk of every candidate weight


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


def _check_weights(name: str, weights) -> None:
  _checks.check_rank(name, weights, 1)
  _checks.check_nonempty(name, weights)
  _checks.check_nonnegative(name, weights)


# ---------------------------------------------------------------------------- generator


def scramble_matrix(key: PRNGKey, size: int) -> Array:
  """A Haar-random orthogonal matrix: Q of the QR factorization of a Gaussian matrix, with
  the signs fixed by diag(R) > 0 so that Q is uniformly distributed."""
  _check_key("key", key)
  _check_positive_int("size", size)
  q, r = jnp.linalg.qr(jax.random.normal(key, (size, size)))
  return q * jnp.where(jnp.diag(r) < 0, -1.0, 1.0)[None, :]


def _sem_init(key: PRNGKey, confounded: Array, heteroskedastic: Array, scrambled: Array,
              dim: int) -> SEMParams:
  k_hx, k_hy, k_hz, k_s = jax.random.split(key, 4)
  scramble = jnp.where(scrambled > 0, scramble_matrix(k_s, 2 * dim), jnp.eye(2 * dim))
  return SEMParams(
      hidden_to_x=MIXING_SCALE * jax.random.normal(k_hx, (dim, dim)),
      hidden_to_y=MIXING_SCALE * jax.random.normal(k_hy, (dim,)),
      hidden_to_z=MIXING_SCALE * jax.random.normal(k_hz, (dim, dim)),
      scramble=scramble,
      confounded=jnp.asarray(confounded, jnp.float32),
      heteroskedastic=jnp.asarray(heteroskedastic, jnp.float32))


def sem_init(key: PRNGKey, task: str, dim: int = 5) -> SEMParams:
  """Draws the fixed parameters (mixing and scrambling matrices) of one task's SEM.

  Args:
    key: PRNG key; one per repetition.
    task: one of `TASKS`, e.g. 'POS'.
    dim: number of causes (= number of effects); 5 in the thesis.

  Returns:
    `SEMParams`. The mixing matrices are drawn for every task (unused when F) so that a
    key gives the same draw whatever the task.
  """
  _check_key("key", key)
  spec = parse_task(task)
  _check_positive_int("dim", dim)
  return _sem_init(key, float(spec.confounded), float(spec.heteroskedastic),
                   float(spec.scrambled), dim)


def _sem_sample(key: PRNGKey, params: SEMParams, scale: Array,
                num_samples: int) -> tuple[Array, Array]:
  dim = params.hidden_to_y.shape[0]
  k_h, k_x, k_y, k_z = jax.random.split(key, 4)
  hidden = params.confounded * scale * jax.random.normal(k_h, (num_samples, dim))
  target_noise = jnp.where(params.heteroskedastic > 0, scale, 1.0)
  effect_noise = jnp.where(params.heteroskedastic > 0, 1.0, scale)
  causes = scale * jax.random.normal(k_x, (num_samples, dim)) + hidden @ params.hidden_to_x
  target = (jnp.sum(causes, axis=1) + target_noise * jax.random.normal(k_y, (num_samples,))
            + hidden @ params.hidden_to_y)
  effects = (target[:, None] + effect_noise * jax.random.normal(k_z, (num_samples, dim))
             + hidden @ params.hidden_to_z)
  inputs = jnp.concatenate([causes, effects], axis=1) @ params.scramble
  return inputs, target


def sem_sample(key: PRNGKey, params: SEMParams, scale: ArrayLike,
               num_samples: int) -> tuple[Array, Array]:
  """Samples one domain of the SEM (appendix 11.1.9.2).

  Args:
    key: PRNG key for this domain's noise.
    params: from `sem_init`.
    scale: the domain's e > 0 (0.2, 2 or 5 in the thesis).
    num_samples: n, 1,000 in the thesis.

  Returns:
    `(inputs f32[n, 2d], target f32[n])`, inputs = `[x, z] S`.
  """
  _check_key("key", key)
  if not isinstance(params, SEMParams):
    raise TypeError(f"params must be SEMParams from sem_init, got {type(params).__name__}")
  _checks.check_scalar("scale", scale, positive=True)
  _check_positive_int("num_samples", num_samples)
  return _sem_sample(key, params, jnp.asarray(scale, jnp.float32), num_samples)


def true_coefficients(dim: int = 5) -> Array:
  """The causal solution `(1_d, 0_d)` in unscrambled coordinates [x, z]."""
  _check_positive_int("dim", dim)
  return jnp.concatenate([jnp.ones(dim), jnp.zeros(dim)])


def domain_moments(inputs: ArrayLike, target: ArrayLike) -> DomainMoments:
  """Second moments of one domain: `Xᵀ X / n`, `Xᵀ y / n`, `yᵀ y / n`, Var(y)."""
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
  """The mean squared error `mean((X θ - y)²) = θᵀ G θ - 2 θᵀ c + s` of one domain."""
  return (coefficients @ moments.gram @ coefficients - 2.0 * coefficients @ moments.cross
          + moments.target_sq)


# ------------------------------------------------------------------------------ solvers


def least_squares(moments: DomainMoments) -> Array:
  """ERM: least squares on the pooled domains (equal sizes), `(Σ_e G_e)⁻¹ Σ_e c_e`."""
  return jnp.linalg.solve(jnp.sum(moments.gram, axis=0), jnp.sum(moments.cross, axis=0))


def irmv1_linear_penalty(feature_map: Array, moments: DomainMoments) -> Array:
  """IRMv1 penalty of a linear regressor, summed over domains (Arjovsky et al., 2019).

  `Σ_e ‖∇_{w | w = 1} R_e(Φ w)‖²` with a fixed vector classifier w = 1 on the linear
  features Φ (D × D). Its component along w is the scalar-dummy penalty of
  `objectives.irmv1_penalty`: `1ᵀ ∇_w R_e = d/ds R_e(s Φ 1) |_{s=1}`.
  """
  classifier = jnp.ones(feature_map.shape[1], feature_map.dtype)
  grad_at_one = jax.vmap(
      lambda m: jax.grad(lambda w: quadratic_risk(feature_map @ w, m))(classifier))(moments)
  return jnp.sum(grad_at_one ** 2)


def vrex_linear_penalty(coefficients: Array, moments: DomainMoments,
                        baselines: Array) -> Array:
  """V-REx penalty `Var({R_e - r_e})` with per-domain baselines r_e (eqs 5.5 and 5.8)."""
  risks = jax.vmap(quadratic_risk, in_axes=(None, 0))(coefficients, moments)
  return objectives.variance_penalty(risks - baselines)


def whitening_map(moments: DomainMoments) -> Array:
  """`P = Ḡ^{-1/2}` for the mean training Gram matrix Ḡ, so `X P` has identity Gram."""
  eigenvalues, eigenvectors = jnp.linalg.eigh(jnp.mean(moments.gram, axis=0))
  return (eigenvectors * jax.lax.rsqrt(jnp.maximum(eigenvalues, 1e-12))) @ eigenvectors.T


def _fit_penalized(moments: DomainMoments, penalty_weight: Array, baselines: Array,
                   learning_rate: Array, anneal_steps: Array, *, method: str,
                   num_steps: int, precondition: bool) -> FitResult:
  dim = moments.gram.shape[-1]
  # Training runs on Φ' with Φ = P Φ'. The features x Φ = (x P) Φ' are the same, so the
  # risks and both penalties are unchanged as functions of Φ: only the starting point
  # (Φ = P instead of I) and Adam's geometry differ. Whitening by P removes the ~10³
  # condition number of the SEM's Gram matrices, which otherwise leaves Adam far from
  # converged after 10⁴ steps.
  whiten = whitening_map(moments) if precondition else jnp.eye(dim)
  moments = moments._replace(gram=jnp.einsum("ij,ejk,kl->eil", whiten, moments.gram, whiten),
                             cross=moments.cross @ whiten)
  optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, alpha=0.01))
  classifier = jnp.ones(dim)

  def penalty_of(feature_map):
    if method == "irm":
      return irmv1_linear_penalty(feature_map, moments)
    return vrex_linear_penalty(feature_map @ classifier, moments, baselines)

  def loss_fn(feature_map, weight):
    risks = jax.vmap(quadratic_risk, in_axes=(None, 0))(feature_map @ classifier, moments)
    penalty = penalty_of(feature_map)
    return objectives.penalized_loss(jnp.sum(risks), penalty, weight), (risks, penalty)

  def step(carry, step_index):
    feature_map, opt_state = carry
    weight = objectives.penalty_weight_at(step_index, penalty_weight, anneal_steps)
    grads, _ = jax.grad(loss_fn, has_aux=True)(feature_map, weight)
    updates, opt_state = optimizer.update(grads, opt_state, feature_map)
    return (optax.apply_updates(feature_map, updates), opt_state), None

  feature_map = jnp.eye(dim)
  (feature_map, _), _ = jax.lax.scan(step, (feature_map, optimizer.init(feature_map)),
                                     jnp.arange(num_steps))
  _, (risks, penalty) = loss_fn(feature_map, penalty_weight)
  return FitResult(coefficients=whiten @ (feature_map @ classifier), risks=risks,
                   penalty=penalty)


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


def _check_training(learning_rate, anneal_steps, num_steps) -> None:
  _checks.check_scalar("learning_rate", learning_rate, positive=True)
  _check_positive_int("num_steps", num_steps)
  _check_positive_int("anneal_steps", anneal_steps, minimum=0)
  if anneal_steps >= num_steps:
    raise ValueError(f"anneal_steps must be < num_steps = {num_steps}, got {anneal_steps}")


def fit_penalized(moments: DomainMoments, penalty_weight: ArrayLike, *, method: str,
                  learning_rate: float = 3e-2, anneal_steps: int = 1000,
                  num_steps: int = 5000, precondition: bool = True) -> FitResult:
  """Trains `θ = Φ w` (Φ ∈ R^{D×D} from the identity, w = 1 fixed) with Adam on
  `(Σ_e R_e + λ_t P) / max(λ_t, 1)` (`objectives.penalized_loss`).

  λ_t follows `objectives.penalty_weight_at`: 1 for the first `anneal_steps` steps
  (close to ERM), then λ. The Adam step size decays along a cosine to 1% of its start.

  Args:
    moments: `DomainMoments` with a leading domain axis [m] (the training domains).
    penalty_weight: λ ≥ 0, a scalar (see `fit_weight_grid` for a batch of weights).
    method: 'irm' (IRMv1, `irmv1_linear_penalty`), 'vrex' (V-REx with r_e = 0, eq 5.8) or
      'vrex_var_baseline' (V-REx with r_e = Var(Y_e), appendix 11.1.9.2).
    learning_rate: initial Adam step size.
    anneal_steps: steps before the penalty weight switches to λ.
    num_steps: training steps (a `lax.scan`).
    precondition: train Φ' with Φ = P Φ' for the whitening map P = Ḡ^{-1/2} of the
      training inputs (so Φ starts at P, not I). The objective as a function of Φ, and
      hence V-REx's optimum in θ, is unchanged; `False` is the plain Φ = I start.

  Returns:
    `FitResult`.
  """
  _checks.check_choice("method", method, PENALIZED_METHODS)
  _check_moments(moments)
  _checks.check_scalar("penalty_weight", penalty_weight)
  _checks.check_nonnegative("penalty_weight", penalty_weight)
  _check_training(learning_rate, anneal_steps, num_steps)
  return _fit_penalized_jit(moments, jnp.asarray(penalty_weight, jnp.float32),
                            _baselines(method, moments),
                            jnp.asarray(learning_rate, jnp.float32), jnp.asarray(anneal_steps),
                            method=method, num_steps=num_steps, precondition=precondition)


_fit_penalized_jit = jax.jit(_fit_penalized,
                             static_argnames=("method", "num_steps", "precondition"))


def fit_weight_grid(moments: DomainMoments, penalty_weights: ArrayLike, *, method: str,
                    learning_rate: float = 3e-2, anneal_steps: int = 1000,
                    num_steps: int = 5000, precondition: bool = True) -> FitResult:
  """`fit_penalized` for every candidate weight at once: the weights are a vmap axis.

  Returns:
    `FitResult` with a leading axis [K] over `penalty_weights`.
  """
  _checks.check_choice("method", method, PENALIZED_METHODS)
  _check_moments(moments)
  _check_weights("penalty_weights", penalty_weights)
  _check_training(learning_rate, anneal_steps, num_steps)
  return _fit_weight_grid_jit(moments, jnp.asarray(penalty_weights, jnp.float32),
                              jnp.asarray(learning_rate, jnp.float32), jnp.asarray(anneal_steps),
                              method=method, num_steps=num_steps, precondition=precondition)


def _fit_weight_grid(moments, penalty_weights, learning_rate, anneal_steps, *, method,
                     num_steps, precondition):
  fit = lambda lam: _fit_penalized(moments, lam, _baselines(method, moments), learning_rate,
                                   anneal_steps, method=method, num_steps=num_steps,
                                   precondition=precondition)
  return jax.vmap(fit)(penalty_weights)


_fit_weight_grid_jit = jax.jit(_fit_weight_grid,
                               static_argnames=("method", "num_steps", "precondition"))


# ----------------------------------------------------------------------- the whole suite


def coefficient_errors(estimate: Array, scramble: Array,
                       dim: int) -> tuple[Array, Array, Array]:
  """MSE to `(1_d, 0_d)` on causal and non-causal coordinates after un-scrambling.

  Returns `(causal_error, noncausal_error, unscrambled_estimate)`.

  Predictions are `[x, z] S θ̂`, so the estimate in [x, z] coordinates is `S θ̂`.
  """
  unscrambled = scramble @ estimate
  return (jnp.mean((unscrambled[:dim] - 1.0) ** 2), jnp.mean(unscrambled[dim:] ** 2),
          unscrambled)


def _one_task_rep(key, flags, scales, penalty_weights, learning_rate, anneal_steps, *, dim,
                  num_samples, num_steps, precondition):
  k_params, k_data = jax.random.split(key)
  params = _sem_init(k_params, flags[0], flags[1], flags[2], dim)
  domain_keys = jax.random.split(k_data, scales.shape[0])
  inputs, target = jax.vmap(_sem_sample, in_axes=(0, None, 0, None))(
      domain_keys, params, scales, num_samples)
  moments = jax.vmap(_domain_moments)(inputs, target)
  train = jax.tree_util.tree_map(lambda a: a[:-1], moments)
  held_out = jax.tree_util.tree_map(lambda a: a[-1], moments)

  estimates = [least_squares(train)]
  chosen_weights = [jnp.zeros(())]
  validation = []
  for method in PENALIZED_METHODS:
    fits = _fit_weight_grid(train, penalty_weights, learning_rate, anneal_steps,
                            method=method, num_steps=num_steps,
                            precondition=precondition)
    val = jax.vmap(quadratic_risk, in_axes=(0, None))(fits.coefficients, held_out)
    # A diverged fit (non-finite validation risk) is never selected.
    best = jnp.argmin(jnp.where(jnp.isfinite(val), val, jnp.inf))
    estimates.append(fits.coefficients[best])
    chosen_weights.append(penalty_weights[best])
    validation.append(val)
  estimates = jnp.stack(estimates)
  causal, noncausal, unscrambled = jax.vmap(coefficient_errors, in_axes=(0, None, None))(
      estimates, params.scramble, dim)
  return SuiteResult(causal_error=causal, noncausal_error=noncausal, coefficients=unscrambled,
                     selected_weight=jnp.stack(chosen_weights),
                     validation_risk=jnp.stack(validation))


def _run_suite(key, flags, scales, penalty_weights, learning_rate, anneal_steps, *, num_reps,
               dim, num_samples, num_steps, precondition):
  one = lambda k, f: _one_task_rep(k, f, scales, penalty_weights, learning_rate, anneal_steps,
                                   dim=dim, num_samples=num_samples, num_steps=num_steps,
                                   precondition=precondition)
  task_keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(key, i), num_reps))(
      jnp.arange(flags.shape[0]))
  over_reps = jax.vmap(one, in_axes=(0, None))
  return jax.vmap(over_reps)(task_keys, flags)


_run_suite_jit = jax.jit(_run_suite,
                         static_argnames=("num_reps", "dim", "num_samples", "num_steps",
                                          "precondition"))


def run_suite(key: PRNGKey, tasks: Sequence[str] = TASKS,
              penalty_weights: ArrayLike = (0.0, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5), *,
              num_reps: int = 7, num_samples: int = 1000,
              domain_scales: Sequence[float] = DOMAIN_SCALES, dim: int = 5,
              learning_rate: float = 3e-2, anneal_steps: int = 1000,
              num_steps: int = 5000, precondition: bool = True) -> SuiteResult:
  """Table 11.II in one compiled program: tasks × repetitions × candidate weights vmapped.

  For every task and repetition: draw the SEM, sample every domain, fit ERM (least
  squares) and, for each candidate regularizer weight, IRMv1 and V-REx (r_e = 0 and
  r_e = Var(Y_e)) on all domains but the last; keep the weight whose fit has the lowest
  squared error on the last domain; score the un-scrambled estimate against (1, 0).

  Args:
    key: PRNG key; task t uses `fold_in(key, t)`, split into one key per repetition.
    tasks: names from `TASKS`.
    penalty_weights: candidate λ ≥ 0.
    num_reps: repetitions (7 in the thesis).
    num_samples: samples per domain (1,000).
    domain_scales: e for each domain; the last is the selection domain (0.2, 2, 5).
    dim: causes = effects (5).
    learning_rate: initial Adam step size for IRM and V-REx (cosine decay).
    anneal_steps: steps at penalty weight 1 before switching to the candidate weight.
    num_steps: Adam steps.
    precondition: see `fit_penalized`.

  Returns:
    `SuiteResult` with axes [task, rep, method] in the order of `METHODS`.
  """
  _check_key("key", key)
  if isinstance(tasks, str) or not isinstance(tasks, Sequence) or not tasks:
    raise TypeError(f"tasks must be a non-empty sequence of names from {TASKS}, got {tasks!r}")
  specs = [parse_task(t) for t in tasks]
  _check_weights("penalty_weights", penalty_weights)
  _check_positive_int("num_reps", num_reps)
  _check_positive_int("num_samples", num_samples, minimum=2)
  _check_positive_int("dim", dim)
  _check_training(learning_rate, anneal_steps, num_steps)
  scales = np.asarray(domain_scales, np.float32)
  if scales.ndim != 1 or scales.size < 3:
    raise ValueError(f"domain_scales must list at least 3 domains (2 to train, 1 to select), "
                     f"got {list(np.atleast_1d(scales))}")
  if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
    raise ValueError(f"domain_scales must be finite and > 0, got {scales.tolist()}")
  flags = jnp.asarray([[s.confounded, s.heteroskedastic, s.scrambled] for s in specs],
                      jnp.float32)
  return _run_suite_jit(key, flags, jnp.asarray(scales), jnp.asarray(penalty_weights,
                        jnp.float32), jnp.asarray(learning_rate, jnp.float32),
                        jnp.asarray(anneal_steps), num_reps=num_reps, dim=dim, num_samples=num_samples,
                        num_steps=num_steps, precondition=bool(precondition))
