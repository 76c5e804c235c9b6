"""Transformers: invertible scalar maps whose weights come from an autoregressive conditioner.

In a neural autoregressive flow (eq. 9.4 of the thesis) each output is
`y_t = tau(c(x_{1:t-1}), x_t)`: the conditioner `c` emits *pseudo-parameters* and the
transformer `tau` is a strictly increasing function of the scalar `x_t`. Every transformer
here shares one interface, the `Transformer` NamedTuple:

* `init(key) -> params`: the transformer's own statistical parameters (empty for the
  affine and DSF transformers; the learned d x d weights of DDSF with conditional weight
  normalization).
* `forward_and_log_det(params, pseudo, x) -> (y, log dy/dx)`: elementwise over `x` of
  shape S with `pseudo` of shape S + (num_pseudo_params,).
* `inverse(params, pseudo, y) -> x`: closed form (affine) or bisection (DSF, DDSF).

All of them map all-zero pseudo-parameters to the identity (except the IAF gate, whose
sigmoid gate cannot reach 1; see `iaf_gate_transformer`), so a flow whose conditioner
starts with near-zero outputs starts near the identity. Log-derivatives are computed in log
space (log-sigmoid, log-softmax, log-sum-exp) and stay finite for |x| up to 1e4.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis.flows import bisection
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

ForwardFn = Callable[[Params, Array, Array], tuple[Array, Array]]
InverseFn = Callable[[Params, Array, Array], Array]

# Default squeeze of sigmoid mixtures into (delta/2, 1 - delta/2) before the logit, so that
# outputs stay within about +-14.5.
SQUEEZE_DELTA = 1e-6


class Transformer(NamedTuple):
  """A family of strictly increasing scalar bijections indexed by pseudo-parameters.

  Attributes:
    name: registry name, e.g. "dsf".
    num_pseudo_params: K, the number of pseudo-parameters per dimension the conditioner
      must emit.
    init: `(key) -> params`, the transformer's own learned parameters (a pytree, possibly
      empty).
    forward_and_log_det: `(params, pseudo [S, K], x [S]) -> (y [S], log dy/dx [S])`.
    inverse: `(params, pseudo [S, K], y [S]) -> x [S]`; not differentiable for the
      bisection-based transformers.
    identity_at_zero: whether all-zero pseudo-parameters give the identity map.
    exact_inverse: whether `inverse` is closed-form (else bisection).
  """
  name: str
  num_pseudo_params: int
  init: Callable[[PRNGKey], Params]
  forward_and_log_det: ForwardFn
  inverse: InverseFn
  identity_at_zero: bool = True
  exact_inverse: bool = True


# --------------------------------------------------------------------------- helpers


def _inverse_softplus(value: float) -> float:
  return float(np.log(np.expm1(value)))


def _positive(raw: Array, minimum: float) -> Array:
  """`softplus(raw + c) + minimum` with `c` chosen so that raw = 0 maps to exactly 1."""
  return jax.nn.softplus(raw + _inverse_softplus(1.0 - minimum)) + minimum


def _no_params(key: PRNGKey) -> Params:
  del key
  return {}


def check_transformer_inputs(transformer: Transformer, pseudo: ArrayLike, x: ArrayLike,
                             x_name: str = "x") -> None:
  """Validates `pseudo` [S, K] against `x` [S] in Python (before tracing)."""
  from jaxthesis import _checks
  _checks.check_floating(x_name, x)
  _checks.check_floating("pseudo", pseudo)
  k = transformer.num_pseudo_params
  if np.ndim(pseudo) != np.ndim(x) + 1 or np.shape(pseudo)[-1] != k:
    raise ValueError(f"pseudo must have shape {x_name}.shape + ({k},) = "
                     f"{tuple(np.shape(x)) + (k,)} for the {transformer.name!r} transformer, "
                     f"got {tuple(np.shape(pseudo))}")
  if tuple(np.shape(pseudo)[:-1]) != tuple(np.shape(x)):
    raise ValueError(f"pseudo.shape[:-1] must equal {x_name}.shape {tuple(np.shape(x))}, got "
                     f"{tuple(np.shape(pseudo))}")


def _log_sigmoid_mixture_logit(log_w: Array, pre: Array, delta: float
                               ) -> tuple[Array, Array]:
  """`logit(squeeze(sum_j w_j sigmoid(pre_j)))` and `log d logit(squeeze(p)) / dp`.

  `p = sum_j w_j sigmoid(pre_j)` lies in (0, 1); it is squeezed to
  `p' = (1 - delta) p + delta / 2`. Both `log p'` and `log(1 - p')` are formed from
  log-sigmoids with log-sum-exp, so neither saturates to log 0.

  Args:
    log_w: log mixture weights (rows sum to one in probability), [..., m, d].
    pre: pre-activations [..., d] (broadcast against the m rows).
    delta: squeeze.

  Returns:
    `(value [..., m], log_dvalue_dp [..., m])`.
  """
  log_p = jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(pre)[..., None, :], axis=-1)
  log_q = jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(-pre)[..., None, :], axis=-1)
  log_keep, log_half_delta = math.log1p(-delta), math.log(delta / 2)
  log_p = jnp.logaddexp(log_keep + log_p, log_half_delta)
  log_q = jnp.logaddexp(log_keep + log_q, log_half_delta)
  return log_p - log_q, log_keep - log_p - log_q


def _logit_of_unsqueezed(y: Array, delta: float) -> Array:
  """For target `y = logit(p')`, returns `logit(p)` where `p' = (1 - delta) p + delta/2`.

  Computed from log-sigmoids; `y` must lie strictly inside +-logit(1 - delta/2).
  """
  half = delta / 2
  ls, lms = jax.nn.log_sigmoid(y), jax.nn.log_sigmoid(-y)
  log_p = ls + jnp.log1p(-half * jnp.exp(-ls))
  log_q = lms + jnp.log1p(-half * jnp.exp(-lms))
  return log_p - log_q


def _clip_to_range(y: Array, delta: float) -> Array:
  """Clips targets into the open output range of a squeezed sigmoid mixture."""
  edge = math.log1p(-delta / 2) - math.log(delta / 2)  # logit(1 - delta/2), ~14.5
  margin = 1e-3
  return jnp.clip(y, -edge + margin, edge - margin)


# ---------------------------------------------------------------------------- affine


def affine_transformer(min_scale: float = 1e-3) -> Transformer:
  """The affine transformer `y = mu + sigma * x` (eq. 9.5 of the thesis).

  Pseudo-parameters `(mu, s)` with `sigma = softplus(s + c) + min_scale`, `c` such that
  `s = 0` gives `sigma = 1`; `log dy/dx = log sigma`.

  Args:
    min_scale: lower bound of sigma (> 0).

  Returns:
    A `Transformer` with 2 pseudo-parameters per dimension.
  """
  if not 0 < min_scale < 1:
    raise ValueError(f"min_scale must be in (0, 1), got {min_scale!r}")

  def forward_and_log_det(params, pseudo, x):
    del params
    mu, sigma = pseudo[..., 0], _positive(pseudo[..., 1], min_scale)
    return mu + sigma * x, jnp.log(sigma)

  def inverse(params, pseudo, y):
    del params
    mu, sigma = pseudo[..., 0], _positive(pseudo[..., 1], min_scale)
    return (y - mu) / sigma

  return Transformer("affine", 2, _no_params, forward_and_log_det, inverse)


def iaf_gate_transformer(gate_bias: float = 3.0) -> Transformer:
  """The gated IAF transformer `y = sigma * x + (1 - sigma) * mu` (eq. 9.6).

  Pseudo-parameters `(mu, s)` with `sigma = sigmoid(s + gate_bias)`; `log dy/dx =
  log_sigmoid(s + gate_bias)`. The gate cannot open fully, so all-zero pseudo-parameters
  give `y = sigmoid(gate_bias) x` (0.95 x by default), close to but not the identity.

  Args:
    gate_bias: the gate's offset (Kingma et al. start the gate near open).

  Returns:
    A `Transformer` with 2 pseudo-parameters per dimension.
  """
  gate_bias = float(gate_bias)

  def forward_and_log_det(params, pseudo, x):
    del params
    mu, s = pseudo[..., 0], pseudo[..., 1] + gate_bias
    sigma = jax.nn.sigmoid(s)
    return sigma * x + (1 - sigma) * mu, jax.nn.log_sigmoid(s)

  def inverse(params, pseudo, y):
    del params
    mu, s = pseudo[..., 0], pseudo[..., 1] + gate_bias
    sigma = jax.nn.sigmoid(s)
    return (y - (1 - sigma) * mu) / sigma

  return Transformer("iaf_gate", 2, _no_params, forward_and_log_det, inverse,
                     identity_at_zero=False)


# ------------------------------------------------------------------------------- DSF


def dsf_transformer(hidden_units: int = 16, *, delta: float = SQUEEZE_DELTA,
                    min_slope: float = 1e-3, num_bisection_steps: int = 60) -> Transformer:
  """The deep sigmoidal flow transformer (eq. 9.8 of the thesis).

  `y = logit(squeeze(w^T sigmoid(a x + b)))` with `d = hidden_units` sigmoid units,
  `a = softplus(.) + min_slope > 0`, `w = softmax(.)`, and
  `squeeze(p) = (1 - delta) p + delta / 2` so that y stays within +-logit(1 - delta/2).
  Pseudo-parameters per dimension: `(a_raw [d], b [d], w_logits [d])`; all zero gives
  `a = 1, b = 0` and uniform `w`, i.e. `y = logit(squeeze(sigmoid(x)))`, the identity up
  to the squeeze.

  `log dy/dx = log(1 - delta) - log p' - log(1 - p') +
  logsumexp_j(log w_j + log a_j + log_sigmoid(z_j) + log_sigmoid(-z_j))`, all in log space.

  The inverse is bisection on an exact bracket: the root of `sum_j w_j sigmoid(a_j x + b_j)
  = p` lies between `min_j` and `max_j` of `(logit p - b_j) / a_j`, so a fixed number of
  halvings reaches float precision and the whole inverse jits.

  Args:
    hidden_units: d, the number of sigmoid units (>= 1).
    delta: squeeze in (0, 1).
    min_slope: lower bound of the slopes a (> 0).
    num_bisection_steps: bisection steps of the inverse.

  Returns:
    A `Transformer` with `3 * hidden_units` pseudo-parameters per dimension.
  """
  _check_units("hidden_units", hidden_units)
  _check_delta(delta)
  if not 0 < min_slope < 1:
    raise ValueError(f"min_slope must be in (0, 1), got {min_slope!r}")
  d = hidden_units

  def unpack(pseudo):
    a = _positive(pseudo[..., :d], min_slope)
    b = pseudo[..., d:2 * d]
    log_w = jax.nn.log_softmax(pseudo[..., 2 * d:], axis=-1)
    return a, b, log_w

  def value_and_log_det(pseudo, x):
    a, b, log_w = unpack(pseudo)
    pre = a * x[..., None] + b
    y, log_dlogit = _log_sigmoid_mixture_logit(log_w[..., None, :], pre, delta)
    log_dp = jax.nn.logsumexp(
        log_w + jnp.log(a) + jax.nn.log_sigmoid(pre) + jax.nn.log_sigmoid(-pre), axis=-1)
    return y[..., 0], log_dlogit[..., 0] + log_dp

  def forward_and_log_det(params, pseudo, x):
    del params
    return value_and_log_det(pseudo, x)

  def inverse(params, pseudo, y):
    del params
    a, b, _ = unpack(pseudo)
    y = _clip_to_range(y, delta)
    roots = (_logit_of_unsqueezed(y, delta)[..., None] - b) / a
    lo, hi = roots.min(axis=-1), roots.max(axis=-1)
    pad = 1e-3 * (1 + jnp.abs(lo) + jnp.abs(hi))  # rounding slack around the exact bracket
    fn = lambda x: value_and_log_det(pseudo, x)[0]
    return bisection.bisect_increasing(fn, y, lo - pad, hi + pad, num_bisection_steps)

  return Transformer("dsf", 3 * d, _no_params, forward_and_log_det, inverse,
                     exact_inverse=False)


# ------------------------------------------------------------------------------ DDSF


class _LayerShape(NamedTuple):
  inputs: int
  hidden: int
  outputs: int


def _ddsf_shapes(hidden_units: int, num_layers: int) -> list[_LayerShape]:
  widths = [1] + [hidden_units] * (num_layers - 1) + [1]
  return [_LayerShape(widths[l], hidden_units, widths[l + 1]) for l in range(num_layers)]


def ddsf_transformer(hidden_units: int = 16, num_layers: int = 2, *,
                     conditional_weight_norm: bool = False, delta: float = SQUEEZE_DELTA,
                     min_slope: float = 1e-3, num_bisection_steps: int = 80,
                     num_bracket_expansions: int = 24) -> Transformer:
  """The deep dense sigmoidal flow transformer (eqs. 9.9-9.10 of the thesis).

  Layer l maps `h` (width n_in) to `logit(squeeze(w sigmoid(a * (u h) + b)))` (width n_out)
  through d sigmoid units, with row-softmax `u` [d, n_in] and `w` [n_out, d], positive `a`
  [d] and free `b` [d]; widths run 1 -> d -> ... -> d -> 1 over `num_layers` layers (one
  layer is the DSF). All entries of every layer Jacobian are positive, so the derivative
  of the scalar output is carried forward as the log of the vector `dh/dx`, one
  log-sum-exp contraction per weight matrix (eq. 9.10) -- at most rank-4 intermediates
  [..., n_out, d] and [..., d, n_in], never the rank-5 batch of Jacobian products.

  Pseudo-parameters per dimension, per layer: `a_raw [d], b [d]` and either

  * the full logits `u [d * n_in], w [n_out * d]` (O(d^2) per dimension), or
  * with `conditional_weight_norm=True` (Section 9.3.2), only O(d) column shifts
    `u_shift [n_in], w_shift [d]` added to learned logit matrices `U [d, n_in]`,
    `W [n_out, d]` held in `params` (randomly initialized). Shifting column j of every row
    rescales the weight of unit j per dimension, as conditional weight normalization
    rescales rows of a learned weight.

  All-zero pseudo-parameters give `a = 1, b = 0` and, whatever the (row-stochastic) `u`
  and `w`, every layer maps `x * 1` to `x * 1`: the identity up to the squeeze.

  The inverse brackets the root by growing `[-1, 1]` by 4x up to
  `num_bracket_expansions` times, then bisects.

  Args:
    hidden_units: d (>= 1).
    num_layers: L (>= 1).
    conditional_weight_norm: emit O(d) pseudo-parameters modulating learned weights.
    delta: squeeze in (0, 1).
    min_slope: lower bound of the slopes a.
    num_bisection_steps: bisection steps of the inverse.
    num_bracket_expansions: growth steps of the inverse's bracket.

  Returns:
    A `Transformer`.
  """
  _check_units("hidden_units", hidden_units)
  _check_units("num_layers", num_layers)
  _check_delta(delta)
  if not 0 < min_slope < 1:
    raise ValueError(f"min_slope must be in (0, 1), got {min_slope!r}")
  shapes = _ddsf_shapes(hidden_units, num_layers)
  cwn = bool(conditional_weight_norm)

  def layer_size(s):
    return 2 * s.hidden + ((s.inputs + s.hidden) if cwn else (s.hidden * (s.inputs + s.outputs)))

  sizes = [layer_size(s) for s in shapes]
  offsets = np.cumsum([0] + sizes)

  def init(key):
    if not cwn:
      return {}
    keys = jax.random.split(key, 2 * num_layers)
    return {"u": [jax.random.normal(keys[2 * l], (s.hidden, s.inputs)) for l, s in
                  enumerate(shapes)],
            "w": [jax.random.normal(keys[2 * l + 1], (s.outputs, s.hidden)) for l, s in
                  enumerate(shapes)]}

  def unpack(params, pseudo, l):
    s = shapes[l]
    p = pseudo[..., offsets[l]:offsets[l + 1]]
    a = _positive(p[..., :s.hidden], min_slope)
    b = p[..., s.hidden:2 * s.hidden]
    rest = p[..., 2 * s.hidden:]
    batch = p.shape[:-1]
    if cwn:
      u_logits = params["u"][l] + rest[..., None, :s.inputs]
      w_logits = params["w"][l] + rest[..., None, s.inputs:]
    else:
      u_logits = rest[..., :s.hidden * s.inputs].reshape(batch + (s.hidden, s.inputs))
      w_logits = rest[..., s.hidden * s.inputs:].reshape(batch + (s.outputs, s.hidden))
    return (a, b, jax.nn.log_softmax(u_logits, axis=-1),
            jax.nn.log_softmax(w_logits, axis=-1))

  def value_and_log_det(params, pseudo, x, with_log_det=True):
    h = x[..., None]
    log_dh = jnp.zeros_like(h)
    for l in range(num_layers):
      a, b, log_u, log_w = unpack(params, pseudo, l)
      pre = a * jnp.einsum("...ji,...i->...j", jnp.exp(log_u), h) + b
      h_next, log_dlogit = _log_sigmoid_mixture_logit(log_w, pre, delta)
      if with_log_det:
        log_dpre = jnp.log(a) + jax.nn.logsumexp(log_u + log_dh[..., None, :], axis=-1)
        log_dsig = jax.nn.log_sigmoid(pre) + jax.nn.log_sigmoid(-pre) + log_dpre
        log_dh = log_dlogit + jax.nn.logsumexp(log_w + log_dsig[..., None, :], axis=-1)
      h = h_next
    return h[..., 0], log_dh[..., 0]

  def forward_and_log_det(params, pseudo, x):
    return value_and_log_det(params, pseudo, x)

  def inverse(params, pseudo, y):
    y = _clip_to_range(y, delta)
    fn = lambda x: value_and_log_det(params, pseudo, x, with_log_det=False)[0]
    lo, hi = bisection.expand_bracket(fn, y, num_bracket_expansions)
    return bisection.bisect_increasing(fn, y, lo, hi, num_bisection_steps)

  name = "ddsf_cwn" if cwn else "ddsf"
  return Transformer(name, int(offsets[-1]), init, forward_and_log_det, inverse,
                     exact_inverse=False)


def _check_units(name: str, value: Any) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_delta(delta: float) -> None:
  if not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta!r}")


# --------------------------------------------------------------------------- registry

TRANSFORMERS: dict[str, Callable[..., Transformer]] = {
    "affine": affine_transformer,
    "iaf_gate": iaf_gate_transformer,
    "dsf": dsf_transformer,
    "ddsf": ddsf_transformer,
    "ddsf_cwn": lambda **kw: ddsf_transformer(conditional_weight_norm=True, **kw),
}


def make_transformer(name: str, **kwargs: Any) -> Transformer:
  """Builds a registered transformer by name ("affine", "iaf_gate", "dsf", "ddsf",
  "ddsf_cwn") with its keyword arguments."""
  if not isinstance(name, str) or name not in TRANSFORMERS:
    raise ValueError(f"transformer name must be one of {', '.join(map(repr, TRANSFORMERS))}; "
                     f"got {name!r}")
  return TRANSFORMERS[name](**kwargs)
