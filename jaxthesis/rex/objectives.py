"""Risk Extrapolation objectives over a stacked domain axis (thesis chapter 5).

Every function here takes per-domain risks as a vector `risks: f32[m]` (one entry per
training domain), or per-domain predictions stacked as `[m, n, ...]` with a validity
mask `[m, n]` so that domains of unequal size share one array. Per-domain risks are
computed with `jax.vmap` over the domain axis, never a Python loop.

Integer arrays: values a gradient is taken through (`logits`, `risks`) must be floating
point, and integer or bool ones are rejected with a TypeError naming the argument;
targets, masks and sizes (`labels`, `mask`, `domain_sizes`) may be integer or bool and
are cast to the floating dtype they meet (see the `jaxthesis.rex` docstring).

`OBJECTIVES` lists the training objectives of the six methods of Table 5.II as
`Objective` init/update pairs (like optax's `GradientTransformation`); `train.py`
builds every method's step from it.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike, PyTree

LossFn = Callable[[Array, Array], Array]  # (logits [n, ...], labels [n, ...]) -> loss [n]


def _check_risks(risks: ArrayLike, name: str = "risks") -> None:
  _checks.check_rank(name, risks, 1)
  _checks.check_nonempty(name, risks)
  _checks.check_floating(name, risks)


def _check_real(name: str, x: Any) -> None:
  """Targets, masks and sizes: any real number type (bool and integers included)."""
  dtype = getattr(x, "dtype", None)
  dtype = np.asarray(x).dtype if dtype is None else np.dtype(dtype)
  if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)
          or jnp.issubdtype(dtype, jnp.bool_)):
    raise TypeError(f"{name} must be a real (float, int or bool) array, got dtype {dtype}")


def _check_predictions(loss_fn: Any, logits: Any, labels: Any, mask: Any, rank: int) -> None:
  """The shared checks of the functions taking `(loss_fn, logits, labels, mask)`."""
  _checks.check_callable("loss_fn", loss_fn)
  _checks.check_rank("logits", logits, rank)
  _checks.check_nonempty("logits", logits, axis=rank - 1)
  _checks.check_floating("logits", logits)
  _checks.check_same_shape("logits", logits, "labels", labels)
  _check_real("labels", labels)
  if mask is not None:
    _checks.check_same_shape("logits", logits, "mask", mask)
    _check_real("mask", mask)
    _checks.check_nonnegative("mask", mask)


# --------------------------------------------------------------------------- losses


def binary_cross_entropy(logits: Array, labels: Array) -> Array:
  """Elementwise logistic loss `-[y log σ(z) + (1-y) log(1-σ(z))]`, stable in z."""
  _checks.check_floating("logits", logits)
  _check_real("labels", labels)
  logits = jnp.asarray(logits)
  return jnp.logaddexp(0.0, logits) - jnp.asarray(labels, logits.dtype) * logits


def masked_mean(values: Array, mask: Optional[Array]) -> Array:
  """Mean of `values` over entries where `mask` is 1 (all entries when mask is None)."""
  if mask is None:
    return jnp.mean(values)
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def domain_risks(loss_fn: LossFn, logits: ArrayLike, labels: ArrayLike,
                 mask: Optional[ArrayLike] = None) -> Array:
  """Per-domain empirical risks R_e (Eq. 5.2), vmapped over the leading domain axis.

  Args:
    loss_fn: elementwise loss `(logits [n], labels [n]) -> [n]`.
    logits: `[m, n]` model outputs, domain-major.
    labels: `[m, n]` targets.
    mask: optional `[m, n]` 0/1 validity mask for domains of unequal size.

  Returns:
    `f32[m]`, the masked mean loss of each domain.
  """
  _check_predictions(loss_fn, logits, labels, mask, rank=2)
  _checks.check_nonempty("logits", logits)
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels, logits.dtype)
  if mask is not None and _checks.is_concrete(mask):
    empty = np.flatnonzero(np.sum(np.asarray(mask) != 0, axis=1) == 0)
    if empty.size:
      raise ValueError(f"mask leaves domain(s) {empty.tolist()} empty (all zeros): an empty "
                       "domain has no risk")
  risk = lambda z, y, m: masked_mean(loss_fn(z, y), m)
  if mask is None:
    return jax.vmap(lambda z, y: risk(z, y, None))(logits, labels)
  return jax.vmap(risk)(logits, labels, jnp.asarray(mask, logits.dtype))


# ------------------------------------------------------------------- risk functionals


def erm(risks: ArrayLike, domain_sizes: Optional[ArrayLike] = None) -> Array:
  """Empirical risk minimization: the pooled risk (Eqs. 5.3–5.4).

  `R_ERM = Σ_e |D_e| R_e / Σ_e |D_e|`, the mean of the pooled loss; with no sizes,
  every domain weighs the same.
  """
  _check_risks(risks)
  risks = jnp.asarray(risks)
  if domain_sizes is None:
    return jnp.mean(risks)
  _checks.check_same_shape("risks", risks, "domain_sizes", domain_sizes)
  _check_real("domain_sizes", domain_sizes)
  _checks.check_nonnegative("domain_sizes", domain_sizes)
  if _checks.is_concrete(domain_sizes) and not np.sum(np.asarray(domain_sizes)) > 0:
    raise ValueError(f"domain_sizes must not all be zero, got {np.asarray(domain_sizes)}")
  sizes = jnp.asarray(domain_sizes, risks.dtype)
  return jnp.sum(sizes * risks) / jnp.sum(sizes)


def variance_penalty(risks: ArrayLike) -> Array:
  """`Var({R_1, ..., R_m})`, the population variance of the training risks (Eq. 5.8).

  Equals half the mean pairwise squared difference `1/(2m²) Σ_ij (R_i - R_j)²`
  (appendix 11.1.8.2.3).
  """
  _check_risks(risks)
  return jnp.var(jnp.asarray(risks))


def vrex(risks: ArrayLike, beta: ArrayLike) -> Array:
  """V-REx: `β Var({R_e}) + Σ_e R_e` (Eq. 5.8). β = 0 recovers (summed) ERM."""
  _check_risks(risks)
  _checks.check_scalar("beta", beta)
  _checks.check_nonnegative("beta", beta)
  risks = jnp.asarray(risks)
  return beta * jnp.var(risks) + jnp.sum(risks)


def minimax_penalty(risks: ArrayLike) -> Array:
  """`max_e R_e - mean_e R_e`: MM-REx is `mean + (1 - m λ_min) · this` (from Eq. 5.7)."""
  _check_risks(risks)
  risks = jnp.asarray(risks)
  return jnp.max(risks) - jnp.mean(risks)


def mmrex(risks: ArrayLike, lambda_min: ArrayLike) -> Array:
  """Minimax-REx in closed form: `(1 - m λ_min) max_e R_e + λ_min Σ_e R_e` (Eq. 5.7).

  The maximum over affine combinations `Σ λ_e R_e` with `Σ λ_e = 1, λ_e ≥ λ_min`
  (Eq. 5.6). Negative λ_min extrapolates beyond the convex hull of the training risks;
  λ_min = 0 is risk interpolation (Eq. 5.5).
  """
  _check_risks(risks)
  _checks.check_scalar("lambda_min", lambda_min)
  risks = jnp.asarray(risks)
  m = risks.shape[0]
  if _checks.is_concrete(lambda_min) and float(lambda_min) > 1.0 / m:
    raise ValueError(f"lambda_min must be <= 1/m = {1.0 / m:g} (m = {m} domains) for the "
                     f"perturbation set to be non-empty, got {float(lambda_min)}")
  return (1.0 - m * lambda_min) * jnp.max(risks) + lambda_min * jnp.sum(risks)


def risk_interpolation(risks: ArrayLike) -> Array:
  """Risk interpolation / worst-case risk over training domains: `max_e R_e` (Eq. 5.5)."""
  _check_risks(risks)
  return jnp.max(jnp.asarray(risks))


def mmrex_penalty_weight(lambda_min: float, num_domains: int) -> float:
  """The weight w with `mmrex = mean + w · minimax_penalty`: `w = 1 - m λ_min`."""
  return 1.0 - num_domains * lambda_min


# ------------------------------------------------------------------------------ IRMv1


def _scale_gradient(loss_fn: LossFn, logits: Array, labels: Array,
                    mask: Optional[Array]) -> Array:
  """d/ds of the domain risk of the classifier `s · logits`, at s = 1."""
  risk_at = lambda s: masked_mean(loss_fn(s * logits, labels), mask)
  return jax.grad(risk_at)(jnp.ones((), logits.dtype))


def irmv1_penalty(loss_fn: LossFn, logits: ArrayLike, labels: ArrayLike,
                  mask: Optional[ArrayLike] = None) -> Array:
  """IRMv1 penalty of one domain: `‖∇_{w|w=1} R_e(w · Φ)‖²` (Arjovsky et al., 2019).

  The squared gradient of the domain risk w.r.t. a scalar dummy classifier scale at 1.0.
  For the logistic loss this is `(mean((σ(z) - y) z))²`.

  Args:
    loss_fn: elementwise loss.
    logits: `[n]` model outputs on one domain (vmap this over domains).
    labels: `[n]` targets.
    mask: optional `[n]` validity mask.
  """
  _check_predictions(loss_fn, logits, labels, mask, rank=1)
  logits = jnp.asarray(logits)
  mask = None if mask is None else jnp.asarray(mask, logits.dtype)
  return _scale_gradient(loss_fn, logits, jnp.asarray(labels, logits.dtype), mask) ** 2


def irmv1_penalty_unbiased(loss_fn: LossFn, logits: ArrayLike, labels: ArrayLike,
                           mask: Optional[ArrayLike] = None) -> Array:
  """Unbiased split-batch IRMv1 estimate: `g(even half) · g(odd half)`.

  The product of the scale-gradients on two disjoint halves of the domain's batch has
  the squared population gradient as its expectation, unlike `irmv1_penalty`, whose
  square of one estimate is biased upward by its variance.
  """
  _check_predictions(loss_fn, logits, labels, mask, rank=1)
  if _checks.shape_of(logits)[0] < 2:
    raise ValueError(f"logits needs at least 2 examples to split, got {_checks.shape_of(logits)}")
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels, logits.dtype)
  mask = None if mask is None else jnp.asarray(mask, logits.dtype)
  halves = [(slice(0, None, 2)), (slice(1, None, 2))]
  grads = [_scale_gradient(loss_fn, logits[h], labels[h], None if mask is None else mask[h])
           for h in halves]
  return grads[0] * grads[1]


# ---------------------------------------------------------------------------- GroupDRO


class GroupDROState(NamedTuple):
  """Online domain weights of GroupDRO (Sagawa et al., 2020)."""
  log_q: Array  # f32[m], log of the domain weights (a point on the simplex)


def groupdro_init(num_domains: int) -> GroupDROState:
  """Uniform weights `q_e = 1/m` over the m training domains."""
  _checks.check_positive_int("num_domains", num_domains)
  return GroupDROState(log_q=jnp.full((num_domains,), -jnp.log(num_domains)))


def groupdro_update(state: GroupDROState, risks: ArrayLike,
                    step_size: ArrayLike) -> tuple[Array, GroupDROState]:
  """One exponentiated-gradient ascent step on the domain weights, then the loss.

  `q ← q ⊙ exp(η R) / Z`, done in log space; the training loss is `Σ_e q_e R_e` with q
  held fixed (no gradient flows into the weights).

  Returns:
    `(loss, new_state)`.
  """
  if not isinstance(state, GroupDROState):
    raise TypeError(f"state must be a GroupDROState (from groupdro_init), got "
                    f"{type(state).__name__}")
  _check_risks(risks)
  _checks.check_same_shape("state.log_q", state.log_q, "risks", risks)
  _checks.check_scalar("step_size", step_size)
  _checks.check_nonnegative("step_size", step_size)
  risks = jnp.asarray(risks)
  log_q = state.log_q + step_size * jax.lax.stop_gradient(risks)
  log_q = log_q - jax.nn.logsumexp(log_q)
  loss = jnp.sum(jnp.exp(jax.lax.stop_gradient(log_q)) * risks)
  return loss, GroupDROState(log_q=log_q)


# ----------------------------------------------------------------------- the schedule


def penalty_weight_at(step: ArrayLike, penalty_weight: ArrayLike,
                      penalty_anneal_iters: ArrayLike) -> Array:
  """Penalty weight 1.0 until `penalty_anneal_iters`, then `penalty_weight`.

  This is the schedule of the IRM and REx Colored-MNIST reference code (thesis 5.4.1,
  appendix 11.1.10.1). Jittable and vmappable in every argument.
  """
  for name, value in (("penalty_weight", penalty_weight),
                      ("penalty_anneal_iters", penalty_anneal_iters)):
    if _checks.is_concrete(value) and np.any(np.asarray(value) < 0):
      raise ValueError(f"{name} must be >= 0, got {value}")
  return jnp.where(jnp.asarray(step) >= penalty_anneal_iters,
                   jnp.asarray(penalty_weight, jnp.float32), 1.0)


def penalized_loss(base: Array, penalty: Array, weight: Array,
                   rescale: bool = True, extra: Array | float = 0.0) -> Array:
  """`(base + extra + weight · penalty) / max(weight, 1)`.

  Dividing by the weight once it exceeds 1 keeps the gradient scale of the reference
  implementations, so one learning rate serves both phases of the schedule.
  """
  loss = base + extra + weight * penalty
  return loss / jnp.maximum(weight, 1.0) if rescale else loss


# ------------------------------------------------------------------ the method registry


class ObjectiveInputs(NamedTuple):
  """What one training step hands an objective: the domain risks and their inputs."""
  risks: Array   # f32[m], R_e = masked mean loss of domain e
  sizes: Array   # f32[m], examples per domain (the mask's row sums)
  logits: Array  # f32[m, n]
  labels: Array  # f32[m, n]
  mask: Array    # f32[m, n], 0/1 validity


class ObjectiveTerms(NamedTuple):
  """The loss of a method is `penalized_loss(base, penalty, w(t))`."""
  base: Array     # f32[]
  penalty: Array  # f32[], scaled by the annealed penalty weight w(t)


class Objective(NamedTuple):
  """A training objective over m domains as an init/update pair (optax's shape).

  Attributes:
    init: `num_domains -> state`, the objective's own state (`()` when it has none,
      `GroupDROState` for GroupDRO).
    update: `(inputs: ObjectiveInputs, state, hparams) -> (ObjectiveTerms, state)`.
      `hparams` are the restart's tunables; an objective reads only the fields it needs
      (GroupDRO reads `hparams.groupdro_eta`), so they may be traced and vmapped.
  """
  init: Callable[[int], PyTree]
  update: Callable[[ObjectiveInputs, PyTree, Any], tuple[ObjectiveTerms, PyTree]]


def _stateless_init(num_domains: int) -> tuple:
  _checks.check_positive_int("num_domains", num_domains)
  return ()


def _stateless(terms: Callable[[ObjectiveInputs], tuple[Array, Array]]) -> Objective:
  def update(inputs: ObjectiveInputs, state, hparams=None):
    return ObjectiveTerms(*terms(inputs)), state
  return Objective(init=_stateless_init, update=update)


def _no_penalty(risks: Array) -> Array:
  return jnp.zeros((), risks.dtype)


ERM = _stateless(lambda inp: (erm(inp.risks, inp.sizes), _no_penalty(inp.risks)))
"""ERM: the pooled risk (Eqs. 5.3–5.4), no penalty."""

VREX = _stateless(lambda inp: (jnp.mean(inp.risks), variance_penalty(inp.risks)))
"""V-REx: `mean R + w · Var(R)`, Eq. 5.8 divided by m (β = m·w)."""

MMREX = _stateless(lambda inp: (jnp.mean(inp.risks), minimax_penalty(inp.risks)))
"""MM-REx: `mean R + w · (max R − mean R)`, Eq. 5.7 with `w = 1 − m λ_min`."""

RI = _stateless(lambda inp: (risk_interpolation(inp.risks), _no_penalty(inp.risks)))
"""Risk interpolation: the worst training risk `max_e R_e` (Eq. 5.5), no penalty."""

IRM_ESTIMATORS = ("biased", "unbiased")


def irm_objective(estimator: str = "biased", loss_fn: LossFn = binary_cross_entropy) -> Objective:
  """IRMv1: `mean R + w · mean_e ‖∇_{s|s=1} R_e(s · Φ)‖²` (Arjovsky et al., 2019).

  Args:
    estimator: 'biased' (`irmv1_penalty`, the square of one gradient, as the reference
      code) or 'unbiased' (`irmv1_penalty_unbiased`, split-batch product).
    loss_fn: the elementwise loss the risks were computed with.
  """
  _checks.check_choice("estimator", estimator, IRM_ESTIMATORS)
  _checks.check_callable("loss_fn", loss_fn)
  penalty_fn = irmv1_penalty if estimator == "biased" else irmv1_penalty_unbiased

  def terms(inp: ObjectiveInputs):
    per_domain = jax.vmap(lambda z, y, k: penalty_fn(loss_fn, z, y, k))(
        inp.logits, inp.labels, inp.mask)
    return jnp.mean(inp.risks), jnp.mean(per_domain)

  return _stateless(terms)


def _groupdro_objective_update(inputs: ObjectiveInputs, state: GroupDROState, hparams):
  loss, state = groupdro_update(state, inputs.risks, hparams.groupdro_eta)
  return ObjectiveTerms(loss, _no_penalty(inputs.risks)), state


GROUPDRO = Objective(init=groupdro_init, update=_groupdro_objective_update)
"""GroupDRO: `Σ_e q_e R_e` with q by exponentiated-gradient ascent (`groupdro_update`)."""

OBJECTIVES: dict[str, Objective] = {
    "erm": ERM,
    "irm": irm_objective("biased"),
    "vrex": VREX,
    "mmrex": MMREX,
    "ri": RI,
    "groupdro": GROUPDRO,
}


def make_objective(method: str, *, irm_estimator: str = "biased") -> Objective:
  """`OBJECTIVES[method]`, with IRMv1's penalty estimator as asked."""
  _checks.check_choice("method", method, tuple(OBJECTIVES))
  _checks.check_choice("irm_estimator", irm_estimator, IRM_ESTIMATORS)
  if method == "irm":
    return irm_objective(irm_estimator)
  return OBJECTIVES[method]
