"""Random hyperparameter search as one program per width bucket (appendix 11.1.9.1).

The thesis samples 340 configurations per method over

    HiddenDim ∈ [2^7, 2^12], L2 ∈ [1e-4, 1e-2], lr ∈ [10^-4.3, 10^-2.8],
    PenaltyAnnealIters ∈ [50, 250], PenaltyWeight ∈ [1e2, 1e6], Steps ∈ [201, 601],

and counts the configurations that are *satisfactory* (test accuracy > 50 % and train
accuracy > test accuracy, Fig 11.7).

Learning rate, L2, penalty weight and anneal step are per-restart arrays, so they vmap
freely. Width and step count change shapes or loop lengths, so:

* widths are **bucketed**: each configuration runs in a network padded to its bucket's
  width (`bucket_width`: the next point of a geometric grid, by default two per octave)
  with the surplus hidden units masked. Masked units start at zero, output zero and get
  zero gradient, so they stay zero under Adam and L2; with the width-consistent
  initialization of `masked_mlp_init` (unit j's weights do not depend on how many units
  there are), a configuration trained in a bucket is exactly the narrow network trained
  alone;
* step counts are handled by `sweeps.with_step_limit`: a bucket scans for its largest
  step count and each configuration freezes after its own.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import engine
from jaxthesis.rex import objectives as obj
from jaxthesis.rex import sweeps
from jaxthesis.rex.train import METHODS, DomainSampler, EvalSampler, objective_terms
from jaxthesis.typing import Array, Params, PRNGKey


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Ranges of the random search (appendix 11.1.9.1); exponents are log10 unless named."""
  log2_hidden: tuple[float, float] = (7.0, 12.0)
  log10_l2_weight: tuple[float, float] = (-4.0, -2.0)
  log10_learning_rate: tuple[float, float] = (-4.3, -2.8)
  penalty_anneal_iters: tuple[int, int] = (50, 250)
  log10_penalty_weight: tuple[float, float] = (2.0, 6.0)
  steps: tuple[int, int] = (201, 601)

  def validate(self) -> None:
    for field in dataclasses.fields(self):
      low, high = getattr(self, field.name)
      if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"{field.name} must be a finite range (low <= high), got {(low, high)}")
    if self.log2_hidden[0] < 0:
      raise ValueError(f"log2_hidden must be >= 0 (width >= 1), got {self.log2_hidden}")
    if self.steps[0] < 1 or self.penalty_anneal_iters[0] < 0:
      raise ValueError(f"steps must be >= 1 and penalty_anneal_iters >= 0, got "
                       f"{self.steps} and {self.penalty_anneal_iters}")

  @property
  def max_hidden(self) -> int:
    return int(round(2 ** self.log2_hidden[1]))


THESIS_SPACE = SearchSpace()


class SearchHParams(NamedTuple):
  """Per-restart tunables of `make_search_task` (scalars in a run, `[R]` at the Runner)."""
  learning_rate: Array         # f32
  l2_weight: Array             # f32
  penalty_weight: Array        # f32
  penalty_anneal_iters: Array  # f32
  groupdro_eta: Array          # f32
  hidden: Array                # i32: the configuration's true width (<= the bucket width)


def sample_configs(key: PRNGKey, num: int, space: SearchSpace = THESIS_SPACE) -> dict[str, np.ndarray]:
  """Draws `num` configurations uniformly over `space` (log scales where named).

  Returns:
    `{hidden i32, l2_weight, learning_rate, penalty_anneal_iters i32, penalty_weight,
    steps i32}`, each `[num]`.
  """
  if not isinstance(num, (int, np.integer)) or num < 1:
    raise ValueError(f"num must be a positive int, got {num!r}")
  if not isinstance(space, SearchSpace):
    raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
  space.validate()
  keys = jax.random.split(key, 6)
  uniform = lambda k, lo_hi: np.asarray(jax.random.uniform(k, (num,), jnp.float32, *lo_hi))
  integer = lambda k, lo_hi: np.asarray(jax.random.randint(k, (num,), lo_hi[0], lo_hi[1] + 1))
  return {
      "hidden": np.round(2.0 ** uniform(keys[0], space.log2_hidden)).astype(np.int32),
      "l2_weight": 10.0 ** uniform(keys[1], space.log10_l2_weight),
      "learning_rate": 10.0 ** uniform(keys[2], space.log10_learning_rate),
      "penalty_anneal_iters": integer(keys[3], space.penalty_anneal_iters).astype(np.int32),
      "penalty_weight": 10.0 ** uniform(keys[4], space.log10_penalty_weight),
      "steps": integer(keys[5], space.steps).astype(np.int32),
  }


def bucket_width(hidden, per_octave: int = 2) -> np.ndarray:
  """The padded width of each configuration: the smallest `ceil(2^(j/per_octave)) >= h`.

  With `per_octave = 2` the padding wastes at most a factor √2 in width (2 in the
  hidden-to-hidden layer's cost).
  """
  h = np.asarray(hidden)
  if not np.issubdtype(h.dtype, np.integer) or np.any(h < 1):
    raise ValueError(f"hidden must hold positive ints, got {h}")
  if not isinstance(per_octave, int) or per_octave < 1:
    raise ValueError(f"per_octave must be a positive int, got {per_octave!r}")
  j = np.ceil(per_octave * np.log2(h) - 1e-9)
  width = np.ceil(2.0 ** (j / per_octave)).astype(np.int64)
  width = np.where(width < h, np.ceil(2.0 ** ((j + 1) / per_octave)), width)
  return width.astype(np.int32)


def group_by_bucket(hidden, per_octave: int = 2) -> dict[int, np.ndarray]:
  """`{bucket width: indices of the configurations in it}`, widths ascending."""
  widths = bucket_width(hidden, per_octave)
  return {int(w): np.flatnonzero(widths == w) for w in np.unique(widths)}


# ------------------------------------------------------------------ masked-width MLP


def _column_uniform(key: PRNGKey, fan_in_pad: int, fan_out_pad: int, draw_length: int) -> Array:
  """`U(-1, 1)[fan_in_pad, fan_out_pad]` whose column j depends only on (key, j)."""
  cols = jax.vmap(lambda j: jax.random.uniform(jax.random.fold_in(key, j), (draw_length,),
                                               jnp.float32, -1.0, 1.0))(jnp.arange(fan_out_pad))
  return cols[:, :fan_in_pad].T


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
    hidden: true width h <= width (may be traced).
    width_limit: the largest width any configuration may use (static; fixes draw length).
    depth: number of hidden layers.

  Returns:
    `[(W f32[fan_in, fan_out], b f32[fan_out]), ...]`, depth + 1 layers.
  """
  for name, value in (("input_dim", input_dim), ("width", width), ("width_limit", width_limit),
                      ("depth", depth)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if width > width_limit:
    raise ValueError(f"width {width} exceeds width_limit {width_limit}")
  if _is_concrete_int(hidden) and not 1 <= int(hidden) <= width:
    raise ValueError(f"hidden must lie in [1, width={width}], got {int(hidden)}")
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
  """Logits `f32[...]` of the padded MLP with hidden units `>= hidden` masked to zero."""
  width = params[0][0].shape[1]
  unit_mask = (jnp.arange(width) < hidden).astype(x.dtype)
  for w, b in params[:-1]:
    x = jax.nn.relu(x @ w + b) * unit_mask
  w, b = params[-1]
  return (x @ w + b)[..., 0]


def _is_concrete_int(x) -> bool:
  return not isinstance(x, jax.core.Tracer) and np.ndim(x) == 0


def _accuracy(logits: Array, labels: Array, mask: Optional[Array]) -> Array:
  return obj.masked_mean(((logits > 0) == (labels > 0.5)).astype(jnp.float32), mask)


class SearchState(NamedTuple):
  params: Params
  opt_state: optax.OptState
  dro: obj.GroupDROState
  data_key: Array  # the restart's key for fixed data draws


def search_hparams(configs: dict, *, groupdro_eta: float = 0.01,
                   penalty_scale: float = 1.0) -> SearchHParams:
  """`SearchHParams` `[R]` from `sample_configs` output (or any dict of `[R]` arrays).

  `penalty_scale` multiplies the penalty weights (e.g. `1/m` to read them as the β of
  eq 5.8 for V-REx).
  """
  needed = ("hidden", "l2_weight", "learning_rate", "penalty_anneal_iters", "penalty_weight")
  missing = [k for k in needed if k not in configs]
  if missing:
    raise ValueError(f"configs lacks {missing}")
  sizes = {np.shape(configs[k]) for k in needed}
  if len(sizes) != 1 or len(next(iter(sizes))) != 1:
    raise ValueError(f"configs entries must all be 1-D of one length, got shapes {sizes}")
  r = np.shape(configs["hidden"])[0]
  f32 = lambda v: jnp.asarray(np.broadcast_to(np.asarray(v, np.float32), (r,)))
  if np.any(np.asarray(configs["learning_rate"]) <= 0):
    raise ValueError("configs['learning_rate'] must be > 0")
  return SearchHParams(
      learning_rate=f32(configs["learning_rate"]), l2_weight=f32(configs["l2_weight"]),
      penalty_weight=f32(np.asarray(configs["penalty_weight"]) * penalty_scale),
      penalty_anneal_iters=f32(configs["penalty_anneal_iters"]),
      groupdro_eta=f32(groupdro_eta),
      hidden=jnp.asarray(np.asarray(configs["hidden"]), jnp.int32))


def make_search_task(method: str, *, width: int, width_limit: int, input_dim: int,
                     num_domains: int, sample_train: DomainSampler, sample_eval: EvalSampler,
                     population: bool, depth: int = 2,
                     input_transform=None) -> engine.Task:
  """An engine `Task` like `train.make_domain_task` whose width is a per-restart hparam.

  The objective is that of `jaxthesis.rex.train` (`(base + l2‖θ‖² + w(t)·penalty) /
  max(w(t), 1)`, Adam); hparams are `SearchHParams` with `hidden <= width`. Wrap it in
  `sweeps.with_step_limit` for per-configuration step counts and `sweeps.index_data`
  for per-restart datasets.

  Args:
    method: one of `train.METHODS`.
    width: the bucket's padded width (static).
    width_limit: largest width of the whole search (static; see `masked_mlp_init`).
    input_dim, num_domains, sample_train, sample_eval, population, depth,
    input_transform: as in `train.make_domain_task`.
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
  for name, value in (("width", width), ("width_limit", width_limit), ("input_dim", input_dim),
                      ("num_domains", num_domains), ("depth", depth)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if width > width_limit:
    raise ValueError(f"width {width} exceeds width_limit {width_limit}")
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  transform = input_transform or (lambda x: x)

  def init(key, hp: SearchHParams, data) -> SearchState:
    model_key, data_key = jax.random.split(key)
    params = masked_mlp_init(model_key, input_dim, width, hp.hidden, width_limit=width_limit,
                             depth=depth)
    opt_state = optimizer.init(params)
    opt_state.hyperparams["learning_rate"] = hp.learning_rate
    return SearchState(params=params, opt_state=opt_state, dro=obj.groupdro_init(num_domains),
                       data_key=data_key)

  def step(state: SearchState, t, key, hp: SearchHParams, data):
    x, y, mask = sample_train(key if population else state.data_key, data)
    x = transform(x)
    sizes = jnp.sum(mask, axis=1)
    weight = obj.penalty_weight_at(t, hp.penalty_weight, hp.penalty_anneal_iters)

    def loss_fn(params):
      logits = masked_mlp_apply(params, x, hp.hidden)  # [m, n]
      risks = obj.domain_risks(obj.binary_cross_entropy, logits, y, mask)
      irm = (jax.vmap(lambda z, l, k: obj.irmv1_penalty(obj.binary_cross_entropy, z, l, k))(
          logits, y, mask) if method == "irm" else None)
      base, penalty, dro = objective_terms(method, risks, sizes, irm, state.dro, hp.groupdro_eta)
      l2 = hp.l2_weight * sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))
      loss = obj.penalized_loss(base, penalty, weight, extra=l2)
      acc = jax.vmap(_accuracy)(logits, y, mask)
      return loss, (base, penalty, l2, risks, acc, dro)

    (loss, (base, penalty, l2, risks, acc, dro)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    losses = {"loss": loss, "base": base, "penalty": penalty, "l2": l2}
    metrics = {"train_acc": jnp.sum(acc * sizes) / jnp.sum(sizes), "train_nll": jnp.mean(risks)}
    return state._replace(params=params, opt_state=opt_state, dro=dro), losses, metrics

  def evaluate(state: SearchState, hp: SearchHParams, data):
    out = {}
    for name, (x, y, *mask) in sample_eval(state.data_key, data).items():
      mask = mask[0] if mask else None
      logits = masked_mlp_apply(state.params, transform(x), hp.hidden)
      out[f"{name}_acc"] = _accuracy(logits, y, mask)
    return out

  return engine.Task(init=init, step=step, evaluate=evaluate)


def satisfactory(train_acc, test_acc, chance: float = 0.5) -> np.ndarray:
  """Fig 11.7's criterion: better than chance on test and train accuracy above test.

  Test accuracy above train accuracy usually means a degenerate rule such as "not
  colour", which the thesis does not count as success.
  """
  train_acc, test_acc = np.asarray(train_acc), np.asarray(test_acc)
  if train_acc.shape != test_acc.shape:
    raise ValueError(f"test_acc must have the shape of train_acc {train_acc.shape}, "
                     f"got {test_acc.shape}")
  return (test_acc > chance) & (train_acc > test_acc)
