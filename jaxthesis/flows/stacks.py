"""Stacks of autoregressive layers as one `Flow`: an init/bijector pair over a params pytree.

`autoregressive_flow(...)` returns `Flow(init, bijector, ...)`: `init(key)` builds the
parameter pytree (vmap it over keys for seeds), `bijector(params, context=None)` builds the
`distrax.Chain` of MADE-conditioned autoregressive layers with permutations between them
and an optional elementwise affine at the data end, and `distribution(params)` wraps it in
`distrax.Transformed` over a standard normal base.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.flows.bijectors import DIRECTIONS, AutoregressiveBijector, Permute
from jaxthesis.flows.made import MADE, ORDERINGS, check_made_config, make_ordering
from jaxthesis.flows.transformers import TRANSFORMERS, Transformer, make_transformer
from jaxthesis.typing import Array, Params, PRNGKey

PERMUTATIONS = ("reverse", "random", "none")


class Flow(NamedTuple):
  """A normalizing flow as pure functions.

  Attributes:
    init: `(key) -> params`.
    bijector: `(params, context=None) -> distrax.Bijector` (forward: noise -> data).
    distribution: `(params, context=None) -> distrax.Transformed` over N(0, I_D).
    num_dims: D.
    direction: "maf" or "iaf" (which distrax direction is the parallel one).
    transformer: the `Transformer` used by every layer.
  """
  init: Callable[[PRNGKey], Params]
  bijector: Callable[..., distrax.Bijector]
  distribution: Callable[..., distrax.Distribution]
  num_dims: int
  direction: str
  transformer: Transformer


def standard_normal(num_dims: int) -> distrax.Distribution:
  """N(0, I_D) as a distrax distribution with event shape [D]."""
  return distrax.MultivariateNormalDiag(jnp.zeros(num_dims), jnp.ones(num_dims))


def autoregressive_flow(num_dims: int, transformer: str | Transformer = "dsf", *,
                        num_layers: int = 1, hidden_sizes: Sequence[int] = (64, 64),
                        transformer_kwargs: Optional[Mapping[str, Any]] = None,
                        direction: str = "maf", ordering: str = "natural",
                        permutation: str = "reverse", final_affine: bool = False,
                        context_size: Optional[int] = None, activation: str = "relu",
                        output_init_scale: float = 1e-2,
                        key: Optional[PRNGKey] = None) -> Flow:
  """A stack of autoregressive layers (MAF / IAF / NAF; chapter 9 of the thesis).

  Layer i is `AutoregressiveBijector(MADE, transformer)`; between layers the dimensions
  are permuted (reversed by default, as for the 6-layer affine flows of Section 9.6.1).

  Args:
    num_dims: D, the event size.
    transformer: a registry name ("affine", "iaf_gate", "dsf", "ddsf", "ddsf_cwn") or a
      `Transformer`.
    num_layers: number of autoregressive layers.
    hidden_sizes: MADE hidden widths.
    transformer_kwargs: keyword arguments for the named transformer (e.g.
      `{"hidden_units": 16}`).
    direction: "maf" (parallel density, sequential sampling) or "iaf" (parallel sampling).
    ordering: MADE ordering of the first layer ("natural", "reversed", "random").
    permutation: between layers: "reverse", "random" (needs `key`) or "none".
    final_affine: add a learned elementwise affine `y = shift + exp(log_scale) x` at the
      data end (starts as the identity); a bool.
    context_size: size C of an optional conditioning input; `bijector(params, context)`
      then requires `context` [..., C].
    activation: MADE activation, one of `made.ACTIVATIONS`.
    output_init_scale: scale of MADE's output kernel at init (near-identity start), a
      finite number >= 0.
    key: PRNG key for random orderings / permutations (resolved now, statically).

  Returns:
    A `Flow`.
  """
  _checks.check_positive_int("num_layers", num_layers)
  # num_dims, hidden_sizes, activation and output_init_scale: as MADE checks them (bools
  # are no counts), here at construction, before the transformer is built.
  check_made_config(num_dims=num_dims, hidden_sizes=hidden_sizes, activation=activation,
                    output_init_scale=output_init_scale)
  hidden_sizes = tuple(hidden_sizes)
  _checks.check_choice("direction", direction, DIRECTIONS)
  _checks.check_choice("ordering", ordering, ORDERINGS)
  _checks.check_choice("permutation", permutation, PERMUTATIONS)
  if not isinstance(final_affine, (bool, np.bool_)):
    raise TypeError(f"final_affine must be a bool, got {type(final_affine).__name__} "
                    f"{final_affine!r}")
  if context_size is not None and (isinstance(context_size, bool)
                                   or not isinstance(context_size, (int, np.integer))
                                   or context_size < 1):
    raise ValueError(f"context_size must be a positive int or None, got {context_size!r}")
  if (ordering == "random" or permutation == "random") and key is None:
    raise ValueError("key is required for a random ordering or permutation")
  if isinstance(transformer, str):
    transformer = make_transformer(transformer, **dict(transformer_kwargs or {}))
  elif not isinstance(transformer, Transformer):
    raise TypeError(f"transformer must be a name ({', '.join(TRANSFORMERS)}) or a "
                    f"Transformer, got {type(transformer).__name__}")
  elif transformer_kwargs:
    raise ValueError("transformer_kwargs only apply to a transformer given by name")

  num_dims, num_layers = int(num_dims), int(num_layers)
  order_key, perm_key = jax.random.split(key) if key is not None else (None, None)
  made = MADE(num_dims=num_dims, num_params=transformer.num_pseudo_params,
              hidden_sizes=hidden_sizes, ordering=make_ordering(ordering, num_dims, order_key),
              activation=activation, output_init_scale=output_init_scale,
              param_groups=transformer.pseudo_groups)
  if permutation == "reverse":
    perms = [tuple(range(num_dims - 1, -1, -1))] * (num_layers - 1)
  elif permutation == "random":
    perms = [make_ordering("random", num_dims, k)
             for k in jax.random.split(perm_key, max(num_layers - 1, 1))][:num_layers - 1]
  else:
    perms = [None] * (num_layers - 1)

  def conditioner(params, x, context):
    return made.apply(params, x, context)

  @jax.jit  # one compilation, rather than one per op of every layer's init run eagerly
  def init(key: PRNGKey) -> Params:
    keys = jax.random.split(key, num_layers)
    x = jnp.zeros((num_dims,))
    context = None if context_size is None else jnp.zeros((context_size,))
    layers = []
    for k in keys:
      made_key, tr_key = jax.random.split(k)
      layers.append({"made": made.init(made_key, x, context),
                     "transformer": transformer.init(tr_key)})
    params = {"layers": layers}
    if final_affine:
      params["affine"] = {"shift": jnp.zeros(num_dims), "log_scale": jnp.zeros(num_dims)}
    return params

  def bijector(params: Params, context: Optional[Array] = None) -> distrax.Bijector:
    if context_size is None and context is not None:
      raise ValueError("context was given but the flow was built with context_size=None")
    if context_size is not None:
      if context is None:
        raise ValueError(f"context [..., {context_size}] is required by this flow")
      _checks.check_floating("context", context)
      if np.shape(context)[-1:] != (context_size,):
        raise ValueError(f"context must have shape [..., {context_size}], "
                         f"got {np.shape(context)}")
    if not isinstance(params, Mapping) or "layers" not in params:
      raise ValueError("params must be the pytree returned by this flow's init")
    if len(params["layers"]) != num_layers:
      raise ValueError(f"params holds {len(params['layers'])} layers, the flow has "
                       f"{num_layers}")
    if final_affine and "affine" not in params:
      raise ValueError("params lacks the 'affine' entry of final_affine=True")
    forward_order = []  # noise -> data
    for i, layer in enumerate(params["layers"]):
      if i > 0 and perms[i - 1] is not None:
        forward_order.append(Permute(perms[i - 1]))
      forward_order.append(AutoregressiveBijector(
          conditioner, layer["made"], transformer, layer["transformer"], num_dims,
          direction=direction, context=context))
    if final_affine:
      affine = params["affine"]
      forward_order.append(distrax.Block(
          distrax.ScalarAffine(shift=affine["shift"], log_scale=affine["log_scale"]), 1))
    if len(forward_order) == 1:
      return forward_order[0]
    return distrax.Chain(forward_order[::-1])

  def distribution(params: Params, context: Optional[Array] = None) -> distrax.Distribution:
    return distrax.Transformed(standard_normal(num_dims), bijector(params, context))

  return Flow(init, bijector, distribution, num_dims, direction, transformer)
