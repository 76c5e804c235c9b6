"""Putting experiment axes on the engine's restart axis, for any `engine.Task`.

The engine (`jaxthesis.engine`) vmaps one key and one hyperparameter pytree per restart,
and shares one data pytree between restarts. Two task combinators widen what a restart
may vary, so that a whole sweep stays one compiled program:

* `index_data`: the data is a stack of datasets `[D, ...]` (shift levels, held-out
  splits, left-out domains) and each restart picks one with an integer `data_index`;
* `with_step_limit`: each restart stops updating after its own number of steps, so
  configurations with different step counts (e.g. the random search of appendix
  11.1.9.1) share one scan of `max(num_steps)` steps and end exactly as if run alone.

Nothing here knows about a particular training problem.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, engine
from jaxthesis.typing import Array, PyTree


class IndexedHParams(NamedTuple):
  """Hyperparameters of the wrapped task plus the index of the restart's dataset."""
  hparams: PyTree
  data_index: Array  # i32[] inside a run, i32[R] at the Runner


class StepLimitedHParams(NamedTuple):
  """Hyperparameters of the wrapped task plus the restart's own number of updates."""
  hparams: PyTree
  num_steps: Array  # i32[] inside a run, i32[R] at the Runner


def _check_task(task) -> None:
  if not isinstance(task, engine.Task):
    raise TypeError(f"task must be a jaxthesis.engine.Task, got {type(task).__name__}")


def _check_restart_axis(hparams: PyTree, name: str, size: int) -> None:
  """Every hparams leaf has the leading restart axis of the `[R]` array `name`."""
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(hparams)}
  if None in sizes:
    raise ValueError(f"hparams: every leaf needs the leading restart axis of {name} ({size}); "
                     "found a scalar leaf")
  if sizes and sizes != {size}:
    raise ValueError(f"hparams restart axis {sorted(sizes)} differs from {name}'s {size}")


def stack_data(datasets: Sequence[PyTree]) -> PyTree:
  """Stacks datasets of one structure and shape along a new leading axis `[D, ...]`.

  Args:
    datasets: non-empty sequence of pytrees with identical structure and leaf shapes.

  Returns:
    The stacked pytree, to be indexed by `IndexedHParams.data_index`.
  """
  if isinstance(datasets, (str, bytes)) or not isinstance(datasets, Sequence) or not datasets:
    raise ValueError(f"datasets must be a non-empty sequence of pytrees, got {type(datasets)}")
  first = jax.tree_util.tree_structure(datasets[0])
  shapes0 = [np.shape(x) for x in jax.tree_util.tree_leaves(datasets[0])]
  for i, d in enumerate(datasets[1:], 1):
    if jax.tree_util.tree_structure(d) != first:
      raise ValueError(f"datasets[{i}] has another pytree structure than datasets[0]")
    shapes = [np.shape(x) for x in jax.tree_util.tree_leaves(d)]
    if shapes != shapes0:
      raise ValueError(f"datasets[{i}] leaf shapes {shapes} differ from datasets[0] {shapes0}; "
                       "pad them to a common size first")
  return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *datasets)


def select_data(data: PyTree, index: Array) -> PyTree:
  """`data[index]` on every leaf (a gather under vmap; `index` may be traced)."""
  return jax.tree_util.tree_map(lambda a: jnp.take(a, index, axis=0), data)


def indexed_hparams(hparams: PyTree, data_index, num_datasets: int) -> IndexedHParams:
  """Validates `data_index` (ints in `[0, num_datasets)`, shape `[R]`) and pairs it up."""
  index = np.asarray(data_index)
  if index.ndim != 1 or not np.issubdtype(index.dtype, np.integer):
    raise ValueError(f"data_index must be a 1-D integer array [R], got {index.dtype}{index.shape}")
  _checks.check_positive_int("num_datasets", num_datasets)  # bools are not counts
  if index.size and (index.min() < 0 or index.max() >= num_datasets):
    raise ValueError(f"data_index must lie in [0, {num_datasets}), got range "
                     f"[{index.min()}, {index.max()}]")
  _check_restart_axis(hparams, "data_index", index.shape[0])
  return IndexedHParams(hparams=hparams, data_index=jnp.asarray(index, jnp.int32))


def index_data(task: engine.Task) -> engine.Task:
  """Wraps `task` so that each restart trains on `data[hparams.data_index]`.

  The wrapped task takes `IndexedHParams` and a stacked data pytree `[D, ...]`
  (`stack_data`); restarts with equal index see exactly the data the unwrapped task
  would see if run alone on that dataset.
  """
  _check_task(task)

  def init(key, hp: IndexedHParams, data):
    return task.init(key, hp.hparams, select_data(data, hp.data_index))

  def step(state, t, key, hp: IndexedHParams, data):
    return task.step(state, t, key, hp.hparams, select_data(data, hp.data_index))

  evaluate = None
  if task.evaluate is not None:
    def evaluate(state, hp: IndexedHParams, data):
      return task.evaluate(state, hp.hparams, select_data(data, hp.data_index))

  return engine.Task(init=init, step=step, evaluate=evaluate)


def step_limited_hparams(hparams: PyTree, num_steps) -> StepLimitedHParams:
  """Validates `num_steps` (positive ints, shape `[R]`) and pairs it with `hparams`."""
  steps = np.asarray(num_steps)
  if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer):
    raise ValueError(f"num_steps must be a 1-D integer array [R], got {steps.dtype}{steps.shape}")
  if steps.size and steps.min() < 1:
    raise ValueError(f"num_steps must be >= 1, got minimum {steps.min()}")
  _check_restart_axis(hparams, "num_steps", steps.shape[0])
  return StepLimitedHParams(hparams=hparams, num_steps=jnp.asarray(steps, jnp.int32))


def with_step_limit(task: engine.Task) -> engine.Task:
  """Wraps `task` so that restart r applies only its first `num_steps[r]` updates.

  Run the `Runner` for `max(num_steps)` steps: after its own limit a restart's state is
  frozen (the update is computed, for the vmapped program's sake, and discarded), so
  its final state and evaluations equal those of a run of exactly `num_steps[r]` steps.
  Losses reported after the limit are those of the frozen state; the metric `active`
  says which steps were applied.
  """
  _check_task(task)

  def init(key, hp: StepLimitedHParams, data):
    return task.init(key, hp.hparams, data)

  def step(state, t, key, hp: StepLimitedHParams, data):
    new_state, losses, metrics = task.step(state, t, key, hp.hparams, data)
    active = t < hp.num_steps
    state = jax.tree_util.tree_map(lambda new, old: jnp.where(active, new, old),
                                   new_state, state)
    return state, losses, {**metrics, "active": active.astype(jnp.float32)}

  evaluate = None
  if task.evaluate is not None:
    def evaluate(state, hp: StepLimitedHParams, data):
      return task.evaluate(state, hp.hparams, data)

  return engine.Task(init=init, step=step, evaluate=evaluate)
