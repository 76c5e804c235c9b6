"""A ReLU MLP padded to a fixed width whose true width is an array (so it can be vmapped).

Units `>= hidden` start at zero, output zero and get zero gradient, so they stay zero
under Adam and L2 regularization. With the width-consistent initialization of
`masked_mlp_init` (unit j's weights do not depend on how many units there are), a
network of width h trained inside a wider padded one *is* the narrow network trained
alone: a width sweep runs as one vmapped program per bucket (`width_buckets`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, Params, PRNGKey


def _column_uniform(key: PRNGKey, fan_in_pad: int, fan_out_pad: int, draw_length: int) -> Array:
  """`U(-1, 1)[fan_in_pad, fan_out_pad]` whose column j depends only on (key, j)."""
  cols = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(key, j), (draw_length,),
                                               jnp.float32, -1.0, 1.0))(jnp.arange(fan_out_pad))
  return cols[:, :fan_in_pad].T


def _check_hidden(hidden, width: int) -> None:
  if np.ndim(hidden) != 0:
    raise ValueError(f"hidden must be a scalar (vmap over restarts), got shape "
                     f"{_checks.shape_of(hidden)}")
  if not jnp.issubdtype(jnp.result_type(hidden), jnp.integer):
    raise TypeError(f"hidden must be an integer width, got dtype {jnp.result_type(hidden)}")
  if _checks.is_concrete(hidden) and not 1 <= int(hidden) <= width:
    raise ValueError(f"hidden must lie in [1, width={width}], got {int(hidden)}")


def masked_mlp_init(key: PRNGKey, input_dim: int, width: int, hidden: Array, *,
                    width_limit: int, depth: int = 2) -> Params:
  """Xavier-uniform ReLU MLP `input → h → ... → 1`, padded to `width` units per layer.

  Units `>= hidden` are zero. Unit j's incoming weights are drawn from `fold_in(key_l, j)`
  over a fixed length `max(input_dim, width_limit)`, so the first h units are the same
  for every padded width: the network of width h *is* the first h units of any wider one.
  The Xavier limit `√(6 / (fan_in + fan_out))` uses the true widths.

  Args:
    key: PRNG key.
    input_dim: d.
    width: padded width (static).
    hidden: true width h <= width, an integer scalar (may be traced).
    width_limit: the largest width any configuration may use (static; fixes draw length).
    depth: number of hidden layers.

  Returns:
    `[(W f32[fan_in, fan_out], b f32[fan_out]), ...]`, depth + 1 layers.
  """
  for name, value in (("input_dim", input_dim), ("width", width), ("width_limit", width_limit),
                      ("depth", depth)):
    _checks.check_positive_int(name, value)
  if width > width_limit:
    raise ValueError(f"width {width} exceeds width_limit {width_limit}")
  _check_hidden(hidden, width)
  draw = max(input_dim, width_limit)
  h = jnp.asarray(hidden, jnp.float32)
  unit_mask = (jnp.arange(width) < hidden).astype(jnp.float32)
  sizes = [input_dim] + [width] * depth + [1]
  true_sizes = [jnp.float32(input_dim)] + [h] * depth + [jnp.float32(1)]
  in_masks = [jnp.ones(input_dim)] + [unit_mask] * depth
  out_masks = [unit_mask] * depth + [jnp.ones(1)]
  params = []
  for layer, key_l in enumerate(jax.random.split(key, depth + 1)):
    limit = jnp.sqrt(6.0 / (true_sizes[layer] + true_sizes[layer + 1]))
    w = _column_uniform(key_l, sizes[layer], sizes[layer + 1], draw) * limit
    w = w * in_masks[layer][:, None] * out_masks[layer][None, :]
    params.append((w, jnp.zeros(sizes[layer + 1], jnp.float32)))
  return params


def masked_mlp_apply(params: Params, x: Array, hidden: Array) -> Array:
  """Logits `f32[...]` of the padded MLP with hidden units `>= hidden` masked to zero.

  Args:
    params: from `masked_mlp_init`.
    x: `f32[..., input_dim]`.
    hidden: the true width (integer scalar, may be traced).
  """
  if not isinstance(params, (list, tuple)) or len(params) < 2:
    raise ValueError("params must be the layer list of masked_mlp_init")
  width, input_dim = params[0][0].shape[1], params[0][0].shape[0]
  if np.ndim(x) < 1 or np.shape(x)[-1] != input_dim:
    raise ValueError(f"x must have last dimension input_dim={input_dim}, got shape "
                     f"{_checks.shape_of(x)}")
  _checks.check_floating("x", x)
  _check_hidden(hidden, width)
  unit_mask = (jnp.arange(width) < hidden).astype(x.dtype)
  for w, b in params[:-1]:
    x = jax.nn.relu(x @ w + b) * unit_mask
  w, b = params[-1]
  return (x @ w + b)[..., 0]
