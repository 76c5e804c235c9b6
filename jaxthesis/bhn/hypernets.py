"""Hypernetworks `h: eps -> theta` as distrax bijectors over a standard normal (Section 7.3.2).

An invertible hypernet gives `q(theta) = N(eps; 0, I) |det dh/deps|^{-1}` (Eq. 7.6), so one
forward pass yields a sample and its log-density. Every hypernet here starts with an
elementwise affine layer `mu + sigma * eps` (alone: a factorial Gaussian, the
"0 coupling layers" model of Table 7.I and Bayes by Backprop on the scales), followed by

* ``"realnvp"``: K RealNVP coupling layers (a 1-hidden-layer ReLU MLP of 200 units emits
  the shift and the scale `exp(.) + 1e-3` of one half from the other half), fixed random
  permutations between them;
* ``"iaf"``: K inverse autoregressive steps (MADE with 200 hidden units, affine
  transformer) from `jaxthesis.flows`;
* ``"dsf"``: K deep-sigmoidal-flow IAF steps from `jaxthesis.flows` and a final
  elementwise affine (the DSF output is squeezed into about +-14.5) -- the BHN + NAF
  combination of Section 1.4.2.1;
* ``"gaussian"``: the affine layer only.

`make_hypernet(name, num_dims, ...) -> Hypernet(init, bijector, ...)`; registry `HYPERNETS`.
All coupling / IAF layers start as the identity (DSF: up to its squeeze), so at
initialization `q` is the factorial Gaussian of the affine layer.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, flows
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

MIN_SCALE = 1e-3
# RealNVP log-scales are exact on [-LOG_SCALE_LINEAR, LOG_SCALE_LINEAR] and saturate
# smoothly at +-LOG_SCALE_BOUND beyond (`_bounded_log_scale`).
LOG_SCALE_LINEAR = 4.0
LOG_SCALE_BOUND = 6.0


class Hypernet(NamedTuple):
  """A hypernetwork as pure functions.

  Attributes:
    name: registry name.
    num_dims: D, the size of the generated vector.
    init: `(key, loc=None, scale=1.0) -> params`; the affine layer starts at mean `loc`
      ([D] or scalar, default 0) and standard deviation `scale` ([D] or scalar > 0).
    bijector: `(params) -> distrax.Bijector`, forward = noise -> parameters.
    num_layers: K, the number of coupling / IAF / DSF layers after the affine one.
  """
  name: str
  num_dims: int
  init: Callable[..., Params]
  bijector: Callable[[Params], distrax.Bijector]
  num_layers: int

  def distribution(self, params: Params) -> distrax.Distribution:
    """`q(theta)`: the bijector applied to N(0, I_D) (`sample_and_log_prob` in one pass)."""
    return distrax.Transformed(flows.standard_normal(self.num_dims), self.bijector(params))

  def sample_and_log_prob(self, params: Params, key: PRNGKey,
                          sample_shape: tuple[int, ...] = ()) -> tuple[Array, Array]:
    """`theta = h(eps)`, `log q(theta) = log N(eps) - log|det dh/deps|` for eps [*shape, D]."""
    eps = jax.random.normal(key, tuple(sample_shape) + (self.num_dims,))
    return self.transform(params, eps)

  def transform(self, params: Params, eps: Array) -> tuple[Array, Array]:
    """`(h(eps), log q(h(eps)))` for given noise `eps [..., D]` (Eq. 7.6)."""
    _checks.check_floating("eps", eps)
    if np.shape(eps)[-1:] != (self.num_dims,):
      raise ValueError(f"eps must have shape [..., {self.num_dims}], got {np.shape(eps)}")
    theta, log_det = self.bijector(params).forward_and_log_det(eps)
    log_base = -0.5 * jnp.sum(jnp.square(eps), -1) - 0.5 * self.num_dims * np.log(2 * np.pi)
    return theta, log_base - log_det


def _bounded_log_scale(raw: Array) -> Array:
  """`raw` on [-a, a] (a = LOG_SCALE_LINEAR), beyond it `sign(raw) (a + (b - a) tanh((|raw| -
  a) / (b - a)))`, which meets it with slopes 1 and 0 curvature and tends to +-b
  (b = LOG_SCALE_BOUND).

  An unbounded `exp(raw)` compounds across couplings: each scales the half that the next
  one's MLP reads, so at moderate parameters the magnitudes grew doubly exponentially
  through 4 couplings to inf. Bounded, a coupling scales by at most e^b (about 400).
  """
  a, b = LOG_SCALE_LINEAR, LOG_SCALE_BOUND
  excess = jnp.abs(raw) - a
  saturated = jnp.sign(raw) * (a + (b - a) * jnp.tanh(excess / (b - a)))
  return jnp.where(excess > 0, saturated, raw)


class Coupling(distrax.Bijector):
  """A RealNVP affine coupling layer (Dinh et al.), as used by the BHN of Section 7.4.

  `y_1 = x_1`, `y_2 = x_2 * s(x_1) + t(x_1)` with `x_1 = x[:d]`, `x_2 = x[d:]`,
  `d = D // 2`, `(r, t) = MLP(x_1)` (one hidden ReLU layer) and `s = exp(c(r)) + 1e-3`;
  `log|det| = sum log s`. `c` is the identity on [-4, 4] and saturates smoothly at +-6
  (`_bounded_log_scale`), so stacked couplings stay finite at moderate parameters.

  Args:
    params: `{"w1": [d, H], "b1": [H], "w2": [H, 2 (D - d)], "b2": [2 (D - d)]}`.
    num_dims: D >= 2.
  """

  def __init__(self, params: Params, num_dims: int):
    super().__init__(event_ndims_in=1)
    self.params = params
    self.num_dims = num_dims
    self.split = num_dims // 2

  def _scale_shift(self, x1: Array) -> tuple[Array, Array]:
    p = self.params
    out = jax.nn.relu(x1 @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
    raw, shift = jnp.split(out, 2, axis=-1)
    return jnp.exp(_bounded_log_scale(raw)) + MIN_SCALE, shift

  def _check(self, name: str, x: Any) -> None:
    _checks.check_floating(name, x)
    if np.shape(x)[-1:] != (self.num_dims,):
      raise ValueError(f"{name} must have shape [..., {self.num_dims}], got {np.shape(x)}")

  def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
    self._check("x", x)
    x1, x2 = x[..., :self.split], x[..., self.split:]
    scale, shift = self._scale_shift(x1)
    return jnp.concatenate([x1, x2 * scale + shift], -1), jnp.sum(jnp.log(scale), -1)

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    self._check("y", y)
    y1, y2 = y[..., :self.split], y[..., self.split:]
    scale, shift = self._scale_shift(y1)
    return jnp.concatenate([y1, (y2 - shift) / scale], -1), -jnp.sum(jnp.log(scale), -1)

  def same_as(self, other: distrax.Bijector) -> bool:
    return other is self


def _affine(params: Params) -> distrax.Bijector:
  return distrax.Block(distrax.ScalarAffine(shift=params["shift"], log_scale=params["log_scale"]), 1)


def _affine_init(num_dims: int, loc: Optional[ArrayLike], scale: ArrayLike) -> Params:
  loc = jnp.zeros(num_dims) if loc is None else jnp.broadcast_to(jnp.asarray(loc, jnp.float32),
                                                                  (num_dims,))
  scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (num_dims,))
  return {"shift": loc, "log_scale": jnp.log(scale)}


def _check_init_args(num_dims: int, loc, scale) -> None:
  if loc is not None:
    if np.ndim(loc) not in (0, 1) or (np.ndim(loc) == 1 and np.shape(loc) != (num_dims,)):
      raise ValueError(f"loc must be a scalar or have shape [{num_dims}], got {np.shape(loc)}")
  if np.ndim(scale) not in (0, 1) or (np.ndim(scale) == 1 and np.shape(scale) != (num_dims,)):
    raise ValueError(f"scale must be a scalar or have shape [{num_dims}], got {np.shape(scale)}")
  if _checks.is_concrete(scale) and not np.all(np.asarray(scale) > 0):
    raise ValueError(f"scale must be > 0, got {np.asarray(scale) if np.size(scale) < 8 else 'values <= 0'}")


def _permutations(num_dims: int, count: int, key: PRNGKey) -> list[tuple[int, ...]]:
  return [flows.make_ordering("random", num_dims, k) for k in jax.random.split(key, max(count, 1))][:count]


def _conjugated(perm: tuple[int, ...], layer: distrax.Bijector) -> list[distrax.Bijector]:
  """`P^{-1} o layer o P` (forward order): the layer acts on a fixed random permutation of
  the dimensions, and the output keeps the primary net's order, so a layer at the
  identity leaves `theta_j` tied to unit j (the affine layer's initial means stay put)."""
  return [flows.Permute(perm), layer, flows.Permute(tuple(int(i) for i in np.argsort(perm)))]


def _check_common(num_dims, num_layers, hidden_units) -> tuple[int, int, int]:
  if not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
    raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
  if not isinstance(num_layers, (int, np.integer)) or num_layers < 0:
    raise ValueError(f"num_layers must be a non-negative int, got {num_layers!r}")
  if not isinstance(hidden_units, (int, np.integer)) or hidden_units < 1:
    raise ValueError(f"hidden_units must be a positive int, got {hidden_units!r}")
  return int(num_dims), int(num_layers), int(hidden_units)


def gaussian_hypernet(num_dims: int, *, num_layers: int = 0, hidden_units: int = 200,
                      key: Optional[PRNGKey] = None) -> Hypernet:
  """The elementwise affine hypernet alone: `q = N(mu, diag(sigma^2))`, a factorial Gaussian.

  `num_layers` must be 0 (accepted so every registry entry takes the same arguments).
  """
  num_dims, num_layers, _ = _check_common(num_dims, num_layers, hidden_units)
  if num_layers != 0:
    raise ValueError(f"num_layers must be 0 for the 'gaussian' hypernet, got {num_layers}")
  del key

  def init(key: PRNGKey, loc=None, scale=1.0) -> Params:
    _check_init_args(num_dims, loc, scale)
    del key
    return {"affine": _affine_init(num_dims, loc, scale)}

  def bijector(params: Params) -> distrax.Bijector:
    return _affine(params["affine"])

  return Hypernet("gaussian", num_dims, init, bijector, 0)


def realnvp_hypernet(num_dims: int, *, num_layers: int = 4, hidden_units: int = 200,
                     key: Optional[PRNGKey] = None) -> Hypernet:
  """Affine layer, then K RealNVP couplings with fixed random permutations (Section 7.4).

  Each coupling's output kernel starts at zero and the log-scale bias at `log(1 - 1e-3)`,
  so every coupling is exactly the identity at initialization.

  Args:
    num_dims: D >= 2.
    num_layers: K.
    hidden_units: width of each coupling's hidden layer (200 in the thesis).
    key: draws the fixed permutations (one before each coupling); required when K >= 1.
  """
  num_dims, num_layers, hidden_units = _check_common(num_dims, num_layers, hidden_units)
  if num_dims < 2 and num_layers > 0:
    raise ValueError(f"num_dims must be >= 2 for RealNVP couplings, got {num_dims}")
  if num_layers > 0 and key is None:
    raise ValueError("key is required to draw the permutations of a RealNVP hypernet")
  perms = _permutations(num_dims, num_layers, key) if num_layers else []
  d1 = num_dims // 2
  d2 = num_dims - d1

  def init(key: PRNGKey, loc=None, scale=1.0) -> Params:
    _check_init_args(num_dims, loc, scale)
    layers = []
    for k in jax.random.split(key, max(num_layers, 1))[:num_layers]:
      w1 = jax.random.normal(k, (d1, hidden_units)) * np.sqrt(2.0 / d1)
      layers.append({"w1": w1, "b1": jnp.zeros(hidden_units),
                     "w2": jnp.zeros((hidden_units, 2 * d2)),
                     "b2": jnp.concatenate([jnp.full(d2, np.log(1.0 - MIN_SCALE)), jnp.zeros(d2)])})
    return {"affine": _affine_init(num_dims, loc, scale), "layers": layers}

  def bijector(params: Params) -> distrax.Bijector:
    forward = [_affine(params["affine"])]
    for perm, layer in zip(perms, params["layers"]):
      forward += _conjugated(perm, Coupling(layer, num_dims))
    return forward[0] if len(forward) == 1 else distrax.Chain(forward[::-1])

  return Hypernet("realnvp", num_dims, init, bijector, num_layers)


def _autoregressive_hypernet(name: str, transformer: flows.Transformer, output_init_scale: float,
                             final_affine: bool):
  def build(num_dims: int, *, num_layers: int = 4, hidden_units: int = 200,
            key: Optional[PRNGKey] = None) -> Hypernet:
    num_dims_, num_layers_, hidden_ = _check_common(num_dims, num_layers, hidden_units)
    if num_layers_ > 0 and key is None:
      raise ValueError(f"key is required to draw the permutations of a {name!r} hypernet")
    perms = _permutations(num_dims_, num_layers_, key) if num_layers_ else []
    made = flows.MADE(num_dims=num_dims_, num_params=transformer.num_pseudo_params,
                      hidden_sizes=(hidden_,), output_init_scale=output_init_scale,
                      sort_units=False)  # the chapter-7 tables' exact arithmetic (see MADE)

    def conditioner(params, x, context):
      return made.apply(params, x, context)

    def init(key: PRNGKey, loc=None, scale=1.0) -> Params:
      _check_init_args(num_dims_, loc, scale)
      layers = []
      for k in jax.random.split(key, max(num_layers_, 1))[:num_layers_]:
        mk, tk = jax.random.split(k)
        layers.append({"made": made.init(mk, jnp.zeros(num_dims_)), "transformer": transformer.init(tk)})
      params = {"affine": _affine_init(num_dims_, loc, scale), "layers": layers}
      if final_affine:
        params["final"] = _affine_init(num_dims_, None, 1.0)
      return params

    def bijector(params: Params) -> distrax.Bijector:
      forward = [_affine(params["affine"])]
      for perm, layer in zip(perms, params["layers"]):
        forward += _conjugated(perm, flows.AutoregressiveBijector(
            conditioner, layer["made"], transformer, layer["transformer"], num_dims_,
            direction="iaf"))
      if final_affine:
        forward.append(_affine(params["final"]))
      return forward[0] if len(forward) == 1 else distrax.Chain(forward[::-1])

    return Hypernet(name, num_dims_, init, bijector, num_layers_)

  return build


iaf_hypernet = _autoregressive_hypernet("iaf", flows.affine_transformer(MIN_SCALE), 0.0, False)
iaf_hypernet.__doc__ = """Affine layer, then K IAF steps (MADE, 200 hidden units, affine transformer).

  MADE's output layer starts at zero, so every step is exactly the identity at init.
  Args as `realnvp_hypernet`; any D >= 1.
  """
dsf_hypernet = _autoregressive_hypernet("dsf", flows.dsf_transformer(8), 1e-2, True)
dsf_hypernet.__doc__ = """Affine layer, K DSF IAF steps (8 sigmoid units each), a final affine.

  The BHN + NAF combination proposed in Section 1.4.2.1. MADE's outputs start at a 1e-2
  scale (DSF units must start distinct), so the steps start near, not at, the identity.
  """

HYPERNETS: dict[str, Callable[..., Hypernet]] = {
    "gaussian": gaussian_hypernet,
    "realnvp": realnvp_hypernet,
    "iaf": iaf_hypernet,
    "dsf": dsf_hypernet,
}


def make_hypernet(name: str, num_dims: int, *, num_layers: int = 0, hidden_units: int = 200,
                  key: Optional[PRNGKey] = None) -> Hypernet:
  """A hypernet from the registry `HYPERNETS` by name.

  Args:
    name: "gaussian", "realnvp", "iaf" or "dsf".
    num_dims: D.
    num_layers: K coupling / IAF / DSF layers (0 for "gaussian").
    hidden_units: hidden width of each layer's network.
    key: draws the fixed permutations.
  """
  _checks.check_choice("name", name, tuple(HYPERNETS))
  return HYPERNETS[name](num_dims, num_layers=num_layers, hidden_units=hidden_units, key=key)
