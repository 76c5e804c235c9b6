"""Langevin adversarial sample search (LASS, Alg. 1) and the critical sample ratio (3.4.1).

A sample x is *critical* (Eq. 3.1) when some x̂ with ‖x − x̂‖∞ ≤ r is classified
differently: `argmax_i f_i(x) ≠ argmax_j f_j(x̂)` (the predicted label, not the true one).
LASS searches the box by Langevin dynamics on the fast gradient sign method:

    x̃ ← x̃ + α · sign(∇_x̃ ℓ(f(x̃), k)) + β · η,   η ~ N(0, I),   k = argmax f(x),

where ℓ is the cross-entropy (so the step climbs the loss of the label predicted at x),
then clips every coordinate into the box `[x − r, x + r]` (Alg. 1, lines 6-8) and into the
data range, and stops as soon as `argmax f(x̃) ≠ k` (lines 9-12). The critical sample
ratio (CSR) is the fraction of a set that is critical.

Here the search is one `lax.while_loop` over iterations, batched over samples: each
sample has a done flag and is frozen at its critical point once found, and the loop exits
early when every sample is done (or at the iteration limit). Each sample draws its noise
from its own key, so a sample's search does not depend on which other samples share the
batch.

Units (thesis 3.4.2, footnotes 4 and 6): α = 0.25, β = 0.2 and r = 0.3 are pixel values
on a 0-255 scale; they are rescaled to the data by `(high − low) / pixel_range` when a
`data_range` is given (for [0, 1] data: r = 0.3 / 255).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, PRNGKey

LogitsFn = Callable[[Array], Array]  # f32[B, ...] -> f32[B, K], sample-wise independent

ALPHA = 0.25
BETA = 0.2
RADIUS = 0.3
MAX_ITERATIONS = 100
PIXEL_RANGE = 255.0


class LASSResult(NamedTuple):
  """What `lass` found."""
  points: Array      # f32[B, ...]: x̂ for critical samples, the last iterate for the others
  critical: Array    # bool[B]
  iterations: Array  # i32[]: loop iterations run (<= max_iterations; fewer on early exit)
  found_at: Array    # i32[B]: iteration (1-based) at which a sample turned critical, 0 if never


def _check_number(name: str, value, *, positive: bool) -> None:
  if np.ndim(value) != 0:
    raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
  if _checks.is_concrete(value):
    v = float(np.asarray(value))
    if not math.isfinite(v) or (v <= 0 if positive else v < 0):
      raise ValueError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                       f"got {v}")


def _check_search_args(x, alpha, beta, radius, max_iterations, pixel_range, data_range) -> None:
  _checks.check_floating("x", x)
  if np.ndim(x) < 2:
    raise ValueError(f"x must be a batch [B, ...] of at least rank 2, got shape {np.shape(x)}")
  _checks.check_nonempty("x", x)
  _check_number("alpha", alpha, positive=False)
  _check_number("beta", beta, positive=False)
  _check_number("radius", radius, positive=True)
  _check_number("pixel_range", pixel_range, positive=True)
  if isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer)) \
      or max_iterations < 1:
    raise ValueError(f"max_iterations must be a positive int, got {max_iterations!r}")
  if data_range is not None:
    if len(data_range) != 2 or not all(math.isfinite(float(v)) for v in data_range) \
        or not float(data_range[0]) < float(data_range[1]):
      raise ValueError(f"data_range must be (low, high) with finite low < high, got {data_range}")


def predicted_label_loss(logits_fn: LogitsFn, x: Array, labels: Array) -> Array:
  """`Σ_b ℓ(f(x_b), k_b)`: summed, so its gradient is every sample's own gradient."""
  return _summed_label_loss(logits_fn(x), labels)


def _summed_label_loss(logits: Array, labels: Array) -> Array:
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.sum(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def lass(logits_fn: LogitsFn, x: Array, key: PRNGKey, *, alpha=ALPHA, beta=BETA,
         radius=RADIUS, max_iterations: int = MAX_ITERATIONS, pixel_range=PIXEL_RANGE,
         data_range: Optional[tuple[float, float]] = (0.0, 1.0),
         early_exit: bool = True) -> LASSResult:
  """Langevin adversarial sample search (Alg. 1), batched over the samples of `x`.

  Args:
    logits_fn: `f32[B, ...] -> f32[B, K]` logits, each row depending only on its own input
      (a network in evaluation mode).
    x: f32[B, ...] the samples.
    key: PRNG key (split into one key per sample; `fold_in(sample_key, iteration)` per step).
    alpha: FGSM step size, in pixel units (see module docstring).
    beta: scale of the Gaussian (Langevin) noise, in pixel units.
    radius: half-width r of the L∞ box, in pixel units (> 0).
    max_iterations: iteration limit.
    pixel_range: the pixel scale the three values above are given in (255).
    data_range: `(low, high)` of the data: iterates are clipped into it (then into the box,
      which wins where x lies outside the range) and the values are rescaled by
      `(high − low) / pixel_range`. `None`: no clipping, and alpha, beta and
      radius are taken in data units as they are.
    early_exit: stop once every sample is done (the default); `False` runs to the limit,
      which gives the same points and flags.

  Returns:
    `LASSResult(points, critical, iterations, found_at)`.
  """
  _check_search_args(x, alpha, beta, radius, max_iterations, pixel_range, data_range)
  x = jnp.asarray(x)
  if data_range is not None:
    low, high = float(data_range[0]), float(data_range[1])
    scale = (high - low) / pixel_range
  else:
    low, high, scale = -jnp.inf, jnp.inf, 1.0
  alpha, beta, radius = (jnp.asarray(v, x.dtype) * scale for v in (alpha, beta, radius))
  batch = x.shape[0]
  sample_keys = jax.random.split(key, batch)
  labels = jnp.argmax(logits_fn(x), axis=-1)
  # Clipped into the data range first and into the box last, so that ‖x̂ − x‖∞ ≤ r holds
  # also for an x outside the data range (randX noise, normalized data), where the box
  # and the range need not meet; for x inside the range this is the clip into their
  # intersection.
  box_low, box_high = x - radius, x + radius
  into_box = lambda z: jnp.clip(jnp.clip(z, low, high), box_low, box_high)
  per_sample = (batch,) + (1,) * (x.ndim - 1)

  def loss_and_logits(z):
    logits = logits_fn(z)
    return _summed_label_loss(logits, labels), logits

  # One forward and one backward pass per iteration: the forward pass at the candidate
  # gives both the check (has its label flipped?) and, where it has not, the next
  # iteration's gradient, which is carried (a separate check pass would make three).
  grad_and_logits = jax.grad(loss_and_logits, has_aux=True)

  def cond(carry):
    i, _, _, done, _ = carry
    go = i < max_iterations
    return go & ~jnp.all(done) if early_exit else go

  def body(carry):
    i, x_tilde, grad, done, found_at = carry
    noise = jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, i), x.shape[1:],
                                                 x.dtype))(sample_keys)
    candidate = into_box(x_tilde + alpha * jnp.sign(grad) + beta * noise)
    grad, logits = grad_and_logits(candidate)  # used only where the search goes on
    flipped = jnp.argmax(logits, axis=-1) != labels
    x_tilde = jnp.where(done.reshape(per_sample), x_tilde, candidate)
    newly = flipped & ~done
    found_at = jnp.where(newly, i + 1, found_at)
    return i + 1, x_tilde, grad, done | newly, found_at

  init = (jnp.int32(0), x, grad_and_logits(x)[0], jnp.zeros(batch, bool),
          jnp.zeros(batch, jnp.int32))
  iterations, points, _, critical, found_at = jax.lax.while_loop(cond, body, init)
  return LASSResult(points, critical, iterations, found_at)


def fgsm_search(logits_fn: LogitsFn, x: Array, *, radius=RADIUS, pixel_range=PIXEL_RANGE,
                data_range: Optional[tuple[float, float]] = (0.0, 1.0)) -> LASSResult:
  """The FGSM-only search LASS is compared with: one step of size r, no noise (β = 0).

  `x̂ = clip(x + r · sign(∇_x ℓ(f(x), k)))`: the corner of the box that FGSM points at.
  """
  return lass(logits_fn, x, jax.random.PRNGKey(0), alpha=radius, beta=0.0, radius=radius,
              max_iterations=1, pixel_range=pixel_range, data_range=data_range)


def critical_sample_ratio(logits_fn: LogitsFn, x: Array, key: PRNGKey, **lass_kwargs) -> Array:
  """CSR = #critical samples / |D| (3.4.1), with critical samples found by `lass`."""
  return jnp.mean(lass(logits_fn, x, key, **lass_kwargs).critical.astype(jnp.float32))
