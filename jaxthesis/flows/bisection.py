"""Jit-able scalar root finding for monotone functions: brackets and bisection.

Used to invert the neural transformers (DSF, DDSF), which have no closed-form inverse
(footnote 3 of chapter 9: "it is possible to approximate it numerically"). Everything is
elementwise over arrays and runs a fixed number of iterations, so it traces once and
jits. The solvers themselves are not differentiated (comparisons carry no gradient); the
transformers attach implicit-function-theorem derivatives to the solution instead (see
`jaxthesis.flows.transformers`).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike


class Solution(NamedTuple):
  """The result of `solve_increasing`.

  Attributes:
    root: the approximate roots [S].
    bracketed: bool [S], whether `fn(lower) <= target <= fn(upper)` held, i.e. whether the
      bracket provably contained a root; where it is False, `root` is only the bracket end
      nearer the target and is no solution. Where `fn(lower) == target` bisection
      converges to `lower`: a root, but on a map that has flattened to float resolution
      there (e.g. a bounded DDSF at -4^24 in float32) only one end of a wide preimage,
      possibly far from the point that was mapped; `unflag_flat_roots` flags roots whose
      slope underflows.
  """
  root: Array
  bracketed: Array


def _check_callable(name: str, fn) -> None:
  if not callable(fn):
    raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def _check_steps(name: str, value) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_bracket(target: ArrayLike, lower: ArrayLike, upper: ArrayLike) -> None:
  _checks.check_floating("target", target)
  for name, value in (("lower", lower), ("upper", upper)):
    _checks.check_floating(name, value)
    try:
      np.broadcast_shapes(np.shape(value), np.shape(target))
    except ValueError:
      raise ValueError(f"{name} must broadcast against target {np.shape(target)}, got shape "
                       f"{np.shape(value)}") from None


def steps_to_resolution(width: float, dtype) -> int:
  """Halvings that shrink a bracket of `width` below the resolution of `dtype` at 1.

  `ceil(log2(width)) + nmant + 1` halvings leave a bracket of width at most
  `2^-(nmant + 1)` (3e-8 in float32), half the float spacing just below 1; at |x| >= 1 the
  bracket has by then reached adjacent floats.

  Args:
    width: an upper bound on the bracket's width (> 0).
    dtype: the floating dtype the bisection runs in.

  Returns:
    The number of halvings, a Python int.
  """
  if not (isinstance(width, (int, float, np.floating)) and math.isfinite(width) and width > 0):
    raise ValueError(f"width must be a finite positive number, got {width!r}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"dtype must be a floating dtype, got {dtype}")
  return max(1, math.ceil(math.log2(width))) + int(jnp.finfo(dtype).nmant) + 1


def _halve(fn, target, lower, upper, num_steps):
  def halve(_, bracket):
    lo, hi = bracket
    mid = 0.5 * (lo + hi)
    below = fn(mid) < target
    return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

  lo, hi = jax.lax.fori_loop(0, num_steps, halve, (lower, upper))
  return 0.5 * (lo + hi)


def bisect_increasing(fn: Callable[[Array], Array], target: ArrayLike, lower: ArrayLike,
                      upper: ArrayLike, num_steps: int) -> Array:
  """Solves `fn(x) = target` elementwise for an increasing `fn` on `[lower, upper]`.

  Each step halves the bracket, keeping `fn(lower) < target <= fn(upper)`; after
  `num_steps` steps the midpoint is returned. If the target lies outside
  `[fn(lower), fn(upper)]` the answer converges to the nearer end; `solve_increasing`
  also says where that happened.

  Args:
    fn: elementwise increasing function, `x.shape -> x.shape`.
    target: values to reach, shape S.
    lower: lower ends of the brackets, broadcastable to S.
    upper: upper ends, broadcastable to S.
    num_steps: number of halvings (a Python int >= 1).

  Returns:
    The approximate roots, shape S.
  """
  _check_callable("fn", fn)
  _check_bracket(target, lower, upper)
  _check_steps("num_steps", num_steps)
  target = jnp.asarray(target)
  lower = jnp.broadcast_to(jnp.asarray(lower, target.dtype), target.shape)
  upper = jnp.broadcast_to(jnp.asarray(upper, target.dtype), target.shape)
  return _halve(fn, target, lower, upper, int(num_steps))


def solve_increasing(fn: Callable[[Array], Array], target: ArrayLike, lower: ArrayLike,
                     upper: ArrayLike, num_steps: int) -> Solution:
  """`bisect_increasing` plus a flag saying where the bracket held a root.

  Two more evaluations of `fn` check `fn(lower) <= target <= fn(upper)` (and that both
  are finite) at the start; bisection keeps that invariant, so where it holds the root
  lies in the final bracket. (Not `fn(lower) < target`: a root exactly at a bracket end,
  e.g. one that `expand_bracket` tried, must stay bracketed where two compilations of
  `fn` differ in the last bit; see `Solution` for maps that are flat at `lower`.)

  Args:
    fn: elementwise increasing function, `x.shape -> x.shape`.
    target: values to reach, shape S.
    lower: lower ends of the brackets, broadcastable to S.
    upper: upper ends, broadcastable to S.
    num_steps: number of halvings (a Python int >= 1).

  Returns:
    A `Solution(root, bracketed)`.
  """
  _check_callable("fn", fn)
  _check_bracket(target, lower, upper)
  _check_steps("num_steps", num_steps)
  target = jnp.asarray(target)
  lower = jnp.broadcast_to(jnp.asarray(lower, target.dtype), target.shape)
  upper = jnp.broadcast_to(jnp.asarray(upper, target.dtype), target.shape)
  f_lo, f_hi = fn(lower), fn(upper)
  bracketed = (f_lo <= target) & (target <= f_hi) & jnp.isfinite(f_lo) & jnp.isfinite(f_hi)
  return Solution(_halve(fn, target, lower, upper, int(num_steps)), bracketed)


def unflag_flat_roots(solution: Solution, log_slope: ArrayLike) -> Solution:
  """`solution` with `bracketed` False where the slope at the root underflows.

  Where a bounded map has flattened to float resolution, every point of a wide interval
  maps to the target, and bisection returns one end of it, possibly far from the point
  that was mapped; there `dx/dy = exp(-log_slope)` overflows. Such a root is no usable
  inverse, so it is flagged (the bijectors turn it into NaN, never a far-away finite
  value). Roots with `log_slope > log(tiny)` of the root's dtype (about -87 in float32)
  are kept as they were.

  Args:
    solution: a `Solution` of `solve_increasing`, roots [S].
    log_slope: `log fn'(root)` [S] (NaN or -inf also unflag the root).

  Returns:
    The `Solution` with the same roots.
  """
  if not isinstance(solution, Solution):
    raise TypeError(f"solution must be a bisection.Solution, got {type(solution).__name__}")
  _checks.check_floating("log_slope", log_slope)
  _checks.check_same_shape("solution.root", solution.root, "log_slope", log_slope)
  floor = math.log(float(jnp.finfo(jnp.result_type(solution.root)).tiny))
  return solution._replace(bracketed=solution.bracketed & (jnp.asarray(log_slope) > floor))


def expand_bracket(fn: Callable[[Array], Array], target: ArrayLike, num_expansions: int,
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
  _check_callable("fn", fn)
  _checks.check_floating("target", target)
  _check_steps("num_expansions", num_expansions)
  if not (isinstance(factor, (int, float, np.floating)) and factor > 1
          and math.isfinite(factor)):
    raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
  one = jnp.ones_like(jnp.asarray(target))

  def grow(_, bracket):
    lo, hi = bracket
    lo = jnp.where(fn(lo) >= target, lo * factor, lo)
    hi = jnp.where(fn(hi) < target, hi * factor, hi)
    return lo, hi

  return jax.lax.fori_loop(0, int(num_expansions), grow, (-one, one))
