"""Jit-able scalar root finding for monotone functions: brackets and bisection.

Used to invert the neural transformers (DSF, DDSF), which have no closed-form inverse
(footnote 3 of chapter 9: "it is possible to approximate it numerically"). Everything is
elementwise over arrays and runs a fixed number of iterations, so it traces once and
jits; it is not meant to be differentiated (comparisons carry no gradient).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxthesis.typing import Array


def bisect_increasing(fn: Callable[[Array], Array], target: Array, lower: Array,
                      upper: Array, num_steps: int) -> Array:
  """Solves `fn(x) = target` elementwise for an increasing `fn` on `[lower, upper]`.

  Each step halves the bracket, keeping `fn(lower) < target <= fn(upper)`; after
  `num_steps` steps the midpoint is returned. If the target lies outside
  `[fn(lower), fn(upper)]` the answer converges to the nearer end.

  Args:
    fn: elementwise increasing function, `x.shape -> x.shape`.
    target: values to reach, shape S.
    lower: lower ends of the brackets, shape S.
    upper: upper ends, shape S.
    num_steps: number of halvings (a Python int >= 1).

  Returns:
    The approximate roots, shape S.
  """
  if not isinstance(num_steps, int) or num_steps < 1:
    raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")

  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    below = fn(mid) < target
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, num_steps, halve, (lower, upper))
  return 0.5 * (lo + hi)


def expand_bracket(fn: Callable[[Array], Array], target: Array, num_expansions: int,
                   factor: float = 4.0) -> tuple[Array, Array]:
  """Grows `[-1, 1]` geometrically until it brackets the root of an increasing `fn`.

  After at most `num_expansions` growths of each end by `factor`, returns `(lo, hi)` with
  `fn(lo) < target <= fn(hi)` wherever the root lies within `factor**num_expansions`.

  Args:
    fn: elementwise increasing function.
    target: values to reach, shape S.
    num_expansions: number of growth steps (a Python int >= 1).
    factor: growth factor per step (> 1).

  Returns:
    `(lower, upper)`, each of shape S.
  """
  if not isinstance(num_expansions, int) or num_expansions < 1:
    raise ValueError(f"num_expansions must be a positive int, got {num_expansions!r}")
  if not factor > 1:
    raise ValueError(f"factor must be > 1, got {factor!r}")
  one = jnp.ones_like(target)

  def grow(_, bracket):
    lo, hi = bracket
    lo = jnp.where(fn(lo) >= target, lo * factor, lo)
    hi = jnp.where(fn(hi) < target, hi * factor, hi)
    return lo, hi

  return jax.lax.fori_loop(0, num_expansions, grow, (-one, one))
