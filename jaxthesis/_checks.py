"""Input validation shared by public functions: run in Python, before tracing.

Every check names the argument, what was expected and what came in.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def shape_of(x: Any) -> tuple[int, ...]:
  return tuple(np.shape(x))


def check_rank(name: str, x: Any, rank: int | Sequence[int]) -> None:
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  if np.ndim(x) not in ranks:
    want = " or ".join(str(r) for r in ranks)
    raise ValueError(f"{name} must have rank {want}, got shape {shape_of(x)}")


def check_floating(name: str, x: Any) -> None:
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")


def check_nonempty(name: str, x: Any, axis: int = 0) -> None:
  shape = shape_of(x)
  if not shape or shape[axis] == 0:
    raise ValueError(f"{name} must be non-empty along axis {axis}, got shape {shape}")


def check_same_shape(name_a: str, a: Any, name_b: str, b: Any) -> None:
  if shape_of(a) != shape_of(b):
    raise ValueError(f"{name_b} must have the shape of {name_a} {shape_of(a)}, "
                     f"got {shape_of(b)}")


def is_concrete(x: Any) -> bool:
  return not isinstance(x, jax.core.Tracer)


def check_nonnegative(name: str, x: Any) -> None:
  """Rejects negative or non-finite values when `x` is concrete (no-op under tracing)."""
  if not is_concrete(x):
    return
  arr = np.asarray(x)
  if arr.size and not np.all(np.isfinite(arr)):
    raise ValueError(f"{name} must be finite, got {arr if arr.size < 8 else 'non-finite values'}")
  if arr.size and np.any(arr < 0):
    raise ValueError(f"{name} must be >= 0, got {arr if arr.size < 8 else 'negative values'}")


def check_scalar(name: str, x: Any, *, positive: bool = False, finite: bool = True) -> None:
  if np.ndim(x) != 0:
    raise ValueError(f"{name} must be a scalar, got shape {shape_of(x)}")
  if is_concrete(x):
    value = float(np.asarray(x))
    if finite and not math.isfinite(value):
      raise ValueError(f"{name} must be finite, got {value}")
    if positive and not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}")


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def check_callable(name: str, fn: Any, *, optional: bool = False) -> None:
  """Rejects a non-callable `fn` (None too, unless `optional`) with a TypeError naming it."""
  if fn is None and optional:
    return
  if not callable(fn):
    raise TypeError(f"{name} must be callable, got {type(fn).__name__} {fn!r:.60}")


def check_differentiable(name: str, x: Any) -> None:
  """Values a gradient is taken through: a floating-point array, or a Python int or
  float (a number, not an integer array). Integer and bool arrays, and bools, are
  rejected with a TypeError naming the argument (`jax.grad` cannot differentiate them,
  and a cast would hide the caller's mistake)."""
  if isinstance(x, (int, float)) and not isinstance(x, bool):
    return
  check_floating(name, x)


def check_below(name: str, x: Any, upper: int, what: str = "values",
                upper_name: Optional[str] = None) -> None:
  """Integers (class labels, positions) in `[0, upper)` when `x` is concrete and non-empty
  (no-op under tracing); `upper_name` says what the bound is in the message."""
  if not is_concrete(x) or np.size(x) == 0:
    return
  arr = np.asarray(x)
  if arr.min() < 0 or arr.max() >= upper:
    bound = f"{upper_name} = {upper}" if upper_name else str(upper)
    raise ValueError(f"{name} must hold {what} in [0, {bound}), got values in "
                     f"[{arr.min()}, {arr.max()}]")


def check_positive_int(name: str, value: Any) -> None:
  """A Python or numpy integer >= 1 (bools are not counts)."""
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
