"""Primary networks: weight-normalized layers whose scales `g` come from outside (Eq. 7.7).

A weight-normalized unit j computes `act((x . v_j / ||v_j||) g_j + b_j)`: the direction
`v_j` and the bias `b_j` are point estimates, the scale `g_j` is the Bayesian quantity a
hypernetwork generates. A `PrimaryNet` splits its forward pass in two:

* `features(params, x)`: the products that do not depend on the random quantity (the first
  layer's `x . v / ||v||`), computed once per minibatch;
* `head(params, theta, features)`: everything that does, vmapped over posterior samples.

`apply(params, theta, x) = head(params, theta, features(params, x))`.

Builders: `weightnorm_mlp` (random `g`, Eq. 7.7), `weightnorm_cnn` (the CIFAR-10 net of
Section 7.4.2), `dense_mlp` (the hypernetwork generates every weight: the third panel of
Fig. 7.1 and Bayes by Backprop).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxthesis import _checks
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "elu": jax.nn.elu,
               "identity": lambda x: x}
_DDI_EPS = 1e-6


class PrimaryNet(NamedTuple):
  """A primary network as pure functions over a point-estimate pytree and a random vector.

  Attributes:
    init: `(key, x_init) -> (params, theta_init)`: point parameters and an initial value of
      the random vector `theta [D]` (data-dependent where the net has weight norm).
    features: `(params, x [B, ...]) -> h`: the sample-independent part of the pass.
    head: `(params, theta [D], h, *, key=None, dropout_rate=0.) -> outputs [B, K]`;
      `key` draws dropout masks on the hidden units when `dropout_rate > 0`.
    num_random: D, the size of `theta`.
    input_shape: shape of one input example.
    num_outputs: K.
  """
  init: Callable[[PRNGKey, Array], tuple[Params, Array]]
  features: Callable[[Params, Array], Array]
  head: Callable[..., Array]
  num_random: int
  input_shape: tuple[int, ...]
  num_outputs: int

  def apply(self, params: Params, theta: Array, x: Array, *, key: Optional[PRNGKey] = None,
            dropout_rate: float = 0.0) -> Array:
    """`head(params, theta, features(params, x))`."""
    check_inputs(self, x)
    check_theta(self, theta)
    return self.head(params, theta, self.features(params, x), key=key,
                     dropout_rate=dropout_rate)


def check_inputs(net: PrimaryNet, x: ArrayLike, name: str = "x") -> None:
  """`x` must be floating with shape [B, *net.input_shape]."""
  _checks.check_floating(name, x)
  if tuple(np.shape(x)[1:]) != net.input_shape or np.ndim(x) != len(net.input_shape) + 1:
    raise ValueError(f"{name} must have shape [B, {', '.join(map(str, net.input_shape))}], "
                     f"got {tuple(np.shape(x))}")


def check_theta(net: PrimaryNet, theta: ArrayLike, name: str = "theta") -> None:
  _checks.check_floating(name, theta)
  if np.shape(theta)[-1:] != (net.num_random,):
    raise ValueError(f"{name} must have shape [..., {net.num_random}], got {np.shape(theta)}")


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
  sizes = tuple(sizes)
  if any(not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
    raise ValueError(f"{name} must be positive ints, got {sizes!r}")
  return tuple(int(s) for s in sizes)


def _check_positive_int(name: str, value) -> int:
  if not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")
  return int(value)


def _dropout(key: Optional[PRNGKey], h: Array, rate: float, index: int) -> Array:
  """Inverted dropout on hidden units: keep with probability 1 - rate, scale by 1/(1-rate)."""
  if rate == 0.0 or key is None:
    return h
  keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - rate, h.shape)
  return jnp.where(keep, h / (1.0 - rate), 0.0)


def _check_dropout(rate: float) -> None:
  if not 0.0 <= float(rate) < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1), got {rate!r}")


# -------------------------------------------------------------------------- layers


def unit_directions(v: Array, axes: Sequence[int]) -> Array:
  """`v / ||v||` with the norm over `axes` (every axis but the output unit's)."""
  return v / jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(axes), keepdims=True))


def weightnorm_dense(params: Params, g: Array, x: Array) -> Array:
  """`(x . v / ||v||) * g + b` (Eq. 7.7), the pre-activation of a weight-normalized layer.

  Args:
    params: `{"v": [I, O], "b": [O]}`.
    g: scales [O] (from outside: a hypernetwork sample or a point estimate).
    x: inputs [..., I].

  Returns:
    Pre-activations [..., O]; equal to `x @ w + b` with `w = g v / ||v||` column-wise.
  """
  _checks.check_rank("params['v']", params["v"], 2)
  fan_in, fan_out = np.shape(params["v"])
  if np.shape(x)[-1:] != (fan_in,):
    raise ValueError(f"x must have shape [..., {fan_in}], got {np.shape(x)}")
  if np.shape(g) != (fan_out,):
    raise ValueError(f"g must have shape [{fan_out}], got {np.shape(g)}")
  return (x @ unit_directions(params["v"], (0,))) * g + params["b"]


def weightnorm_conv(params: Params, g: Array, x: Array, *, padding: str = "SAME") -> Array:
  """2-D convolution with weight-normalized filters: `conv(x, v / ||v||) * g + b`.

  The norm of each output channel's filter runs over its height, width and input
  channels. NHWC inputs, HWIO filters, stride 1.

  Args:
    params: `{"v": [H, W, I, O], "b": [O]}`.
    g: scales [O].
    x: inputs [B, height, width, I].
    padding: "SAME" or "VALID".

  Returns:
    Pre-activations [B, height', width', O].
  """
  _checks.check_rank("params['v']", params["v"], 4)
  _checks.check_choice("padding", padding, ("SAME", "VALID"))
  channels_in, channels_out = np.shape(params["v"])[2:]
  if np.ndim(x) != 4 or np.shape(x)[-1] != channels_in:
    raise ValueError(f"x must have shape [B, height, width, {channels_in}], got {np.shape(x)}")
  if np.shape(g) != (channels_out,):
    raise ValueError(f"g must have shape [{channels_out}], got {np.shape(g)}")
  u = unit_directions(params["v"], (0, 1, 2))
  out = jax.lax.conv_general_dilated(x, u, (1, 1), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return out * g + params["b"]


def data_dependent_init(pre_unit: Array, axes: Sequence[int]) -> tuple[Array, Array]:
  """Scales and biases that give unit-variance, zero-mean pre-activations on a batch.

  With `t = x . v / ||v||` on the batch, `g = 1 / std(t)` and `b = -mean(t) / std(t)`, so
  `t g + b` has mean 0 and variance 1 per unit (Salimans and Kingma's initialization,
  used for the primary nets of Section 7.3.3).

  Args:
    pre_unit: `t`, the products with the unit directions, [..., O].
    axes: the batch (and spatial) axes to take statistics over.

  Returns:
    `(g [O], b [O])`.
  """
  mean = jnp.mean(pre_unit, axis=tuple(axes))
  std = jnp.sqrt(jnp.var(pre_unit, axis=tuple(axes)) + _DDI_EPS)
  return 1.0 / std, -mean / std


# ------------------------------------------------------------------------ networks


def weightnorm_mlp(input_size: int, hidden_sizes: Sequence[int], num_outputs: int, *,
                   activation: str = "relu", init_std: float = 0.05) -> PrimaryNet:
  """An MLP of weight-normalized dense layers whose scales `g` are the random vector.

  `theta` holds every layer's `g` (output layer included), D = sum(hidden) + outputs: the
  MNIST nets of Table 7.I use `hidden_sizes=(800, 800)` or `(1200, 1200)`.

  Args:
    input_size: I, features per example.
    hidden_sizes: hidden widths.
    num_outputs: K.
    activation: one of "relu", "tanh", "elu", "identity".
    init_std: standard deviation of the initial directions `v` (their scale cancels in
      `v / ||v||`; it only sets the distribution of directions).

  Returns:
    A `PrimaryNet`; `init(key, x_init)` runs the data-dependent initialization on `x_init`.
  """
  input_size = _check_positive_int("input_size", input_size)
  hidden_sizes = _check_sizes("hidden_sizes", hidden_sizes)
  num_outputs = _check_positive_int("num_outputs", num_outputs)
  _checks.check_choice("activation", activation, tuple(ACTIVATIONS))
  if not init_std > 0:
    raise ValueError(f"init_std must be > 0, got {init_std!r}")
  act = ACTIVATIONS[activation]
  sizes = (input_size,) + hidden_sizes + (num_outputs,)
  splits = np.cumsum(sizes[1:])[:-1].tolist()
  num_layers = len(sizes) - 1

  def features(params, x):
    return x @ unit_directions(params[0]["v"], (0,))

  def head(params, theta, h, *, key=None, dropout_rate=0.0):
    gs = jnp.split(theta, splits, axis=-1)
    h = h * gs[0] + params[0]["b"]
    for l in range(1, num_layers):
      h = _dropout(key, act(h), dropout_rate, l)
      h = weightnorm_dense(params[l], gs[l], h)
    return h

  def init(key, x_init):
    check_inputs(net, x_init, "x_init")
    params, gs = [], []
    h = jnp.asarray(x_init)
    for l, k in enumerate(jax.random.split(key, num_layers)):
      v = init_std * jax.random.normal(k, (sizes[l], sizes[l + 1]))
      t = h @ unit_directions(v, (0,))
      g, b = data_dependent_init(t, (0,))
      params.append({"v": v, "b": b})
      gs.append(g)
      h = act(t * g + b)
    return params, jnp.concatenate(gs)

  net = PrimaryNet(init, features, head, int(sum(sizes[1:])), (input_size,), num_outputs)
  return net


def weightnorm_cnn(input_shape: Sequence[int], channels: Sequence[int], pool_after: Sequence[int],
                   dense_sizes: Sequence[int], num_outputs: int, *, kernel_size: int = 3,
                   activation: str = "relu", init_std: float = 0.05) -> PrimaryNet:
  """A CNN of weight-normalized 3x3 convolutions, 2x2 max pooling, then dense layers.

  Section 7.4.2's CIFAR-10 net is `channels=(64, 64, 128, 128)`, `pool_after=(1, 3)`
  (after the 2nd and 4th convolutions, 0-based), `dense_sizes=(512,)`. Every layer's
  scales `g` form the random vector.

  Args:
    input_shape: (height, width, channels) of one image.
    channels: output channels of each convolution.
    pool_after: 0-based indices of the convolutions followed by 2x2 max pooling.
    dense_sizes: widths of the dense hidden layers after flattening.
    num_outputs: K.
    kernel_size: filter height and width.
    activation: hidden activation.
    init_std: standard deviation of the initial directions.

  Returns:
    A `PrimaryNet`.
  """
  input_shape = _check_sizes("input_shape", input_shape)
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (height, width, channels), got {input_shape!r}")
  channels = _check_sizes("channels", channels)
  if not channels:
    raise ValueError("channels must name at least one convolution")
  pool_after = tuple(int(i) for i in pool_after)
  if any(i < 0 or i >= len(channels) for i in pool_after):
    raise ValueError(f"pool_after must index channels (0..{len(channels) - 1}), got {pool_after!r}")
  dense_sizes = _check_sizes("dense_sizes", dense_sizes)
  num_outputs = _check_positive_int("num_outputs", num_outputs)
  kernel_size = _check_positive_int("kernel_size", kernel_size)
  _checks.check_choice("activation", activation, tuple(ACTIVATIONS))
  act = ACTIVATIONS[activation]
  height, width, c_in = input_shape
  for i in range(len(channels)):
    if i in pool_after:
      height, width = height // 2, width // 2
  if height < 1 or width < 1:
    raise ValueError(f"input_shape {input_shape} is too small for {len(pool_after)} poolings")
  flat = height * width * channels[-1]
  dense_in = (flat,) + dense_sizes
  dense_out = dense_sizes + (num_outputs,)
  unit_counts = channels + dense_out
  splits = np.cumsum(unit_counts)[:-1].tolist()

  def pool(h):
    return jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

  def features(params, x):
    u = unit_directions(params["conv"][0]["v"], (0, 1, 2))
    return jax.lax.conv_general_dilated(x, u, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  def _layers(params, gs, h, start, key, dropout_rate, collect=None):
    for i in range(start, len(channels)):
      if i > 0:
        h = weightnorm_conv(params["conv"][i], gs[i], h)
      h = act(h)
      if i in pool_after:
        h = pool(h)
    h = h.reshape(h.shape[0], -1)
    for j in range(len(dense_out)):
      h = _dropout(key, h, dropout_rate, j) if j > 0 else h
      h = weightnorm_dense(params["dense"][j], gs[len(channels) + j], h)
      if j < len(dense_out) - 1:
        h = act(h)
    return h

  def head(params, theta, h, *, key=None, dropout_rate=0.0):
    gs = jnp.split(theta, splits, axis=-1)
    return _layers(params, gs, h * gs[0] + params["conv"][0]["b"], 0, key, dropout_rate)

  def init(key, x_init):
    check_inputs(net, x_init, "x_init")
    keys = iter(jax.random.split(key, len(channels) + len(dense_out)))
    conv, dense, gs = [], [], []
    h = jnp.asarray(x_init)
    cin = c_in
    for i, cout in enumerate(channels):
      v = init_std * jax.random.normal(next(keys), (kernel_size, kernel_size, cin, cout))
      t = weightnorm_conv({"v": v, "b": jnp.zeros(cout)}, jnp.ones(cout), h)
      g, b = data_dependent_init(t, (0, 1, 2))
      conv.append({"v": v, "b": b})
      gs.append(g)
      h = act(t * g + b)
      if i in pool_after:
        h = pool(h)
      cin = cout
    h = h.reshape(h.shape[0], -1)
    for j, (fi, fo) in enumerate(zip(dense_in, dense_out)):
      v = init_std * jax.random.normal(next(keys), (fi, fo))
      t = h @ unit_directions(v, (0,))
      g, b = data_dependent_init(t, (0,))
      dense.append({"v": v, "b": b})
      gs.append(g)
      h = act(t * g + b) if j < len(dense_out) - 1 else h
    return {"conv": conv, "dense": dense}, jnp.concatenate(gs)

  net = PrimaryNet(init, features, head, int(sum(unit_counts)), input_shape, num_outputs)
  return net


def dense_mlp(input_size: int, hidden_sizes: Sequence[int], num_outputs: int, *,
              activation: str = "relu") -> PrimaryNet:
  """An MLP whose every weight and bias is the random vector (no point parameters).

  The "hypernet generates all weights" model of Fig. 7.1 (third panel) and, with a
  factorial Gaussian hypernet, Bayes by Backprop. `theta` is the flattened
  `[(W_1, b_1), ..., (W_L, b_L)]`; `init` returns Glorot-uniform weights and zero biases
  as its initial value (the features are the inputs themselves).

  Args:
    input_size: I.
    hidden_sizes: hidden widths.
    num_outputs: K.
    activation: hidden activation.

  Returns:
    A `PrimaryNet` with empty point parameters.
  """
  input_size = _check_positive_int("input_size", input_size)
  hidden_sizes = _check_sizes("hidden_sizes", hidden_sizes)
  num_outputs = _check_positive_int("num_outputs", num_outputs)
  _checks.check_choice("activation", activation, tuple(ACTIVATIONS))
  act = ACTIVATIONS[activation]
  sizes = (input_size,) + hidden_sizes + (num_outputs,)
  template = [{"w": jnp.zeros((a, b)), "b": jnp.zeros(b)} for a, b in zip(sizes[:-1], sizes[1:])]
  flat, unravel = ravel_pytree(template)

  def features(params, x):
    del params
    return x

  def head(params, theta, h, *, key=None, dropout_rate=0.0):
    del params
    layers = unravel(theta)
    for l, layer in enumerate(layers):
      if l > 0:
        h = _dropout(key, act(h), dropout_rate, l)
      h = h @ layer["w"] + layer["b"]
    return h

  def init(key, x_init):
    check_inputs(net, x_init, "x_init")
    glorot = jax.nn.initializers.glorot_uniform()
    layers = [{"w": glorot(k, (a, b)), "b": jnp.zeros(b)}
              for k, a, b in zip(jax.random.split(key, len(sizes) - 1), sizes[:-1], sizes[1:])]
    return {}, ravel_pytree(layers)[0]

  net = PrimaryNet(init, features, head, int(flat.size), (input_size,), num_outputs)
  return net
