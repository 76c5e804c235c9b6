"""Transformers: invertible scalar maps whose weights come from an autoregressive conditioner.

In a neural autoregressive flow (Eq. 9.4 of the thesis) each output is
`y_t = tau(c(x_{1:t-1}), x_t)`: the conditioner `c` emits *pseudo-parameters* and the
transformer `tau` is a strictly increasing function of the scalar `x_t`. Every transformer
here shares one interface, the `Transformer` NamedTuple:

* `init(key) -> params`: the transformer's own statistical parameters (empty for the
  affine and DSF transformers; the learned d x d weights of DDSF with conditional weight
  normalization).
* `forward_and_log_det(params, pseudo, x) -> (y, log dy/dx)`: elementwise over `x` of
  shape S with `pseudo` of shape S + (num_pseudo_params,).
* `inverse(params, pseudo, y) -> x`: closed form (affine, IAF gate) or bisection (DSF,
  DDSF), differentiable in all its arguments (implicit-function theorem, see
  `_implicit_inverse`); NaN where `y` cannot be inverted.
* `inverse_and_flag(params, pseudo, y) -> (x, inverted)`: the same plus the bool flag
  saying where the inverse exists (False only where `x` is NaN).

Bijections of the real line. By default every transformer is a bijection R -> R whose
derivative is bounded below by a positive constant (`surjective=True`), so the image is
all of R, every `y` has an inverse, and a flow's density integrates to one. The sigmoidal
transformers of Eqs. 9.8-9.10 are bounded (their image is at most
(-logit(1 - delta/2), logit(1 - delta/2)), about +-14.5, and stacked layers narrow it
further); they are mixed with a learned linear tail (`_linear_tail`):

    y = (1 - eps) S(x) + eps x,    dy/dx = (1 - eps) S'(x) + eps >= eps >= eps_min,

with `S` the thesis's sigmoidal map and `eps = eps_min + (1 - eps_min) sigmoid(t + t0)`
from one more pseudo-parameter `t`, offset so that `t = 0` gives the small
`tail_slope_init`. Because |S| < B (B = logit(1 - delta/2)), `y - eps x` lies within
`(1 - eps) B` of zero, so `y -> +-inf` as `x -> +-inf` (onto R), and the root of
`y = tau(x)` lies in the bracket `[(y - (1 - eps) B) / eps, (y + (1 - eps) B) / eps]`
(width below 2 B / eps_min), which a fixed number of halvings shrinks to float
resolution. `surjective=False` keeps the thesis's exact form (and its bounded image);
there, targets outside the image give NaN and `inverted = False`.

All of them map all-zero pseudo-parameters to the identity (except the IAF gate, whose
sigmoid gate cannot reach 1; see `iaf_gate_transformer`), up to the squeeze, so a flow
whose conditioner starts with near-zero outputs starts near the identity. Whatever can
underflow in a log-derivative is formed in log space or shifted by its largest term, so
values, log-derivatives and their gradients stay finite for |x| up to 1e4, both ways.

Every public function checks `pseudo` against `num_pseudo_params` and `x` (or `y`) in
Python before any array work (`check_transformer_inputs`), naming the argument.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from jaxthesis import _checks
from jaxthesis.flows import bisection
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

ForwardFn = Callable[[Params, Array, Array], tuple[Array, Array]]
InverseFn = Callable[[Params, Array, Array], Array]
InverseAndFlagFn = Callable[[Params, Array, Array], tuple[Array, Array]]

# Default squeeze of sigmoid mixtures into (delta/2, 1 - delta/2) before the logit, so that
# outputs stay within about +-14.5.
SQUEEZE_DELTA = 1e-6
# Defaults of the linear tail of the surjective sigmoidal transformers: its slope eps
# starts at TAIL_SLOPE_INIT (the thesis's map dominates) and never falls below
# MIN_TAIL_SLOPE (the lower bound of dy/dx).
TAIL_SLOPE_INIT = 1e-2
MIN_TAIL_SLOPE = 1e-3


class Transformer(NamedTuple):
  """A family of strictly increasing scalar bijections indexed by pseudo-parameters.

  Attributes:
    name: registry name, e.g. "dsf".
    num_pseudo_params: K, the number of pseudo-parameters per dimension the conditioner
      must emit.
    init: `(key) -> params`, the transformer's own learned parameters (a pytree, possibly
      empty).
    forward_and_log_det: `(params, pseudo [S, K], x [S]) -> (y [S], log dy/dx [S])`.
    inverse: `(params, pseudo [S, K], y [S]) -> x [S]`, differentiable (first order) in
      all arguments; NaN where `y` has no inverse (only for `surjective=False`).
    identity_at_zero: whether all-zero pseudo-parameters give the identity map.
    exact_inverse: whether `inverse` is closed-form (else bisection).
    inverse_and_flag: `(params, pseudo, y) -> (x [S], inverted [S] bool)`; `inverted` is
      False exactly where `x` is NaN: the bisection's bracket did not provably hold a
      root (y outside the image of a bounded transformer, or not finite).
    surjective: whether the map is onto R with dy/dx bounded away from zero.
    pseudo_groups: None, or sizes summing to K of the consecutive groups the transformer
      slices `pseudo` into (e.g. the DSF's `(3d, 1)`: its sigmoid units, then the tail);
      a conditioner may emit each group by its own product (`MADE(param_groups=...)`),
      which changes no value, only how fast XLA runs the slices.
  """
  name: str
  num_pseudo_params: int
  init: Callable[[PRNGKey], Params]
  forward_and_log_det: ForwardFn
  inverse: InverseFn
  identity_at_zero: bool = True
  exact_inverse: bool = True
  inverse_and_flag: Optional[InverseAndFlagFn] = None
  surjective: bool = True
  pseudo_groups: Optional[tuple[int, ...]] = None


# --------------------------------------------------------------------------- helpers


def _inverse_softplus(value: float) -> float:
  return float(np.log(np.expm1(value)))


def _logit(value: float) -> float:
  return float(np.log(value) - np.log1p(-value))


def _positive(raw: Array, minimum: float) -> Array:
  """`softplus(raw + c) + minimum` with `c` chosen so that raw = 0 maps to exactly 1."""
  return jax.nn.softplus(raw + _inverse_softplus(1.0 - minimum)) + minimum


def _no_params(key: PRNGKey) -> Params:
  del key
  return {}


def check_transformer_inputs(transformer: Transformer, pseudo: ArrayLike, x: ArrayLike,
                             x_name: str = "x") -> None:
  """Validates `pseudo` [S, K] against `x` [S] in Python (before tracing).

  Args:
    transformer: the `Transformer` whose `num_pseudo_params` K `pseudo` must match.
    pseudo: pseudo-parameters, floating, shape `x.shape + (K,)`.
    x: the points (or targets), floating.
    x_name: the name the caller gave `x` ("x" for the forward map, "y" for the inverse).

  Raises:
    TypeError: a non-floating `x` or `pseudo`.
    ValueError: a `pseudo` whose shape is not `x.shape + (K,)`.
  """
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


def _checked(transformer: Transformer, check_params: Optional[Callable[[Any], None]] = None
             ) -> Transformer:
  """`transformer` with every public function validating its inputs first (in Python)."""
  raw_forward, raw_inverse = transformer.forward_and_log_det, transformer.inverse
  raw_flagged = transformer.inverse_and_flag

  def check(params, pseudo, x, name):
    check_transformer_inputs(transformer, pseudo, x, name)
    if check_params is not None:
      check_params(params)
    # Python scalars, lists and numpy arrays become arrays, which every map can slice.
    return jnp.asarray(pseudo), jnp.asarray(x)

  @functools.wraps(raw_forward)
  def forward_and_log_det(params, pseudo, x):
    pseudo, x = check(params, pseudo, x, "x")
    return raw_forward(params, pseudo, x)

  @functools.wraps(raw_inverse)
  def inverse(params, pseudo, y):
    pseudo, y = check(params, pseudo, y, "y")
    return raw_inverse(params, pseudo, y)

  @functools.wraps(raw_flagged)
  def inverse_and_flag(params, pseudo, y):
    pseudo, y = check(params, pseudo, y, "y")
    return raw_flagged(params, pseudo, y)

  return transformer._replace(forward_and_log_det=forward_and_log_det, inverse=inverse,
                              inverse_and_flag=inverse_and_flag)


def _closed_form(name: str, num_pseudo_params: int, forward: ForwardFn, inverse: InverseFn,
                 **fields: Any) -> Transformer:
  """A checked transformer whose inverse is closed form (defined for every y)."""
  def inverse_and_flag(params, pseudo, y):
    return inverse(params, pseudo, y), jnp.ones(jnp.shape(y), bool)

  return _checked(Transformer(name, num_pseudo_params, fields.pop("init", _no_params),
                              forward, inverse, inverse_and_flag=inverse_and_flag, **fields))


def _implicit_inverse(forward: ForwardFn, solve: Callable[[Params, Array, Array],
                                                          bisection.Solution]
                      ) -> InverseAndFlagFn:
  """`(params, pseudo, y) -> (x, inverted)` with derivatives by the implicit-function theorem.

  `x` solves `tau(params, pseudo, x) = y`; differentiating that identity gives
  `dx = (dy - d_theta tau) / tau'(x)`, with `d_theta tau` the directional derivative of
  the forward map in the parameters (params, pseudo) at the solved `x`, and
  `tau'(x) = exp(log dy/dx)`. Written as a custom JVP (not a VJP) so that `jax.jacfwd`
  works too; reverse mode (`jax.grad`, `jax.vjp`) transposes it, which is the custom VJP
  `x_bar -> (-x_bar / tau' * d tau/d theta, x_bar / tau')`. Nothing is differentiated
  through the bisection. Where `inverted` is False the value is NaN and the derivative 0
  (so a loss that masks those points out keeps finite gradients). Higher orders apply the
  same rule again (the rule's primal is this function's own value).
  """
  def primal(params, pseudo, y):
    root, inverted = solve(params, pseudo, y)
    return jnp.where(inverted, root, jnp.nan), inverted

  @jax.custom_jvp
  def inverse_and_flag(params, pseudo, y):
    return primal(params, pseudo, y)

  def jvp(primals, tangents):
    params, pseudo, y = primals
    d_params, d_pseudo, d_y = tangents
    # The primal through the custom-JVP function itself, not `solve`: differentiating this
    # rule again (second order) then applies the rule again instead of differentiating
    # through the bisection, whose bracket ends would pass as the root's derivative.
    x, inverted = inverse_and_flag(params, pseudo, y)
    safe = jnp.where(inverted, x, jnp.zeros_like(x))
    (_, log_slope), (dy_theta, _) = jax.jvp(lambda p, q: forward(p, q, safe),
                                            (params, pseudo), (d_params, d_pseudo))
    dx = jnp.where(inverted, (d_y - dy_theta) * jnp.exp(-log_slope), 0.0)
    flag_tangent = np.zeros(np.shape(inverted), jax.dtypes.float0)
    return (x, inverted), (dx, flag_tangent)

  inverse_and_flag.defjvp(jvp)
  return inverse_and_flag


def _bisection_transformer(name: str, num_pseudo_params: int, forward: ForwardFn,
                           solve: Callable[[Params, Array, Array], bisection.Solution],
                           **fields: Any) -> Transformer:
  """A checked transformer inverted by `solve`, differentiable through the inverse."""
  inverse_and_flag = _implicit_inverse(forward, solve)
  check_params = fields.pop("check_params", None)

  def inverse(params, pseudo, y):
    return inverse_and_flag(params, pseudo, y)[0]

  return _checked(Transformer(name, num_pseudo_params, fields.pop("init", _no_params),
                              forward, inverse, exact_inverse=False,
                              inverse_and_flag=inverse_and_flag, **fields), check_params)


def _logit_of_unsqueezed(y: Array, delta: float) -> Array:
  """For target `y = logit(p')`, returns `logit(p)` where `p' = (1 - delta) p + delta/2`.

  Computed from log-sigmoids; NaN unless `y` lies strictly inside +-logit(1 - delta/2).
  """
  half = delta / 2
  ls, lms = jax.nn.log_sigmoid(y), jax.nn.log_sigmoid(-y)
  log_p = ls + jnp.log1p(-half * jnp.exp(-ls))
  log_q = lms + jnp.log1p(-half * jnp.exp(-lms))
  return log_p - log_q


def _squeeze_bound(delta: float) -> float:
  """B = logit(1 - delta/2), the bound |S(x)| < B of a squeezed sigmoidal map."""
  return math.log1p(-delta / 2) - math.log(delta / 2)


# ----------------------------------------------------------------------- linear tail


class _Tail(NamedTuple):
  """The tail slope `eps` of one point and `1 - eps`, both also as logs (each [...]).

  `d_slope` is `d eps / dt` and `sig` is `sigmoid(t + offset)`, which the DSF's closed-form
  derivative uses (`d log(1 - eps) / dt = -sig`).
  """
  slope: Array
  keep: Array
  log_slope: Array
  log_keep: Array
  d_slope: Array
  sig: Array


class _TailConfig(NamedTuple):
  """Static settings of the linear tail: `eps = min_slope + (1 - min_slope) sigmoid(t + offset)`."""
  min_slope: float
  offset: float
  bound: float  # B of the bounded map it is mixed with


def _tail_config(tail_slope_init: float, min_tail_slope: float, delta: float) -> _TailConfig:
  for arg, value in (("tail_slope_init", tail_slope_init), ("min_tail_slope", min_tail_slope)):
    if not isinstance(value, (int, float, np.floating)) or not 0 < value < 1:
      raise ValueError(f"{arg} must be a number in (0, 1), got {value!r}")
  if not min_tail_slope < tail_slope_init:
    raise ValueError(f"min_tail_slope must be below tail_slope_init {tail_slope_init!r}, got "
                     f"{min_tail_slope!r}")
  offset = _logit((tail_slope_init - min_tail_slope) / (1.0 - min_tail_slope))
  return _TailConfig(float(min_tail_slope), offset, _squeeze_bound(delta))


def _tail(raw: Array, config: _TailConfig) -> _Tail:
  """`eps = m + (1 - m) sigmoid(s)` and `1 - eps = (1 - m) sigmoid(-s)`, `s = t + offset`.

  Both sigmoids come from one `exp(-|s|)`, and `log sigmoid(-s) = -softplus(s)` from one
  `log1p`; `1 - eps` is formed as a product (no cancellation), `eps >= m` needs no care, so
  `log eps` is one `log`: three transcendentals per point in all.
  """
  s = raw + config.offset
  scale = 1.0 - config.min_slope
  e = jnp.exp(-jnp.abs(s))
  inv = 1.0 / (1.0 + e)
  positive = s >= 0
  sig = jnp.where(positive, inv, e * inv)
  sig_neg = jnp.where(positive, e * inv, inv)
  slope = config.min_slope + scale * sig
  log_keep = math.log(scale) - (jnp.maximum(s, 0.0) + jnp.log1p(e))
  return _Tail(slope, scale * sig_neg, jnp.log(slope), log_keep, scale * (e * inv * inv), sig)


def _linear_tail(bounded: Array, log_det_bounded: Array, x: Array, tail: _Tail
                 ) -> tuple[Array, Array]:
  """`y = (1 - eps) S + eps x` and `log dy/dx = logaddexp(log(1 - eps) + log S', log eps)`."""
  y = tail.keep * bounded + tail.slope * x
  return y, jnp.logaddexp(tail.log_keep + log_det_bounded, tail.log_slope)


def _tail_bracket(y: Array, tail: _Tail, config: _TailConfig) -> tuple[Array, Array]:
  """A bracket provably holding the root of `(1 - eps) S(x) + eps x = y` for |S| < B.

  `x = (y - (1 - eps) S(x)) / eps` with |S| < B gives
  `x in ((y - (1 - eps) B) / eps, (y + (1 - eps) B) / eps)`; the pad of
  `1e-5 (1 + (|y| + B) / eps)` absorbs rounding (S may reach B to float precision).
  """
  pad = 1e-5 * (1.0 + (jnp.abs(y) + config.bound) / tail.slope)
  half_width = tail.keep * config.bound / tail.slope
  centre = y / tail.slope
  return centre - half_width - pad, centre + half_width + pad


def _tail_steps(config: _TailConfig, dtype) -> int:
  """Halvings that take the widest tail bracket (at |y| <= B) to float resolution."""
  width = 2.0 * (config.bound * (1 + 2e-5) + 1e-5) / config.min_slope + 2e-5
  return bisection.steps_to_resolution(width, dtype)


def _check_steps(name: str, value: Any) -> None:
  if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool)
                            or value < 1):
    raise ValueError(f"{name} must be None or a positive int, got {value!r}")


# ---------------------------------------------------------------------------- affine


def affine_transformer(min_scale: float = 1e-3) -> Transformer:
  """The affine transformer `y = mu + sigma * x` (Eq. 9.5 of the thesis).

  Pseudo-parameters `(mu, s)` with `sigma = softplus(s + c) + min_scale`, `c` such that
  `s = 0` gives `sigma = 1`; `log dy/dx = log sigma`. A bijection of R with
  `dy/dx >= min_scale`, inverted in closed form.

  Args:
    min_scale: lower bound of sigma, in (0, 1).

  Returns:
    A `Transformer` with 2 pseudo-parameters per dimension.
  """
  if not isinstance(min_scale, (int, float, np.floating)) or not 0 < min_scale < 1:
    raise ValueError(f"min_scale must be in (0, 1), got {min_scale!r}")

  def forward_and_log_det(params, pseudo, x):
    del params
    mu, sigma = pseudo[..., 0], _positive(pseudo[..., 1], min_scale)
    return mu + sigma * x, jnp.log(sigma)

  def inverse(params, pseudo, y):
    del params
    mu, sigma = pseudo[..., 0], _positive(pseudo[..., 1], min_scale)
    return (y - mu) / sigma

  return _closed_form("affine", 2, forward_and_log_det, inverse)


def iaf_gate_transformer(gate_bias: float = 3.0, min_gate: float = 1e-3) -> Transformer:
  """The gated IAF transformer `y = sigma * x + (1 - sigma) * mu` (Eq. 9.6).

  Pseudo-parameters `(mu, s)` with `sigma = min_gate + (1 - min_gate) sigmoid(s +
  gate_bias)` and `1 - sigma = (1 - min_gate) sigmoid(-(s + gate_bias))`;
  `log dy/dx = log sigma`, formed as `logaddexp(log min_gate, log(1 - min_gate) +
  log_sigmoid(s + gate_bias))`. The floor `min_gate` bounds dy/dx below, so the inverse
  `x = (y - (1 - sigma) mu) / sigma` stays finite where the thesis's gate (`min_gate=0`)
  underflows to sigma = 0 in float32 (about s < -104) and divides by it. The gate cannot
  open fully, so all-zero pseudo-parameters give `y = sigma_0 x` with `sigma_0 = min_gate
  + (1 - min_gate) sigmoid(gate_bias)` (0.95 x by default), close to but not the identity.

  Args:
    gate_bias: the gate's offset (Kingma et al. start the gate near open).
    min_gate: lower bound of sigma, in [0, 1); 0 is Eq. 9.6 exactly.

  Returns:
    A `Transformer` with 2 pseudo-parameters per dimension.
  """
  if not isinstance(gate_bias, (int, float, np.floating)) or not math.isfinite(gate_bias):
    raise ValueError(f"gate_bias must be a finite number, got {gate_bias!r}")
  if not isinstance(min_gate, (int, float, np.floating)) or not 0 <= min_gate < 1:
    raise ValueError(f"min_gate must be in [0, 1), got {min_gate!r}")
  gate_bias, min_gate = float(gate_bias), float(min_gate)
  log_scale = math.log1p(-min_gate)

  def gate(pseudo):
    mu, s = pseudo[..., 0], pseudo[..., 1] + gate_bias
    log_sigma = log_scale + jax.nn.log_sigmoid(s)
    if min_gate > 0:
      log_sigma = jnp.logaddexp(math.log(min_gate), log_sigma)
    return mu, jnp.exp(log_sigma), (1.0 - min_gate) * jax.nn.sigmoid(-s), log_sigma

  def forward_and_log_det(params, pseudo, x):
    del params
    mu, sigma, one_minus, log_sigma = gate(pseudo)
    return sigma * x + one_minus * mu, log_sigma

  def inverse(params, pseudo, y):
    del params
    mu, sigma, one_minus, _ = gate(pseudo)
    return (y - one_minus * mu) / sigma

  return _closed_form("iaf_gate", 2, forward_and_log_det, inverse, identity_at_zero=False,
                      surjective=min_gate > 0)


# ------------------------------------------------------------------------------- DSF


class _DSFJacobian(NamedTuple):
  """Derivatives of the DSF outputs `(y, log dy/dx)` at one point.

  `y_pseudo`, `log_det_pseudo` [..., 3d] are the gradients with respect to the sigmoid
  units' pseudo-parameters; `y_x`, `log_det_x` [...] the partials with respect to x;
  `y_tail`, `log_det_tail` [...] those with respect to the linear tail's `t` (None
  without a tail). The tail's column is kept apart (not concatenated): the tangent's
  slices are contracted separately, which XLA fuses without a copy of the [..., 3d + 1]
  arrays.
  """
  y_pseudo: Array
  log_det_pseudo: Array
  y_x: Array
  log_det_x: Array
  y_tail: Optional[Array] = None
  log_det_tail: Optional[Array] = None


def _dsf_value_and_jacobian(pseudo: Array, x: Array, hidden_units: int, delta: float,
                            min_slope: float, with_jacobian: bool = True,
                            tail_config: Optional[_TailConfig] = None
                            ) -> tuple[tuple[Array, Array], Optional[_DSFJacobian]]:
  """The DSF map of Eq. 9.8, its log-derivative, and their first derivatives.

  With `a = softplus(u) + min_slope`, `w = softmax(l)`, `z = a x + b`, `s = sigmoid(z)`:
  `p = sum_j w_j s_j`, `q = sum_j w_j (1 - s_j)` (summed directly, so whichever is tiny
  keeps its relative precision), `p' = (1 - delta) p + delta / 2 >= delta / 2` (likewise
  q'), `y = log(p' / q')` and `log dy/dx = log(1 - delta) - log(p' q') + log G` with
  `G = sum_j w_j a_j s_j (1 - s_j)`. Only `G` can underflow (|z| up to ~1e4), so it alone
  is a log-sum-exp, shifted by `m = max_j (l_j - |z_j|)`: with `e_j = exp(-|z_j|)`,
  `s_j (1 - s_j) = e_j / (1 + e_j)^2`, so one exp per unit gives both sigmoids, and
  `log G = m - max(l) - log sum_j exp(l_j - max(l)) + log sum_j a_j exp(l_j - |z_j| - m)
  / (1 + e_j)^2`. Four exps and one log1p per unit in all.

  The derivatives use the responsibilities `pi_j = w_j a_j s_j (1 - s_j) / G` (a softmax
  of the log-space terms, so finite wherever G underflows): `dp = sum_j w_j (s_j - p) dl_j
  + w_j s_j (1 - s_j) dz_j` and `d log G = sum_j (pi_j - w_j) dl_j + pi_j / a_j da_j +
  pi_j (1 - 2 s_j) dz_j`, with `dz_j = x da_j + db_j + a_j dx` and
  `da_j = sigmoid(u_j) du_j`; then `dy = (1 - delta) (1/p' + 1/q') dp` and
  `d log dy/dx = (1 - delta) (1/q' - 1/p') dp + d log G`.

  With `tail_config` the linear tail is applied here too (`y_t = k S + eps x` with
  `k = 1 - eps`, `L = log(k S' + eps)`, see `_tail`), so that its derivatives join the
  closed form instead of being autodiffed through a slice of `pseudo`: with the share
  `rho = k S' / (k S' + eps)` of the bounded map in the derivative, `dy_t = k dS +
  (x - S) d eps + eps dx` and `dL = rho (d log S' - sig dt) + (1 - rho) d eps / eps`.

  Args:
    pseudo: `(a_raw [d], b [d], w_logits [d])` along the last axis, [..., 3d], and the
      tail's `t` last ([..., 3d + 1]) with `tail_config`.
    x: inputs [...].
    hidden_units: d.
    delta: squeeze.
    min_slope: lower bound of the slopes a.
    with_jacobian: whether to form the derivatives (else None is returned for them).
    tail_config: the linear tail's settings, or None for the thesis's bounded map.

  Returns:
    `((y, log_det), jacobian)`.
  """
  d = hidden_units
  keep, half = 1.0 - delta, delta / 2
  u = pseudo[..., :d] + _inverse_softplus(1.0 - min_slope)
  b, logits = pseudo[..., d:2 * d], pseudo[..., 2 * d:3 * d]
  exp_neg_abs_u = jnp.exp(-jnp.abs(u))
  a = jnp.maximum(u, 0.0) + jnp.log1p(exp_neg_abs_u) + min_slope
  da_du = jnp.where(u >= 0, 1.0, exp_neg_abs_u) / (1.0 + exp_neg_abs_u)  # sigmoid(u)

  x_ = x[..., None]
  z = a * x_ + b
  abs_z = jnp.abs(z)
  exp_neg_abs_z = jnp.exp(-abs_z)
  inv = 1.0 / (1.0 + exp_neg_abs_z)
  far, near = inv, exp_neg_abs_z * inv  # sigmoid(|z|), sigmoid(-|z|)
  positive = z >= 0
  sig, sig_neg = jnp.where(positive, far, near), jnp.where(positive, near, far)
  sig_var = near * inv  # s (1 - s)

  # The max shifts cancel exactly; no derivative flows through them. Per-point (row)
  # quantities are kept without the unit axis, which is added back where they broadcast.
  logits_max = jax.lax.stop_gradient(logits.max(axis=-1))
  exp_logits = jnp.exp(logits - logits_max[..., None])
  p_sum = jnp.sum(exp_logits * sig, axis=-1)
  q_sum = jnp.sum(exp_logits * sig_neg, axis=-1)
  w_sum = p_sum + q_sum  # sum_j exp_logits_j, since s + (1 - s) = 1
  p, q = p_sum / w_sum, q_sum / w_sum
  p_sq, q_sq = keep * p + half, keep * q + half
  y = jnp.log(p_sq / q_sq)

  log_terms = logits - abs_z
  shift = jax.lax.stop_gradient(log_terms.max(axis=-1))
  terms_over_a = jnp.exp(log_terms - shift[..., None]) * (inv * inv)
  terms = a * terms_over_a
  terms_sum = terms.sum(axis=-1)
  log_g = shift - logits_max - jnp.log(w_sum) + jnp.log(terms_sum)
  log_det = math.log(keep) - jnp.log(p_sq * q_sq) + log_g
  if tail_config is not None:
    tail = _tail(pseudo[..., 3 * d], tail_config)
    bounded, log_slope_bounded = y, log_det
    y = tail.keep * bounded + tail.slope * x
    # L = logaddexp(A, C) with A = log k + log S', C = log eps, and rho = sigmoid(A - C).
    a_term = tail.log_keep + log_slope_bounded
    gap = a_term - tail.log_slope
    r = jnp.exp(-jnp.abs(gap))
    log_det = jnp.maximum(a_term, tail.log_slope) + jnp.log1p(r)
  if not with_jacobian:
    return (y, log_det), None

  # dp and d log G per unit (see the docstring). `s_j - p` equals `q - (1 - s_j)`; the
  # smaller of p and q picks the form without cancellation, which 1/q' would amplify.
  w = exp_logits * (1.0 / w_sum)[..., None]
  resp_scale = (1.0 / terms_sum)[..., None]
  resp = terms * resp_scale
  p_, q_ = p[..., None], q[..., None]
  p_dl = w * jnp.where(p_ <= q_, sig - p_, q_ - sig_neg)
  p_dz = w * sig_var
  g_dl, g_dz = resp - w, resp * (sig_neg - sig)
  g_da = terms_over_a * resp_scale + x_ * g_dz
  # Stacked on a new axis, which has the [..., 3d] layout of concatenating along the last
  # one; XLA's CPU backend ran the stacked form a little faster.
  shape = pseudo.shape[:-1] + (3 * d,)
  p_pseudo = jnp.stack([x_ * p_dz * da_du, p_dz, p_dl], axis=-2).reshape(shape)
  g_pseudo = jnp.stack([g_da * da_du, g_dz, g_dl], axis=-2).reshape(shape)
  y_dp, log_det_dp = keep / p_sq + keep / q_sq, keep / q_sq - keep / p_sq
  p_x, g_x = jnp.sum(a * p_dz, axis=-1), jnp.sum(a * g_dz, axis=-1)
  if tail_config is None:
    return (y, log_det), _DSFJacobian(
        y_pseudo=y_dp[..., None] * p_pseudo,
        log_det_pseudo=log_det_dp[..., None] * p_pseudo + g_pseudo,
        y_x=y_dp * p_x, log_det_x=log_det_dp * p_x + g_x)
  # The bounded map's per-point factors scale by k (value) and rho (log-derivative); the
  # tail's column is appended (see the docstring).
  inv_r = 1.0 / (1.0 + r)
  rho = jnp.where(gap >= 0, inv_r, r * inv_r)
  y_dp_t, log_det_dp_t = tail.keep * y_dp, rho * log_det_dp
  y_tail = (x - bounded) * tail.d_slope
  log_det_tail = -rho * tail.sig + (1.0 - rho) * tail.d_slope / tail.slope
  jacobian = _DSFJacobian(
      y_pseudo=y_dp_t[..., None] * p_pseudo,
      log_det_pseudo=log_det_dp_t[..., None] * p_pseudo + rho[..., None] * g_pseudo,
      y_x=y_dp_t * p_x + tail.slope, log_det_x=rho * (log_det_dp * p_x + g_x),
      y_tail=y_tail, log_det_tail=log_det_tail)
  return (y, log_det), jacobian


def _dsf_map(hidden_units: int, delta: float, min_slope: float,
             tail_config: Optional[_TailConfig] = None
             ) -> Callable[[Array, Array], tuple[Array, Array]]:
  """`(pseudo, x) -> (y, log dy/dx)` of the DSF, differentiated by its closed-form JVP.

  Autodiff through the log-space forward would store and replay each exp, log1p and
  log-sum-exp; the closed form (`_dsf_value_and_jacobian`) reuses the forward's
  exponentials, so one training step's backward pass over the [..., 3d]
  pseudo-parameters is one multiply-add, `g_y * dy/dpseudo + g_logdet * dlogdet/dpseudo`.
  A JVP (not a VJP) keeps `jax.jacfwd` working; reverse mode transposes it.
  """
  @jax.custom_jvp
  def value_and_log_det(pseudo, x):
    return _dsf_value_and_jacobian(pseudo, x, hidden_units, delta, min_slope,
                                   with_jacobian=False, tail_config=tail_config)[0]

  def jvp(primals, tangents):
    (y, log_det), jac = _dsf_value_and_jacobian(*primals, hidden_units, delta, min_slope,
                                                tail_config=tail_config)
    dpseudo, dx = tangents
    dy, dlog_det = jnp.zeros_like(y), jnp.zeros_like(log_det)
    if not isinstance(dpseudo, SymbolicZero):
      # One split (not two slices): reverse mode transposes it into one concatenation of
      # the two cotangents, which XLA cancels against a conditioner that emitted the
      # groups separately (`pseudo_groups`); slices would transpose into padded copies.
      units, dt = jnp.split(dpseudo, [3 * hidden_units], axis=-1)
      dy = dy + jnp.sum(jac.y_pseudo * units, axis=-1)
      dlog_det = dlog_det + jnp.sum(jac.log_det_pseudo * units, axis=-1)
      if jac.y_tail is not None:
        dt = dt[..., 0]
        dy, dlog_det = dy + jac.y_tail * dt, dlog_det + jac.log_det_tail * dt
    if not isinstance(dx, SymbolicZero):
      dy, dlog_det = dy + jac.y_x * dx, dlog_det + jac.log_det_x * dx
    return (y, log_det), (dy, dlog_det)

  value_and_log_det.defjvp(jvp, symbolic_zeros=True)
  return value_and_log_det


def dsf_transformer(hidden_units: int = 16, *, surjective: bool = True,
                    tail_slope_init: float = TAIL_SLOPE_INIT,
                    min_tail_slope: float = MIN_TAIL_SLOPE, delta: float = SQUEEZE_DELTA,
                    min_slope: float = 1e-3,
                    num_bisection_steps: Optional[int] = None) -> Transformer:
  """The deep sigmoidal flow transformer (Eq. 9.8 of the thesis), by default onto R.

  The thesis's map: `S(x) = logit(squeeze(w^T sigmoid(a x + b)))` with
  `d = hidden_units` sigmoid units, `a = softplus(.) + min_slope > 0`, `w = softmax(.)`,
  and `squeeze(p) = (1 - delta) p + delta / 2`, so |S| < B = logit(1 - delta/2) (~14.5).
  `log S' = log(1 - delta) - log p' - log(1 - p') +
  logsumexp_j(log w_j + log a_j + log_sigmoid(z_j) + log_sigmoid(-z_j))`, the last term
  in log space (see `_dsf_value_and_jacobian`); its derivatives are in closed form.

  With `surjective=True` (default) the transformer is `y = (1 - eps) S(x) + eps x` with
  the tail slope `eps = min_tail_slope + (1 - min_tail_slope) sigmoid(t + t0)`, `t0` such
  that `t = 0` gives `tail_slope_init`: a bijection of R with `dy/dx >= min_tail_slope`
  (see the module docstring). Pseudo-parameters per dimension: `(a_raw [d], b [d],
  w_logits [d], t)`; all zero gives `a = 1, b = 0`, uniform `w` and `S(x) = x` up to the
  squeeze, hence `y = x`. The inverse bisects the tail's bracket
  `[(y - (1 - eps) B) / eps, (y + (1 - eps) B) / eps]` (width < 2 B / min_tail_slope)
  for `ceil(log2(2 B / min_tail_slope)) + nmant + 1` halvings (39 in float32), reaching
  an absolute resolution of 2^-(nmant+1) at |x| <= 1 and adjacent floats beyond.

  With `surjective=False` the transformer is `S` itself (pseudo-parameters
  `(a_raw, b, w_logits)`), whose image is `(-B, B)`: the root of `sum_j w_j sigmoid(a_j x
  + b_j) = p` lies between `min_j` and `max_j` of `(logit p - b_j) / a_j`, bisected 60
  times in float32 (89 in float64); targets with |y| >= B give NaN and `inverted=False`.

  Args:
    hidden_units: d, the number of sigmoid units (>= 1).
    surjective: add the linear tail (a bijection of R) or keep Eq. 9.8 exactly.
    tail_slope_init: eps at t = 0, in (min_tail_slope, 1).
    min_tail_slope: lower bound of eps and of dy/dx, in (0, 1).
    delta: squeeze in (0, 1).
    min_slope: lower bound of the slopes a, in (0, 1).
    num_bisection_steps: halvings of the inverse; None picks the count that reaches the
      dtype's resolution (above).

  Returns:
    A `Transformer` with `3 * hidden_units (+ 1 if surjective)` pseudo-parameters per
    dimension.
  """
  _check_units("hidden_units", hidden_units)
  _check_delta(delta)
  _check_flag("surjective", surjective)
  if not isinstance(min_slope, (int, float, np.floating)) or not 0 < min_slope < 1:
    raise ValueError(f"min_slope must be in (0, 1), got {min_slope!r}")
  _check_steps("num_bisection_steps", num_bisection_steps)
  d = int(hidden_units)
  tail_config = _tail_config(tail_slope_init, min_tail_slope, delta) if surjective else None
  value_and_log_det = _dsf_map(d, delta, min_slope, tail_config)

  def forward_and_log_det(params, pseudo, x):
    del params
    return value_and_log_det(pseudo, x)

  def solve(params, pseudo, y):
    fn = lambda x: forward_and_log_det(params, pseudo, x)[0]
    if surjective:
      lo, hi = _tail_bracket(y, _tail(pseudo[..., 3 * d], tail_config), tail_config)
      steps = num_bisection_steps or _tail_steps(tail_config, y.dtype)
    else:
      a, b = _positive(pseudo[..., :d], min_slope), pseudo[..., d:2 * d]
      roots = (_logit_of_unsqueezed(y, delta)[..., None] - b) / a
      lo, hi = roots.min(axis=-1), roots.max(axis=-1)
      pad = 1e-3 * (1 + jnp.abs(lo) + jnp.abs(hi))  # rounding slack around the exact bracket
      lo, hi = lo - pad, hi + pad
      steps = num_bisection_steps or 36 + int(jnp.finfo(y.dtype).nmant) + 1
      # Where the bounded map has flattened to float resolution the root is no inverse.
      solution = bisection.solve_increasing(fn, y, lo, hi, steps)
      return bisection.unflag_flat_roots(
          solution, forward_and_log_det(params, pseudo, solution.root)[1])
    return bisection.solve_increasing(fn, y, lo, hi, steps)

  num_pseudo = 3 * d + (1 if surjective else 0)
  return _bisection_transformer("dsf", num_pseudo, forward_and_log_det, solve,
                                surjective=bool(surjective),
                                pseudo_groups=(3 * d, 1) if surjective else None)


# ------------------------------------------------------------------------------ DDSF


def _matvec(mat: Array, vec: Array) -> Array:
  """`mat [..., m, n] @ vec [..., n]`, a batch of small matrix-vector products.

  As a batched dot: on XLA's CPU backend this ran three to four times faster, forward and
  backward, than the broadcast multiply-and-sum at [3000, 16, 16].
  """
  return jnp.einsum("...ij,...j->...i", mat, vec)


def _ddsf_layer(a: Array, b: Array, u: Array, w: Array, h: Array, dh_rel: Optional[Array],
                delta: float) -> tuple[Array, Optional[Array], Optional[Array]]:
  """One DDSF layer (Eq. 9.9) and its derivative vector (Eq. 9.10), in linear space.

  `pre = a * (u h) + b`, `p = w sigmoid(pre)`, `q = w sigmoid(-pre)` (summed directly, as
  in the DSF, so whichever is tiny keeps its relative precision; the squeeze keeps
  `p', q' >= delta / 2`), `h_next = log(p' / q')`. The derivative `dh/dx = exp(c) dh_rel`
  propagates as `dh_next = (1 - delta) / (p' q') * w (sigmoid'(pre) * a * (u dh))`. The
  per-unit factor `sigmoid'(pre) * a * (u dh_rel)` is the only one that can under- or
  overflow (|pre| up to ~1e4), so it is formed in log space and divided by its largest
  entry, `exp(shift)`; the contractions with the row-stochastic `u` and `w` are then
  sums of non-negative terms, with the dominant unit's term of order `w_kj`. Only d
  exponentials and logs per layer and point, against the d x d per point of log-sum-exp.

  Args:
    a, b: slopes and biases [..., d].
    u: row-stochastic input weights [..., d, n_in].
    w: row-stochastic output weights [..., n_out, d].
    h: inputs [..., n_in].
    dh_rel: `dh/dx` up to a per-point scale [..., n_in], or None to skip the derivative.
    delta: squeeze.

  Returns:
    `(h_next [..., n_out], dh_rel_next [..., n_out], shift [...])`, the last two None
    when `dh_rel` is.
  """
  keep, half = 1.0 - delta, delta / 2
  pre = a * _matvec(u, h) + b
  abs_pre = jnp.abs(pre)
  exp_neg_abs = jnp.exp(-abs_pre)
  inv = 1.0 / (1.0 + exp_neg_abs)
  far, near = inv, exp_neg_abs * inv  # sigmoid(|pre|), sigmoid(-|pre|)
  positive = pre >= 0
  p_sq = keep * _matvec(w, jnp.where(positive, far, near)) + half
  q_sq = keep * _matvec(w, jnp.where(positive, near, far)) + half
  h_next = jnp.log(p_sq / q_sq)
  if dh_rel is None:
    return h_next, None, None
  # The floors at the smallest normal number act only where a contraction underflows,
  # which needs the dominant term's weight below it (a log-weight under about -87 in
  # float32); they keep the log finite there, as the log-sum-exp form is.
  tiny = jnp.finfo(pre.dtype).tiny
  # log(sigmoid'(pre) a (u dh_rel)), with sigmoid'(pre) = exp(-|pre|) / (1 + exp(-|pre|))^2.
  log_unit = jnp.log(jnp.maximum(a * _matvec(u, dh_rel), tiny)) - abs_pre + 2.0 * jnp.log(inv)
  # The shift cancels exactly against the rescaled vector; no derivative flows through it.
  shift = jax.lax.stop_gradient(log_unit.max(axis=-1))
  unit = jnp.exp(log_unit - shift[..., None])
  dh_rel_next = keep / (p_sq * q_sq) * jnp.maximum(_matvec(w, unit), tiny)
  return h_next, dh_rel_next, shift


class _LayerShape(NamedTuple):
  inputs: int
  hidden: int
  outputs: int


def _ddsf_shapes(hidden_units: int, num_layers: int) -> list[_LayerShape]:
  widths = [1] + [hidden_units] * (num_layers - 1) + [1]
  return [_LayerShape(widths[l], hidden_units, widths[l + 1]) for l in range(num_layers)]


def ddsf_transformer(hidden_units: int = 16, num_layers: int = 2, *,
                     conditional_weight_norm: bool = False, surjective: bool = True,
                     tail_slope_init: float = TAIL_SLOPE_INIT,
                     min_tail_slope: float = MIN_TAIL_SLOPE, delta: float = SQUEEZE_DELTA,
                     min_slope: float = 1e-3, num_bisection_steps: Optional[int] = None,
                     num_bracket_expansions: int = 24) -> Transformer:
  """The deep dense sigmoidal flow transformer (Eqs. 9.9-9.10 of the thesis), by default onto R.

  Layer l maps `h` (width n_in) to `logit(squeeze(w sigmoid(a * (u h) + b)))` (width n_out)
  through d sigmoid units, with row-softmax `u` [d, n_in] and `w` [n_out, d], positive `a`
  [d] and free `b` [d]; widths run 1 -> d -> ... -> d -> 1 over `num_layers` layers (one
  layer is the DSF). Call the composed map `S`; its last squeeze bounds it, |S| < B =
  logit(1 - delta/2), and each layer's bounded input narrows the image further (to e.g.
  (-4.9, 4.4) for moderate pseudo-parameters). All entries of every layer Jacobian are
  positive, so the derivative of the scalar output is carried forward as the vector
  `dh/dx` (Eq. 9.10), held as a per-point log-scale times a vector of order one: one
  matrix-vector product per weight matrix, never the rank-5 batch of Jacobian products.
  Only the d per-unit factors are formed in log space (see `_ddsf_layer`), not the d x d
  terms of log-sum-exp contractions, whose exponentials made the transformer's share of a
  CPU training step about 1.5x longer.

  Pseudo-parameters per dimension, per layer: `a_raw [d], b [d]` and either

  * the full logits `u [d * n_in], w [n_out * d]` (O(d^2) per dimension), or
  * with `conditional_weight_norm=True` (Section 9.3.2), only O(d) column shifts
    `u_shift [n_in], w_shift [d]` added to learned logit matrices `U [d, n_in]`,
    `W [n_out, d]` held in `params` (randomly initialized). Shifting column j of every row
    rescales the weight of unit j per dimension, as conditional weight normalization
    rescales rows of a learned weight.

  With `surjective=True` (default) one more pseudo-parameter `t` (last) sets the linear
  tail: `y = (1 - eps) S(x) + eps x`, a bijection of R with `dy/dx >= min_tail_slope`,
  inverted by bisecting the tail's bracket (see `dsf_transformer` and the module
  docstring; 39 halvings in float32). All-zero pseudo-parameters give `a = 1, b = 0` and,
  whatever the (row-stochastic) `u` and `w`, every layer maps `x * 1` to `x * 1`: the
  identity up to the squeeze.

  With `surjective=False` (Eqs. 9.9-9.10 exactly) the inverse brackets the root by
  growing `[-1, 1]` by 4x up to `num_bracket_expansions` times, then bisects; where no
  bracket is found (the target is outside the bounded image, or its root beyond
  4^num_bracket_expansions) it gives NaN and `inverted=False`.

  Args:
    hidden_units: d (>= 1).
    num_layers: L (>= 1).
    conditional_weight_norm: emit O(d) pseudo-parameters modulating learned weights.
    surjective: add the linear tail (a bijection of R) or keep Eqs. 9.9-9.10 exactly.
    tail_slope_init: eps at t = 0, in (min_tail_slope, 1).
    min_tail_slope: lower bound of eps and of dy/dx, in (0, 1).
    delta: squeeze in (0, 1).
    min_slope: lower bound of the slopes a, in (0, 1).
    num_bisection_steps: halvings of the inverse; None picks the count that reaches the
      dtype's resolution from the widest bracket.
    num_bracket_expansions: growth steps of the bracket (`surjective=False` only).

  Returns:
    A `Transformer`.
  """
  _check_units("hidden_units", hidden_units)
  _check_units("num_layers", num_layers)
  _check_units("num_bracket_expansions", num_bracket_expansions)
  _check_delta(delta)
  _check_flag("conditional_weight_norm", conditional_weight_norm)
  _check_flag("surjective", surjective)
  if not isinstance(min_slope, (int, float, np.floating)) or not 0 < min_slope < 1:
    raise ValueError(f"min_slope must be in (0, 1), got {min_slope!r}")
  _check_steps("num_bisection_steps", num_bisection_steps)
  hidden_units, num_layers = int(hidden_units), int(num_layers)
  shapes = _ddsf_shapes(hidden_units, num_layers)
  cwn = bool(conditional_weight_norm)
  tail_config = _tail_config(tail_slope_init, min_tail_slope, delta) if surjective else None

  def layer_size(s):
    return 2 * s.hidden + ((s.inputs + s.hidden) if cwn else (s.hidden * (s.inputs + s.outputs)))

  sizes = [layer_size(s) for s in shapes]
  offsets = np.cumsum([0] + sizes)
  tail_index = int(offsets[-1])

  def init(key):
    if not cwn:
      return {}
    keys = jax.random.split(key, 2 * num_layers)
    return {"u": [jax.random.normal(keys[2 * l], (s.hidden, s.inputs)) for l, s in
                  enumerate(shapes)],
            "w": [jax.random.normal(keys[2 * l + 1], (s.outputs, s.hidden)) for l, s in
                  enumerate(shapes)]}

  def check_params(params):
    if not cwn:
      return
    ok = (isinstance(params, dict) and set(params) >= {"u", "w"}
          and all(isinstance(params[k], (list, tuple)) and len(params[k]) == num_layers
                  for k in ("u", "w")))
    if ok:
      ok = all(np.shape(params["u"][l]) == (s.hidden, s.inputs)
               and np.shape(params["w"][l]) == (s.outputs, s.hidden)
               for l, s in enumerate(shapes))
    if not ok:
      raise ValueError("params must be the pytree returned by this transformer's init: "
                       f"{{'u': [{num_layers} logit matrices], 'w': [{num_layers} ...]}} of "
                       f"shapes {[(s.hidden, s.inputs) for s in shapes]} and "
                       f"{[(s.outputs, s.hidden) for s in shapes]}")

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
    return a, b, jax.nn.softmax(u_logits, axis=-1), jax.nn.softmax(w_logits, axis=-1)

  def bounded_map(params, pseudo, x, with_log_det=True):
    h = x[..., None]
    # dh/dx = exp(log_scale) * dh_rel: a per-point scale and a vector whose largest entry
    # is O(1), so the contractions run in linear space (see `_ddsf_layer`).
    log_scale, dh_rel = jnp.zeros_like(x), jnp.ones_like(h)
    for l in range(num_layers):
      a, b, u, w = unpack(params, pseudo, l)
      h, dh_rel, shift = _ddsf_layer(a, b, u, w, h, dh_rel if with_log_det else None, delta)
      if with_log_det:
        log_scale = log_scale + shift
    if not with_log_det:
      return h[..., 0], None
    return h[..., 0], log_scale + jnp.log(dh_rel[..., 0])

  def forward_and_log_det(params, pseudo, x):
    bounded, log_det = bounded_map(params, pseudo, x)
    if not surjective:
      return bounded, log_det
    return _linear_tail(bounded, log_det, x, _tail(pseudo[..., tail_index], tail_config))

  def solve(params, pseudo, y):
    if surjective:
      tail = _tail(pseudo[..., tail_index], tail_config)
      fn = lambda x: tail.keep * bounded_map(params, pseudo, x, False)[0] + tail.slope * x
      lo, hi = _tail_bracket(y, tail, tail_config)
      steps = num_bisection_steps or _tail_steps(tail_config, y.dtype)
    else:
      fn = lambda x: bounded_map(params, pseudo, x, False)[0]
      lo, hi = bisection.expand_bracket(fn, y, num_bracket_expansions)
      # Rounding slack (lo <= -1, hi >= 1): a root exactly at a growth point (y = f(1))
      # stays strictly inside where this compilation of f differs from y's in the last bit.
      slack = 1.0 + 2.0 ** -10
      lo, hi = lo * slack, hi * slack
      steps = num_bisection_steps or bisection.steps_to_resolution(
          2.0 * 4.0 ** num_bracket_expansions * slack, y.dtype)
      # Where the bounded map has flattened to float resolution the root is no inverse.
      solution = bisection.solve_increasing(fn, y, lo, hi, steps)
      return bisection.unflag_flat_roots(
          solution, forward_and_log_det(params, pseudo, solution.root)[1])
    return bisection.solve_increasing(fn, y, lo, hi, steps)

  name = "ddsf_cwn" if cwn else "ddsf"
  num_pseudo = tail_index + (1 if surjective else 0)
  return _bisection_transformer(name, num_pseudo, forward_and_log_det, solve, init=init,
                                check_params=check_params, surjective=bool(surjective),
                                pseudo_groups=(tail_index, 1) if surjective else None)


def _check_units(name: str, value: Any) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_delta(delta: float) -> None:
  if not isinstance(delta, (int, float, np.floating)) or not 0 < delta < 1:
    raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_flag(name: str, value: Any) -> None:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


# --------------------------------------------------------------------------- registry

TRANSFORMERS: dict[str, Callable[..., Transformer]] = {
    "affine": affine_transformer,
    "iaf_gate": iaf_gate_transformer,
    "dsf": dsf_transformer,
    "ddsf": ddsf_transformer,
    "ddsf_cwn": functools.partial(ddsf_transformer, conditional_weight_norm=True),
}


def make_transformer(name: str, **kwargs: Any) -> Transformer:
  """Builds a registered transformer by name ("affine", "iaf_gate", "dsf", "ddsf",
  "ddsf_cwn") with its keyword arguments (e.g. `surjective=False` for the thesis's exact
  DSF / DDSF)."""
  if not isinstance(name, str) or name not in TRANSFORMERS:
    raise ValueError(f"transformer name must be one of {', '.join(map(repr, TRANSFORMERS))}; "
                     f"got {name!r}")
  return TRANSFORMERS[name](**kwargs)
