"""MADE, the masked autoencoder used as the autoregressive conditioner of every flow.

Germain et al. (2015): each unit gets a degree; a connection is kept only from lower or
equal degrees (hidden layers) or strictly lower degrees (output layer), so output block t
depends only on the inputs that precede t in the ordering -- the conditioner `c(x_{1:t-1})`
of Eq. 9.4 of the thesis, computed for every t in one pass.
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.typing import Array, PRNGKey

ORDERINGS = ("natural", "reversed", "random")
ACTIVATIONS = {"relu": nn.relu, "elu": nn.elu, "tanh": jnp.tanh, "gelu": nn.gelu}
# Dense runs the masked output layer is split into (see `_output_blocks`).
_OUTPUT_BLOCKS = 4


def make_ordering(kind: str, num_dims: int, key: Optional[PRNGKey] = None
                  ) -> tuple[int, ...]:
  """The order in which dimensions are generated, as a tuple of dimension indices.

  Args:
    kind: "natural" (0, 1, ..., D-1), "reversed" (D-1, ..., 0) or "random" (needs `key`).
    num_dims: D >= 1.
    key: PRNG key for "random".

  Returns:
    A permutation of range(D): element i is the dimension generated i-th.
  """
  _checks.check_choice("kind", kind, ORDERINGS)
  if not isinstance(num_dims, (int, np.integer)) or num_dims < 1:
    raise ValueError(f"num_dims must be a positive int, got {num_dims!r}")
  if kind == "natural":
    return tuple(range(num_dims))
  if kind == "reversed":
    return tuple(range(num_dims - 1, -1, -1))
  if key is None:
    raise ValueError("key is required for a 'random' ordering")
  return tuple(int(i) for i in np.asarray(jax.random.permutation(key, num_dims)))


def check_ordering(ordering: Sequence[int], num_dims: int) -> tuple[int, ...]:
  """Validates that `ordering` is a permutation of range(num_dims) and returns it."""
  ordering = tuple(int(i) for i in ordering)
  if sorted(ordering) != list(range(num_dims)):
    raise ValueError(f"ordering must be a permutation of range({num_dims}), got {ordering}")
  return ordering


def _made_degrees(num_dims: int, hidden_sizes: Sequence[int], num_params: int,
                 ordering: Sequence[int]) -> list[np.ndarray]:
  """The degrees of MADE's units, layer by layer: inputs, each hidden layer, outputs.

  Input dimension `ordering[i]` has degree i + 1. Hidden unit j of every layer has degree
  `1 + j mod (D - 1)` (degree 0, context only, when D = 1). Output column
  `t * num_params + k` has the degree of input t.

  Returns:
    `len(hidden_sizes) + 2` int64 vectors.
  """
  ordering = check_ordering(ordering, num_dims)
  degrees_in = np.empty(num_dims, np.int64)
  degrees_in[list(ordering)] = np.arange(1, num_dims + 1)
  hidden = [(1 + np.arange(width) % (num_dims - 1)) if num_dims > 1 else
            np.zeros(width, np.int64) for width in hidden_sizes]
  return [degrees_in, *hidden, np.repeat(degrees_in, num_params)]


def made_masks(num_dims: int, hidden_sizes: Sequence[int], num_params: int,
               ordering: Sequence[int]) -> list[np.ndarray]:
  """The 0/1 connectivity masks of MADE, one [fan_in, fan_out] matrix per layer.

  With the degrees of `_made_degrees`, hidden masks keep `deg_in <= deg_out` and the output
  mask keeps `deg_in < deg_out`, so output block t depends only on the inputs generated
  before t.

  Returns:
    `len(hidden_sizes) + 1` float32 masks.
  """
  degrees = _made_degrees(num_dims, hidden_sizes, num_params, ordering)
  return [_connected(deg_in, deg_out, last=l == len(degrees) - 2).astype(np.float32)
          for l, (deg_in, deg_out) in enumerate(zip(degrees[:-1], degrees[1:]))]


def _connected(deg_in, deg_out, last: bool):
  """The mask `deg_in < deg_out` (output layer) or `<=` (hidden), numpy or jax."""
  return deg_in[:, None] < deg_out[None, :] if last else deg_in[:, None] <= deg_out[None, :]


def _output_blocks(deg_in: np.ndarray, deg_out: np.ndarray, num_dims: int, num_params: int,
                   max_blocks: int) -> Optional[tuple[np.ndarray, list[tuple[int, int, int]]]]:
  """A plan for the masked output layer `h @ (kernel * mask)` as a few dense products.

  Output block t sees only the units of degree below t's, so about half of a MADE output
  mask is zero. Sorted by degree (`row_order`), the units block t sees are a prefix of
  them. Where that prefix grows monotonically along the dimensions (the natural and
  reversed orderings), the dimensions split into at most `max_blocks` runs `[lo, hi)` of
  consecutive dimensions, each one dense product with the first `n` sorted units: the
  all-zero rectangles of the mask are skipped, the zeros inside a run are still
  multiplied. For D = 64 and 4 runs that is 5/8 of the dense product's work.

  Returns:
    `(row_order, [(lo, hi, n), ...])`, or None where the mask has no such structure
    (random orderings) or the runs would save less than a fifth of the work.
  """
  row_order = np.argsort(deg_in, kind="stable")
  need = np.searchsorted(deg_in[row_order], deg_out[::num_params], side="left")
  steps = np.diff(need)
  if not (np.all(steps >= 0) or np.all(steps <= 0)):
    return None
  bounds = np.unique(np.linspace(0, num_dims, min(max_blocks, num_dims) + 1).round().astype(int))
  blocks = [(int(lo), int(hi), int(need[lo:hi].max())) for lo, hi in zip(bounds[:-1], bounds[1:])]
  if sum((hi - lo) * n for lo, hi, n in blocks) > 0.8 * num_dims * deg_in.size:
    return None
  return row_order, blocks


def _blocked_product(h: Array, kernel: Array, deg_in: np.ndarray, deg_out: np.ndarray,
                     plan: tuple[np.ndarray, list[tuple[int, int, int]]], num_params: int
                     ) -> Array:
  """`h @ (kernel * mask)` for the output mask, by the runs of `_output_blocks`."""
  row_order, blocks = plan
  if np.array_equal(row_order, np.arange(row_order.size)):  # e.g. D = 2: one hidden degree
    h_sorted, kernel_sorted, deg_sorted = h, kernel, deg_in
  else:
    h_sorted, kernel_sorted, deg_sorted = h[..., row_order], kernel[row_order], deg_in[row_order]
  parts = []
  for lo, hi, n in blocks:
    cols = slice(lo * num_params, hi * num_params)
    if n == 0:
      parts.append(jnp.zeros(h.shape[:-1] + ((hi - lo) * num_params,), h.dtype))
      continue
    mask = _connected(jnp.asarray(deg_sorted[:n]), jnp.asarray(deg_out[cols]), last=True)
    parts.append(h_sorted[..., :n] @ jnp.where(mask, kernel_sorted[:n, cols], 0.0))
  return jnp.concatenate(parts, axis=-1)


class MADE(nn.Module):
  """Masked autoencoder: `x [..., D] (+ context [..., C]) -> pseudo-parameters [..., D, K]`.

  Attributes:
    num_dims: D.
    num_params: K, outputs per dimension.
    hidden_sizes: widths of the masked hidden layers.
    ordering: permutation of range(D); see `make_ordering`.
    activation: one of "relu", "elu", "tanh", "gelu".
    output_init_scale: the output kernel starts as a lecun-normal draw times this scale
      and the output bias as a normal draw of this standard deviation, so the
      pseudo-parameters (and the flow) start near zero (near the identity) while the units
      of a transformer start distinct; 0 gives exactly zero outputs (exact identity, but
      identical sigmoid units never separate).
  """
  num_dims: int
  num_params: int
  hidden_sizes: Sequence[int] = (64, 64)
  ordering: Optional[Sequence[int]] = None
  activation: str = "relu"
  output_init_scale: float = 1e-2

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None) -> Array:
    d, k = self.num_dims, self.num_params
    if x.shape[-1:] != (d,):
      raise ValueError(f"x must have shape [..., {d}], got {x.shape}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                       f"got {self.activation!r}")
    ordering = tuple(range(d)) if self.ordering is None else self.ordering
    # The masks are formed from the small degree vectors inside the compiled step (fused
    # into the weight's use) rather than stored as [fan_in, fan_out] constants.
    degrees = _made_degrees(d, tuple(self.hidden_sizes), k, ordering)
    act = ACTIVATIONS[self.activation]
    h = x
    for l, (deg_in, deg_out) in enumerate(zip(degrees[:-1], degrees[1:])):
      last = l == len(degrees) - 2
      fan_in, fan_out = deg_in.size, deg_out.size
      init = (nn.initializers.variance_scaling(self.output_init_scale ** 2, "fan_in",
                                               "truncated_normal")
              if last and self.output_init_scale > 0 else
              nn.initializers.zeros if last else nn.initializers.lecun_normal())
      kernel = self.param(f"kernel_{l}", init, (fan_in, fan_out), jnp.float32)
      # The output bias is also drawn (at the output scale): it alone parameterizes the
      # first dimension's transformer, whose sigmoid units would otherwise stay identical.
      bias_init = (nn.initializers.normal(self.output_init_scale) if last else
                   nn.initializers.zeros)
      bias = self.param(f"bias_{l}", bias_init, (fan_out,), jnp.float32)
      plan = _output_blocks(deg_in, deg_out, d, k, _OUTPUT_BLOCKS) if last else None
      if plan is None:
        mask = _connected(jnp.asarray(deg_in), jnp.asarray(deg_out), last)
        h = h @ jnp.where(mask, kernel, 0.0) + bias
      else:
        h = _blocked_product(h, kernel, deg_in, deg_out, plan, k) + bias
      # The context feeds the first hidden layer and, directly, the output layer: the
      # first dimension's block sees no hidden unit, only the context.
      if context is not None and (l == 0 or last):
        h = h + nn.Dense(fan_out, use_bias=False, name=f"context_{l}",
                         kernel_init=(init if last else nn.initializers.lecun_normal()))(context)
      if not last:
        h = act(h)
    return h.reshape(h.shape[:-1] + (d, k))
