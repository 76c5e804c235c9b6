"""The classifiers of thesis chapter 3 (3.2): a 2-hidden-layer ReLU MLP and a small CNN.

Both are a `Model(init, apply)` pair with one signature, so training code does not care
which it gets:

* `init(key, width) -> (params, model_state)`;
* `apply(params, model_state, x, width, *, train, reg=None, key=None) -> (logits, model_state)`.

`width` is the MLP's true hidden width. The MLP is *padded* to a static width and the
units `>= width` are masked to zero, so widths are a vmap axis of one program (the
capacity study, Figs. 3.5, 3.6). Masked units output zero and receive zero gradient, so
they stay zero. The CNN ignores `width`; its `model_state` holds the BatchNorm statistics.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.memorization.regularizers import Regularization, perturb_hidden, perturb_inputs
from jaxthesis.typing import Array, Params, PRNGKey, PyTree


class Model(NamedTuple):
  """A classifier as pure functions (see the module docstring)."""
  init: Callable[..., tuple[Params, PyTree]]
  apply: Callable[..., tuple[Array, PyTree]]
  input_shape: tuple[int, ...]
  num_classes: int


def _check_positive_int(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_width(width, max_width: int) -> None:
  """Rejects a concrete hidden width (or array of widths) outside [1, max_width]."""
  if not _checks.is_concrete(width):
    return
  w = np.asarray(width)
  if not np.issubdtype(w.dtype, np.integer):
    raise TypeError(f"width must be an integer (array), got dtype {w.dtype}")
  if w.size and (w.min() < 1 or w.max() > max_width):
    raise ValueError(f"width must lie in [1, {max_width}] (the padded width), got "
                     f"{w if w.size < 8 else f'values in [{w.min()}, {w.max()}]'}")


# ---------------------------------------------------------------------- masked MLP


def mlp_init(key: PRNGKey, input_dim: int, num_classes: int, max_width: int,
             width=None, depth: int = 2) -> Params:
  """Glorot-uniform ReLU MLP `input → w → w → classes`, padded to `max_width` units.

  Units `>= width` have zero weights. The Glorot limit `√(6 / (fan_in + fan_out))` uses
  the true width, so a padded network starts as the narrow one would.

  Args:
    key: PRNG key.
    input_dim, num_classes, max_width, depth: static sizes (positive ints).
    width: true hidden width in [1, max_width] (may be traced; default `max_width`).

  Returns:
    `[(W f32[fan_in, fan_out], b f32[fan_out]), ...]`, `depth + 1` layers.
  """
  for name, value in (("input_dim", input_dim), ("num_classes", num_classes),
                      ("max_width", max_width), ("depth", depth)):
    _check_positive_int(name, value)
  width = max_width if width is None else width
  check_width(width, max_width)
  w_true = jnp.asarray(width, jnp.float32)
  unit_mask = (jnp.arange(max_width) < width).astype(jnp.float32)
  sizes = [input_dim] + [max_width] * depth + [num_classes]
  true_sizes = [jnp.float32(input_dim)] + [w_true] * depth + [jnp.float32(num_classes)]
  in_masks = [jnp.ones(input_dim)] + [unit_mask] * depth
  out_masks = [unit_mask] * depth + [jnp.ones(num_classes)]
  params = []
  for layer, layer_key in enumerate(jax.random.split(key, depth + 1)):
    limit = jnp.sqrt(6.0 / (true_sizes[layer] + true_sizes[layer + 1]))
    w = jax.random.uniform(layer_key, (sizes[layer], sizes[layer + 1]), jnp.float32, -1, 1)
    w = w * limit * in_masks[layer][:, None] * out_masks[layer][None, :]
    params.append((w, jnp.zeros(sizes[layer + 1], jnp.float32)))
  return params


def mlp_apply(params: Params, x: Array, width=None, *, reg: Optional[Regularization] = None,
              key: Optional[PRNGKey] = None) -> Array:
  """Logits `f32[B, classes]` of the padded MLP on `x f32[B, input_dim]`.

  With `key` and `reg`, the regularizers' training-time perturbations are applied (input
  dropout and noise on `x`, dropout and noise on each hidden layer); without a key the
  network is deterministic (evaluation).
  """
  max_width = params[0][0].shape[1]
  width = max_width if width is None else width
  check_width(width, max_width)
  unit_mask = (jnp.arange(max_width) < width).astype(x.dtype)
  perturb = key is not None and reg is not None
  keys = jax.random.split(key, len(params)) if perturb else [None] * len(params)
  if perturb:
    x = perturb_inputs(keys[-1], x, reg)
  for (w, b), layer_key in zip(params[:-1], keys):
    x = jax.nn.relu(x @ w + b)
    if perturb:
      x = perturb_hidden(layer_key, x, reg)
    x = x * unit_mask
  w, b = params[-1]
  return x @ w + b


def mlp(input_dim: int, num_classes: int, max_width: int, depth: int = 2) -> Model:
  """The MLP of thesis 3.2 (2 hidden ReLU layers, up to 4,096 units) as a `Model`."""
  for name, value in (("input_dim", input_dim), ("num_classes", num_classes),
                      ("max_width", max_width), ("depth", depth)):
    _check_positive_int(name, value)

  def init(key, width):
    return mlp_init(key, input_dim, num_classes, max_width, width, depth), ()

  def apply(params, model_state, x, width, *, train, reg=None, key=None):
    del train
    x = x.reshape(x.shape[0], -1)
    return mlp_apply(params, x, width, reg=reg, key=key), model_state

  return Model(init, apply, (input_dim,), num_classes)


# ------------------------------------------------------------------------ small CNN


class SmallCNN(nn.Module):
  """The small Alexnet-style CNN of thesis 3.2 (footnote 2), as in Zhang et al.

  Crop(c, c) → Conv(channels, 5×5) → BN → ReLU → MaxPool(3×3) → Conv(channels, 5×5) →
  BN → ReLU → MaxPool(3×3) → Dense(384) → BN → ReLU → Dense(192) → BN → ReLU →
  Dense(classes). Convolutions use 'SAME' padding and the pools stride 2 (the TensorFlow
  CIFAR-10 model Zhang et al. start from). Input regularizers act on the cropped input,
  hidden ones after each dense hidden layer.
  """
  num_classes: int
  channels: int = 200
  dense: Sequence[int] = (384, 192)
  crop: int = 2

  @nn.compact
  def __call__(self, x, *, train: bool, reg: Optional[Regularization] = None,
               key: Optional[PRNGKey] = None):
    perturb = train and key is not None and reg is not None
    keys = jax.random.split(key, len(self.dense) + 1) if perturb else None
    c = self.crop
    if c:
      x = x[:, c:-c, c:-c, :]
    if perturb:
      x = perturb_inputs(keys[0], x, reg)
    bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    for _ in range(2):
      x = nn.Conv(self.channels, (5, 5), padding="SAME")(x)
      x = nn.relu(bn()(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="SAME")
    x = x.reshape(x.shape[0], -1)
    for i, units in enumerate(self.dense):
      x = nn.relu(bn()(nn.Dense(units)(x)))
      if perturb:
        x = perturb_hidden(keys[i + 1], x, reg)
    return nn.Dense(self.num_classes)(x)


def small_cnn(input_shape: tuple[int, int, int], num_classes: int, channels: int = 200,
              dense: Sequence[int] = (384, 192), crop: int = 2) -> Model:
  """`SmallCNN` as a `Model`; `model_state` is its BatchNorm statistics."""
  if len(input_shape) != 3:
    raise ValueError(f"input_shape must be (height, width, channels), got {input_shape}")
  for name, value in (("num_classes", num_classes), ("channels", channels),
                      *((f"input_shape[{i}]", s) for i, s in enumerate(input_shape)),
                      *((f"dense[{i}]", s) for i, s in enumerate(dense))):
    _check_positive_int(name, value)
  if not isinstance(crop, (int, np.integer)) or crop < 0 or 2 * crop >= min(input_shape[:2]):
    raise ValueError(f"crop must be an int in [0, {min(input_shape[:2]) // 2}), got {crop!r}")
  module = SmallCNN(num_classes, channels, tuple(dense), crop)

  def init(key, width=None):
    del width
    variables = module.init(key, jnp.zeros((1, *input_shape)), train=False)
    return variables["params"], variables["batch_stats"]

  def apply(params, model_state, x, width=None, *, train, reg=None, key=None):
    del width
    variables = {"params": params, "batch_stats": model_state}
    if train:
      logits, updates = module.apply(variables, x, train=True, reg=reg, key=key,
                                     mutable=["batch_stats"])
      return logits, updates["batch_stats"]
    return module.apply(variables, x, train=False), model_state

  return Model(init, apply, tuple(input_shape), num_classes)
