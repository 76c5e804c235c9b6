"""Random hyperparameter search as one program per width bucket (appendix 11.1.9.1).

The thesis samples 340 configurations per method over

    HiddenDim ∈ [2^7, 2^12], L2 ∈ [1e-4, 1e-2], lr ∈ [10^-4.3, 10^-2.8],
    PenaltyAnnealIters ∈ [50, 250], PenaltyWeight ∈ [1e2, 1e6], Steps ∈ [201, 601],

and counts the configurations that are *satisfactory* (test accuracy > 50 % and train
accuracy > test accuracy, Fig. 11.7).

Learning rate, L2, penalty weight and anneal step are per-restart arrays, so they vmap
freely. Width and step count change shapes or loop lengths, so:

* widths are **bucketed** (`jaxthesis.nn.bucket_width`: the next point of a geometric
  grid, by default two per octave) and each configuration runs in the masked-width MLP
  of its bucket (`jaxthesis.nn.masked_mlp_init`), which trains exactly like the narrow
  network alone;
* step counts are handled by `jaxthesis.sweeps.with_step_limit`: a bucket scans for its
  largest step count and each configuration freezes after its own.

The search task *is* `train.make_domain_task` with the masked-width model passed in, so
the search trains every method exactly as the Colored-MNIST experiment does.
"""
from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, engine
from jaxthesis.nn import bucket_width, group_by_bucket, masked_mlp_apply, masked_mlp_init
from jaxthesis.rex import train
from jaxthesis.rex.train import DomainSampler, EvalSampler
from jaxthesis.typing import Array, PRNGKey

__all__ = ["SearchSpace", "THESIS_SPACE", "SearchHParams", "sample_configs", "search_hparams",
           "masked_model", "make_search_task", "satisfactory",
           # re-exported from jaxthesis.nn, where width bucketing lives
           "bucket_width", "group_by_bucket"]


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
  """Per-restart tunables of `make_search_task` (scalars in a run, `[R]` at the Runner):
  the fields of `train.DomainHParams` plus the configuration's width."""
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


def search_hparams(configs: dict, *, groupdro_eta: float = 0.01,
                   penalty_scale: float = 1.0) -> SearchHParams:
  """`SearchHParams` `[R]` from `sample_configs` output (or any dict of `[R]` arrays).

  `penalty_scale` multiplies the penalty weights (e.g. `1/m` to read them as the β of
  Eq. 5.8 for V-REx).
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


def masked_model(input_dim: int, width: int, width_limit: int,
                 depth: int = 2) -> train.DomainModel:
  """The masked-width MLP of one bucket as a `train.DomainModel` reading `hparams.hidden`."""
  for name, value in (("width", width), ("width_limit", width_limit), ("input_dim", input_dim),
                      ("depth", depth)):
    _checks.check_positive_int(name, value)
  if width > width_limit:
    raise ValueError(f"width {width} exceeds width_limit {width_limit}")
  return train.DomainModel(
      init=lambda key, hp: masked_mlp_init(key, int(input_dim), int(width), hp.hidden,
                                           width_limit=int(width_limit), depth=int(depth)),
      apply=lambda params, x, hp: masked_mlp_apply(params, x, hp.hidden))


def make_search_task(method: str, *, width: int, width_limit: int, input_dim: int,
                     num_domains: int, sample_train: DomainSampler, sample_eval: EvalSampler,
                     population: bool, depth: int = 2, input_transform=None,
                     reset_optimizer_at_anneal: bool = False,
                     irm_estimator: str = "biased") -> engine.Task:
  """`train.make_domain_task` with the width a per-restart hparam (`SearchHParams`).

  The task is the domain task itself with `masked_model(input_dim, width, width_limit,
  depth)` as its model, so objective, schedule, optimizer reset, IRMv1 estimator, L2
  term and metrics are those of `train`. Hparams are `SearchHParams` with
  `hidden <= width`. Wrap it in `sweeps.with_step_limit` for per-configuration step
  counts and `sweeps.index_data` for per-restart datasets.

  Args:
    method: one of `train.METHODS`.
    width: the bucket's padded width (static).
    width_limit: largest width of the whole search (static; see `masked_mlp_init`).
    input_dim, num_domains, sample_train, sample_eval, population, depth,
    input_transform, reset_optimizer_at_anneal, irm_estimator: as in
    `train.make_domain_task`.
  """
  return train.make_domain_task(
      method, num_domains=num_domains, sample_train=sample_train, sample_eval=sample_eval,
      population=population, model=masked_model(input_dim, width, width_limit, depth),
      reset_optimizer_at_anneal=reset_optimizer_at_anneal, irm_estimator=irm_estimator,
      input_transform=input_transform)


def satisfactory(train_acc, test_acc, chance: float = 0.5) -> np.ndarray:
  """Fig. 11.7's criterion: better than chance on test and train accuracy above test.

  Test accuracy above train accuracy usually means a degenerate rule such as "not
  colour", which the thesis does not count as success.
  """
  train_acc, test_acc = np.asarray(train_acc), np.asarray(test_acc)
  if train_acc.shape != test_acc.shape:
    raise ValueError(f"test_acc must have the shape of train_acc {train_acc.shape}, "
                     f"got {test_acc.shape}")
  return (test_acc > chance) & (train_acc > test_acc)
