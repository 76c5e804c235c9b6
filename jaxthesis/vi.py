"""Variational-inference objectives and schedules: the ELBO, the importance-weighted bound,
annealed (warm-up) weights and a constant-then-cosine learning rate.

For any approximate posterior q(θ) and model p(D, θ) = p(D | θ) p(θ) (Eq. 7.1 of the thesis),

    log p(D) = KL(q(θ) ‖ p(θ | D)) + E_q[log p(D | θ) + log p(θ) - log q(θ)]
             ≥ E_q[log p(D | θ) + log p(θ) - log q(θ)]                      (Eq. 7.2, the ELBO),

and with K samples θ_k ~ q and weights w_k = p(D, θ_k) / q(θ_k) the importance-weighted bound
log (1/K) Σ_k w_k lies between the ELBO and log p(D) (Burda et al. 2016). Training often
weights the terms: a KL weight β_t rising from near 0 to 1 ("KL annealing", warm-up), or a
tempered likelihood p(D | θ)^β_t that spreads q over every mode before the modes sharpen
(Rezende & Mohamed 2015). These functions are the pieces; they know nothing about models.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike

Schedule = Callable[[ArrayLike], Array]


def _check_terms(**terms: ArrayLike) -> tuple[int, ...]:
  """Floating-point terms whose shapes broadcast together; returns the broadcast shape."""
  for name, value in terms.items():
    _checks.check_floating(name, value)
  try:
    return np.broadcast_shapes(*(np.shape(v) for v in terms.values()))
  except ValueError:
    shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in terms.items())
    raise ValueError(f"the ELBO's terms must broadcast together, got {shapes}") from None


def _check_axis(axis, ndim: int) -> None:
  axes = () if axis is None else (axis,) if isinstance(axis, int) else tuple(axis)
  for a in axes:
    if isinstance(a, bool) or not isinstance(a, int) or not -ndim <= a < ndim:
      raise ValueError(f"axis must be None or integers in [-{ndim}, {ndim}) for terms of "
                       f"rank {ndim}, got {axis!r}")


def elbo(log_likelihood: ArrayLike, log_q: ArrayLike, log_p: ArrayLike = 0.0, *,
         kl_weight: ArrayLike = 1.0, likelihood_weight: ArrayLike = 1.0,
         axis: Union[None, int, tuple[int, ...]] = None) -> Array:
  """Monte Carlo ELBO `mean(λ log p(D | θ) - β (log q(θ) - log p(θ)))` (Eq. 7.2).

  With `λ = β = 1` this is the evidence lower bound of Eq. 7.2 averaged over the samples
  θ ~ q; `β < 1` down-weights the KL term (KL annealing), `λ < 1` tempers the likelihood.
  The prior may be folded into `log_likelihood` (pass `log p(D, θ)` and leave `log_p = 0`).

  Args:
    log_likelihood: `log p(D | θ)` per sample θ ~ q (any shape broadcasting with the others).
    log_q: `log q(θ)` of the same samples.
    log_p: `log p(θ)` (default 0: no separate prior term).
    kl_weight: β, a scalar (may be traced, e.g. a schedule's value).
    likelihood_weight: λ, a scalar (may be traced).
    axis: the sample axes to average over (None: every entry).

  Returns:
    The averaged ELBO (a scalar, or the remaining axes).
  """
  shape = _check_terms(log_likelihood=log_likelihood, log_q=log_q, log_p=log_p)
  _checks.check_scalar("kl_weight", kl_weight)
  _checks.check_scalar("likelihood_weight", likelihood_weight)
  _checks.check_nonnegative("kl_weight", kl_weight)  # a negative weight flips the term's sign
  _checks.check_nonnegative("likelihood_weight", likelihood_weight)
  _check_axis(axis, len(shape))
  averaged = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
  if any(shape[a] == 0 for a in averaged):  # the mean of no samples is nan
    shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in
                       (("log_likelihood", log_likelihood), ("log_q", log_q), ("log_p", log_p)))
    raise ValueError(f"the ELBO's terms must hold at least one sample along axis={axis!r}, "
                     f"got {shapes}")
  log_likelihood, log_q = jnp.asarray(log_likelihood), jnp.asarray(log_q)
  integrand = likelihood_weight * log_likelihood - kl_weight * (log_q - log_p)
  return jnp.broadcast_to(integrand, shape).mean(axis=axis)


def iw_bound(log_weights: ArrayLike, axis: int = 0) -> Array:
  """Importance-weighted bound `logsumexp_k(log w_k) - log K` over `axis` (K samples).

  With `w_k = p(D, θ_k) / q(θ_k)`, θ_k ~ q: `ELBO ≤ E[iw_bound] ≤ log p(D)`; K = 1 gives
  the single-sample ELBO and the bound tightens as K grows (Burda et al. 2016).

  Args:
    log_weights: `log p(D, θ_k) - log q(θ_k)`, the K samples along `axis`.
    axis: the sample axis.

  Returns:
    The bound, `log_weights` without `axis`.
  """
  _checks.check_floating("log_weights", log_weights)
  ndim = np.ndim(log_weights)
  if ndim == 0:
    raise ValueError("log_weights must have a sample axis, got a scalar")
  if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
    raise ValueError(f"axis must be an integer in [-{ndim}, {ndim}), got {axis!r}")
  _checks.check_nonempty("log_weights", log_weights, axis)
  num_samples = np.shape(log_weights)[axis]
  return jax.nn.logsumexp(jnp.asarray(log_weights), axis=axis) - math.log(num_samples)


def _check_steps(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_unit(name: str, value, *, low_open: bool = False) -> None:
  ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
  if not ok or not math.isfinite(value) or not (0.0 < value if low_open else 0.0 <= value) \
      or value > 1.0:
    raise ValueError(f"{name} must be a number in {'(0' if low_open else '[0'}, 1], "
                     f"got {value!r}")


def linear_anneal(step: ArrayLike, num_steps: int, start: float, fraction: float) -> Array:
  """`β_t = min(1, start + (1 - start) t / (fraction · num_steps))`, and 1 throughout when
  fewer than one step anneals.

  The weight rises linearly from `start` at t = 0 to 1 at t = fraction · num_steps, then
  stays at 1; e.g. Rezende & Mohamed's `β_t = min(1, 0.01 + t / 10^4)` is
  `start = 0.01, fraction · num_steps = 10^4 / 0.99`.

  Args:
    step: the step t (may be traced).
    num_steps: total number of training steps (>= 1).
    start: β_0 in [0, 1].
    fraction: the fraction of the steps spent annealing, in [0, 1].

  Returns:
    β_t, a float32 scalar (the shape of `step`).
  """
  _check_steps("num_steps", num_steps)
  _check_unit("start", start)
  _check_unit("fraction", fraction)
  if jnp.result_type(step) == jnp.bool_:
    raise TypeError("step must be an integer or float step count, got a bool")
  _checks.check_nonnegative("step", step)  # a negative step would give a weight below start
  anneal_steps = fraction * num_steps
  if anneal_steps < 1:
    return jnp.ones(np.shape(step), jnp.float32)
  progress = jnp.asarray(step, jnp.float32) / anneal_steps
  return jnp.minimum(1.0, start + (1.0 - start) * progress)


def kl_weight_schedule(num_steps: int, fraction: float, start: float = 0.01) -> Schedule:
  """The schedule `step -> linear_anneal(step, num_steps, start, fraction)`, checked now.

  Used as the KL weight β of `elbo` (warm-up) or as the inverse temperature of a tempered
  target `p^β` (the annealed reverse KL `E_q[log q - β log p~]`, Eq. 9.3 tempered).
  """
  _check_steps("num_steps", num_steps)
  _check_unit("fraction", fraction)
  _check_unit("start", start)
  return lambda step: linear_anneal(step, num_steps, start, fraction)


def constant_then_cosine(learning_rate: float, num_steps: int, decay_fraction: float,
                         final_scale: float = 0.05) -> Union[float, optax.Schedule]:
  """`learning_rate` held constant, then cosine-decayed over the last `decay_fraction` of
  the steps to `final_scale · learning_rate` (optax's cosine decay):

      η_t = η                                                   t < T - D
      η_t = η (s + (1 - s) (1 + cos(π (t - T + D) / D)) / 2)    otherwise,

  with T = num_steps, D = round(decay_fraction · T), s = final_scale.

  Args:
    learning_rate: η > 0.
    num_steps: T >= 1.
    decay_fraction: in [0, 1]; when D < 1 the rate stays constant and the float
      `learning_rate` itself is returned (so an optimizer built on it is the plain one).
    final_scale: s in [0, 1].

  Returns:
    A float or an optax schedule.
  """
  ok = (isinstance(learning_rate, (int, float, np.floating)) and not isinstance(learning_rate, bool)
        and math.isfinite(learning_rate) and learning_rate > 0)
  if not ok:
    raise ValueError(f"learning_rate must be a finite number > 0, got {learning_rate!r}")
  _check_steps("num_steps", num_steps)
  _check_unit("decay_fraction", decay_fraction)
  _check_unit("final_scale", final_scale)
  decay_steps = int(round(decay_fraction * num_steps))
  if decay_steps < 1:
    return learning_rate
  decay = optax.cosine_decay_schedule(learning_rate, decay_steps, alpha=final_scale)
  if decay_steps >= num_steps:
    return decay
  return optax.join_schedules([optax.constant_schedule(learning_rate), decay],
                              [num_steps - decay_steps])
