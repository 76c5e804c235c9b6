"""MADE, the masked autoencoder used as the autoregressive conditioner of every flow.

Germain et al. (2015): each unit gets a degree; a connection is kept only from lower or
equal degrees (hidden layers) or strictly lower degrees (output layer), so output block t
depends only on the inputs that precede t in the ordering -- the conditioner `c(x_{1:t-1})`
of Eq. 9.4 of the thesis, computed for every t in one pass.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence

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
# Output groups (`MADE.param_groups`) smaller than this (per dimension) are not split into
# the dense runs where there are several (see `_grouped_output`).
_MIN_BLOCKED_PARAMS = 8


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
  _checks.check_positive_int("num_dims", num_dims)
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


def _masked_product(h: Array, kernel: Array, deg_in: np.ndarray, deg_out: np.ndarray,
                    num_dims: int, num_params: int, last: bool) -> Array:
  """`h @ (kernel * mask)`; the output layer's by `_blocked_product` where that pays."""
  plan = _output_blocks(deg_in, deg_out, num_dims, num_params, _OUTPUT_BLOCKS) if last else None
  if plan is None:
    mask = _connected(jnp.asarray(deg_in), jnp.asarray(deg_out), last)
    return h @ jnp.where(mask, kernel, 0.0)
  return _blocked_product(h, kernel, deg_in, deg_out, plan, num_params)


def _permuted(init, order: np.ndarray, axis: int):
  """The initializer `init` with its draw permuted by `order` along `axis`."""
  def permuted_init(key, shape, dtype=jnp.float32):
    return jnp.take(init(key, shape, dtype), order, axis=axis)
  return permuted_init


def check_made_config(*, num_dims: Any, hidden_sizes: Any, activation: Any,
                      output_init_scale: Any, num_params: Any = None) -> None:
  """Validates MADE's static settings in Python, naming the argument (bools are rejected).

  `num_params` None skips its check (a flow checks the rest before its transformer, which
  sets K, is built).

  Raises:
    ValueError: `num_dims` or `num_params` not a positive int, `hidden_sizes` not a
      sequence of positive ints, `activation` not in `ACTIVATIONS`, `output_init_scale`
      not a finite number >= 0.
  """
  _checks.check_positive_int("num_dims", num_dims)
  if num_params is not None:
    _checks.check_positive_int("num_params", num_params)
  try:
    sizes = None if isinstance(hidden_sizes, (str, bytes)) else tuple(hidden_sizes)
  except TypeError:
    sizes = None
  if sizes is None or any(isinstance(h, bool) or not isinstance(h, (int, np.integer)) or h < 1
                          for h in sizes):
    raise ValueError(f"hidden_sizes must be a sequence of positive ints, got {hidden_sizes!r}")
  if not isinstance(activation, str) or activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {', '.join(map(repr, ACTIVATIONS))}; "
                     f"got {activation!r}")
  if (isinstance(output_init_scale, bool)
      or not isinstance(output_init_scale, (int, float, np.integer, np.floating))
      or not math.isfinite(output_init_scale) or output_init_scale < 0):
    raise ValueError(f"output_init_scale must be a finite number >= 0, got "
                     f"{output_init_scale!r}")


def _check_groups(groups: Optional[Sequence[int]], num_params: int) -> tuple[int, ...]:
  if groups is None:
    return (num_params,)
  groups = tuple(groups)
  if (not groups or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1
                        for g in groups) or sum(groups) != num_params):
    raise ValueError(f"param_groups must be positive ints summing to num_params {num_params}, "
                     f"got {groups}")
  return tuple(int(g) for g in groups)


def _grouped_output(h: Array, kernel: Array, bias: Array, ctx: Optional[Array],
                    deg_in: np.ndarray, deg_out: np.ndarray, num_dims: int, num_params: int,
                    groups: tuple[int, ...]) -> Array:
  """The output layer, `[..., D, K]`, with each group of the K outputs a separate array.

  Output column `t * K + j` (dimension t, parameter j) is the same column of `kernel` and
  `bias` whatever the grouping; only the products differ. Each product covers some
  groups over a run of dimensions, its columns ordered by group (`[group a of dims
  lo..hi-1 | group b of dims lo..hi-1 | ...]`), and its output is split by group, so
  every group ends as one `[..., D, size]` array (no strided reads or writes). Where the
  ungrouped layer is one product (one dense run of `_output_blocks`, e.g. D = 2), all
  groups share it. Where it is several runs, groups of at least `_MIN_BLOCKED_PARAMS`
  outputs per dimension share the runs and smaller groups (a tail slope) form one masked
  product of their own: assembling a small group from several runs' outputs costs more
  (kernels, on XLA's CPU backend) than its own product. Both measured with
  `benchmarks/naf_speed.py`'s tail cost.
  """
  d, k, fan_in = num_dims, num_params, kernel.shape[0]
  if len(groups) == 1:
    out = _masked_product(h, kernel, deg_in, deg_out, d, k, last=True) + bias
    out = out if ctx is None else out + ctx
    return out.reshape(out.shape[:-1] + (d, k))
  plan = _output_blocks(deg_in, deg_out, d, k, _OUTPUT_BLOCKS)
  row_order, runs = plan if plan is not None else (np.arange(fan_in), [(0, d, fan_in)])
  if not np.array_equal(row_order, np.arange(fan_in)):  # sorted once, as in _blocked_product
    h, kernel, deg_in = h[..., row_order], kernel[row_order], deg_in[row_order]
  every_dim = [(0, d, fan_in)]  # one masked product over all dimensions
  if sum(n > 0 for _, _, n in runs) <= 1:
    products = [(runs, list(range(len(groups))))]
  else:
    big = [i for i, size in enumerate(groups) if size >= _MIN_BLOCKED_PARAMS]
    small = [i for i, size in enumerate(groups) if size < _MIN_BLOCKED_PARAMS]
    products = [(r, members) for r, members in ((runs, big), (every_dim, small)) if members]
  # One split per array (not a slice per group): reverse mode transposes a split into one
  # concatenation of the groups' gradients, a slice into a padded copy of each.
  cuts = np.cumsum(groups)[:-1]
  kernels = jnp.split(kernel.reshape(fan_in, d, k), cuts, axis=-1)  # each [fan_in, D, size]
  biases = jnp.split(bias.reshape(d, k), cuts, axis=-1)
  contexts = (jnp.split(ctx.reshape(ctx.shape[:-1] + (d, k)), cuts, axis=-1)
              if ctx is not None else [None] * len(groups))
  dim_degrees = deg_out[::k]
  outputs = [[] for _ in groups]
  for product_runs, members in products:
    sizes = [groups[i] for i in members]
    for lo, hi, n in product_runs:
      widths = [(hi - lo) * size for size in sizes]
      if n == 0:  # these dimensions see no hidden unit (e.g. the first one)
        for i, size in zip(members, sizes):
          outputs[i].append(jnp.zeros(h.shape[:-1] + (hi - lo, size), h.dtype))
        continue
      weights = jnp.concatenate([kernels[i][:n, lo:hi].reshape(n, width)
                                 for i, width in zip(members, widths)], axis=-1)
      columns = np.concatenate([np.repeat(dim_degrees[lo:hi], size) for size in sizes])
      mask = _connected(jnp.asarray(deg_in[:n]), jnp.asarray(columns), last=True)
      out = h[..., :n] @ jnp.where(mask, weights, 0.0)
      for i, part, size in zip(members, jnp.split(out, np.cumsum(widths)[:-1], axis=-1),
                               sizes):
        outputs[i].append(part.reshape(part.shape[:-1] + (hi - lo, size)))
  parts = []
  for outs, bias_g, ctx_g in zip(outputs, biases, contexts):
    part = (outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-2)) + bias_g
    parts.append(part if ctx_g is None else part + ctx_g)
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
    param_groups: None, or sizes summing to `num_params` that split the K outputs of each
      dimension into consecutive groups (e.g. `(48, 1)` for a DSF's 48 unit parameters
      and its tail slope). Each group is formed as its own array (see `_grouped_output`),
      read from the same kernel and bias columns, and the groups are concatenated along
      K, so the output and the parameters are those of the ungrouped MADE. Speed only: a
      transformer that slices its pseudo-parameters along these groups then reads, and in
      the backward pass writes, whole arrays instead of a strided part of one [..., D, K]
      array, which XLA's CPU backend pads element by element (`Transformer.pseudo_groups`).
    sort_units: store the last hidden layer's units in the order of their degrees where
      the output layer is split into dense runs (see `__call__`): the same function and
      the same initial draw, without a gather of the output kernel's rows (and a scatter
      of its gradient) in every step. It changes the order of one sum in the backward
      pass, so results differ from `sort_units=False` by float rounding; the BHN
      hypernets keep `False`, so that the chapter-7 tables stay reproducible to the bit.

  The settings are checked at construction (`check_made_config`, and `param_groups`),
  each error naming its attribute.
  """
  num_dims: int
  num_params: int
  hidden_sizes: Sequence[int] = (64, 64)
  ordering: Optional[Sequence[int]] = None
  activation: str = "relu"
  output_init_scale: float = 1e-2
  param_groups: Optional[Sequence[int]] = None
  sort_units: bool = True

  def __post_init__(self):
    # At construction, so that a bad setting never reaches a division by (D - 1) or a
    # reshape by K in the traced call.
    check_made_config(num_dims=self.num_dims, num_params=self.num_params,
                      hidden_sizes=self.hidden_sizes, activation=self.activation,
                      output_init_scale=self.output_init_scale)
    _check_groups(self.param_groups, self.num_params)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, context: Optional[Array] = None) -> Array:
    d, k = self.num_dims, self.num_params
    if x.shape[-1:] != (d,):
      raise ValueError(f"x must have shape [..., {d}], got {x.shape}")
    groups = _check_groups(self.param_groups, k)
    ordering = tuple(range(d)) if self.ordering is None else self.ordering
    # The masks are formed from the small degree vectors inside the compiled step (fused
    # into the weight's use) rather than stored as [fan_in, fan_out] constants.
    degrees = _made_degrees(d, tuple(self.hidden_sizes), k, ordering)
    num_layers = len(degrees) - 1
    # Where the output layer is split into dense runs (`_output_blocks`), those runs read
    # the last hidden layer's units sorted by degree. The units are stored in that order
    # (the last hidden kernel's columns and bias, the output kernel's rows; drawn as in
    # the original order, then permuted), so no step gathers rows of the output kernel
    # (and scatters its gradient back), which on XLA's CPU backend cost more than a
    # third of a D = 64 step. The map is the same function, with the same sums.
    plan = _output_blocks(degrees[-2], degrees[-1], d, k, _OUTPUT_BLOCKS)
    unit_order = None
    if (self.sort_units and self.hidden_sizes and plan is not None
        and not np.array_equal(plan[0], np.arange(plan[0].size))):  # (inputs stay as given)
      unit_order = plan[0]
      degrees[-2] = degrees[-2][unit_order]
    act = ACTIVATIONS[self.activation]
    h = x
    for l, (deg_in, deg_out) in enumerate(zip(degrees[:-1], degrees[1:])):
      last = l == num_layers - 1
      fan_in, fan_out = deg_in.size, deg_out.size
      init = (nn.initializers.variance_scaling(self.output_init_scale ** 2, "fan_in",
                                               "truncated_normal")
              if last and self.output_init_scale > 0 else
              nn.initializers.zeros if last else nn.initializers.lecun_normal())
      # The output bias is also drawn (at the output scale): it alone parameterizes the
      # first dimension's transformer, whose sigmoid units would otherwise stay identical.
      bias_init = (nn.initializers.normal(self.output_init_scale) if last else
                   nn.initializers.zeros)
      context_init = init if last else nn.initializers.lecun_normal()
      if unit_order is not None and l == num_layers - 2:  # stored sorted: its outputs
        init, bias_init, context_init = (_permuted(f, unit_order, axis=-1)
                                         for f in (init, bias_init, context_init))
      elif unit_order is not None and last:  # and the output layer's inputs
        init = _permuted(init, unit_order, axis=0)
      kernel = self.param(f"kernel_{l}", init, (fan_in, fan_out), jnp.float32)
      bias = self.param(f"bias_{l}", bias_init, (fan_out,), jnp.float32)
      # The context feeds the first hidden layer and, directly, the output layer: the
      # first dimension's block sees no hidden unit, only the context.
      ctx = (nn.Dense(fan_out, use_bias=False, name=f"context_{l}",
                      kernel_init=context_init)(context)
             if context is not None and (l == 0 or last) else None)
      if last:
        return _grouped_output(h, kernel, bias, ctx, deg_in, deg_out, d, k, groups)
      h = _masked_product(h, kernel, deg_in, deg_out, d, k, last=False) + bias
      h = act(h if ctx is None else h + ctx)
    raise AssertionError("unreachable: the loop returns at the output layer")
