"""The explicit regularizers compared in thesis 3.5 (Figs. 3.10, 3.11), as one registry.

A `Regularization` holds one strength per regularizer; a strength of zero switches that
regularizer off. Its fields are arrays, so a whole grid of (regularizer, strength) settings
is a vmap axis of one compiled training program: every setting runs the same code with
its own strengths.

========================  =================================  ======================
name                      what it does                       thesis range (3.5)
========================  =================================  ======================
``dropout``               inverted dropout on hidden units   0 - 0.9
``input_dropout``         inverted dropout on the inputs     0 - 0.9
``input_noise``           x + σ·ε on the inputs              σ in 0 - 5
``hidden_noise``          h + σ·ε on hidden units            σ in 0 - 0.3
``weight_decay``          + λ/2 ‖θ‖² in the loss              λ in 0 - 1
``adversarial``           (1-w)·L(x) + w·L(x̂), x̂ from LASS   w in 0.2 - 0.7
========================  =================================  ======================

Adversarial training uses the points LASS (Alg. 1) finds with its default parameters
(thesis footnote 7): x̂ is the critical point for critical samples and x itself for the
others, so the adversarial term only differs from the clean loss on critical samples.
The thesis pairs it with dropout ("dropout + adversarial training").
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks

from jaxthesis.typing import Array, PRNGKey


class Regularization(NamedTuple):
  """Strengths of every regularizer (0 = off); scalars, or `[R]` arrays for a sweep."""
  dropout: Array = 0.0
  input_dropout: Array = 0.0
  input_noise: Array = 0.0
  hidden_noise: Array = 0.0
  weight_decay: Array = 0.0
  adversarial: Array = 0.0


class Regularizer(NamedTuple):
  """One registry entry: the strength's field, its valid range and the thesis's range."""
  field: str
  low: float
  high: float
  high_inclusive: bool
  thesis_range: tuple[float, float]
  description: str


REGULARIZERS: dict[str, Regularizer] = {
    "dropout": Regularizer("dropout", 0.0, 1.0, False, (0.0, 0.9),
                           "inverted dropout on every hidden layer"),
    "input_dropout": Regularizer("input_dropout", 0.0, 1.0, False, (0.0, 0.9),
                                 "inverted dropout on the input pixels"),
    "input_noise": Regularizer("input_noise", 0.0, math.inf, False, (0.0, 5.0),
                               "additive Gaussian noise of this std on the inputs"),
    "hidden_noise": Regularizer("hidden_noise", 0.0, math.inf, False, (0.0, 0.3),
                                "additive Gaussian noise of this std on hidden units"),
    "weight_decay": Regularizer("weight_decay", 0.0, math.inf, False, (0.0, 1.0),
                                "L2 penalty weight_decay/2 · ‖θ‖² added to the loss"),
    "adversarial": Regularizer("adversarial", 0.0, 1.0, True, (0.2, 0.7),
                               "weight w of the loss on LASS critical points"),
}


def _check_strength(name: str, value) -> float:
  entry = REGULARIZERS[name]
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise TypeError(f"{name} strength must be a number, got {type(value).__name__}")
  value = float(value)
  upper_ok = value <= entry.high if entry.high_inclusive else value < entry.high
  if not (math.isfinite(value) and value >= entry.low and upper_ok):
    bracket = "]" if entry.high_inclusive else ")"
    raise ValueError(f"{name} strength must lie in [{entry.low:g}, {entry.high:g}{bracket}, "
                     f"got {value}")
  return value


def regularization(**strengths: float) -> Regularization:
  """A `Regularization` from named strengths, e.g. `regularization(dropout=0.5)`.

  Unknown names and out-of-range strengths raise (before any tracing).
  """
  unknown = [k for k in strengths if k not in REGULARIZERS]
  if unknown:
    raise ValueError(f"unknown regularizer {', '.join(map(repr, unknown))}; choose from "
                     f"{', '.join(REGULARIZERS)}")
  values = {k: jnp.float32(_check_strength(k, v)) for k, v in strengths.items()}
  return Regularization(**{f: values.get(f, jnp.float32(0.0)) for f in Regularization._fields})


def stack(settings: Sequence[Mapping[str, float]]) -> Regularization:
  """`[R]`-stacked `Regularization` from a list of `{name: strength}` dicts (one per run)."""
  if not settings:
    raise ValueError("settings must hold at least one {name: strength} dict, got none")
  regs = [regularization(**dict(s)) for s in settings]
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *regs)


def _when_on(strength: Array, fn, x: Array) -> Array:
  """`fn(x)` where the regularizer's `strength` is non-zero, else `x` unchanged.

  A strength of zero leaves `x` exactly as it is, so its random draws can be skipped: they
  are not traced at all for a concrete zero, and are skipped at run time by `lax.cond` for
  a traced one (a real branch inside `lax.map` / `scan`, e.g. the CPU restart layout;
  under `vmap` with per-restart strengths XLA computes both sides and selects).
  """
  if _checks.is_concrete(strength) and not np.any(np.asarray(strength)):
    return x
  if np.ndim(strength):  # one strength per example or unit: no single branch
    return fn(x)
  return jax.lax.cond(strength != 0, fn, lambda z: z, x)


def _dropout(key: PRNGKey, x: Array, rate: Array) -> Array:
  def drop(x):
    keep = 1.0 - rate
    mask = jax.random.uniform(key, x.shape) < keep
    return jnp.where(mask, x / keep, 0.0)
  return _when_on(rate, drop, x)


def _noise(key: PRNGKey, x: Array, std: Array) -> Array:
  return _when_on(std, lambda x: x + std * jax.random.normal(key, x.shape, x.dtype), x)


def perturb_inputs(key: PRNGKey, x: Array, reg: Regularization) -> Array:
  """Input dropout, then input Gaussian noise (training-time only)."""
  drop_key, noise_key = jax.random.split(key)
  return _noise(noise_key, _dropout(drop_key, x, reg.input_dropout), reg.input_noise)


def perturb_hidden(key: PRNGKey, h: Array, reg: Regularization) -> Array:
  """Hidden dropout, then hidden Gaussian noise (training-time only)."""
  drop_key, noise_key = jax.random.split(key)
  return _noise(noise_key, _dropout(drop_key, h, reg.dropout), reg.hidden_noise)


def weight_penalty(reg: Regularization, params) -> Array:
  """`weight_decay / 2 · Σ ‖θ‖²` over every parameter leaf (not computed where it is 0)."""
  squares = lambda p: sum(jnp.sum(jnp.square(q)) for q in jax.tree_util.tree_leaves(p))
  zero = lambda p: jnp.zeros((), jnp.float32)
  if _checks.is_concrete(reg.weight_decay) and not np.any(np.asarray(reg.weight_decay)):
    return zero(params)
  wd = jnp.asarray(reg.weight_decay, jnp.float32)
  if wd.ndim:
    return 0.5 * wd * squares(params)
  return jax.lax.cond(wd != 0, lambda p: 0.5 * wd * squares(p), zero, params)
