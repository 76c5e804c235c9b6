"""The compiled training engine shared by every experiment.

A training problem is a `Task`: pure functions `init`, `step` and (optionally)
`evaluate` over one run. The `Runner` compiles them into one program that

* maps a *restart axis*: one PRNG key and one hyperparameter vector per restart, so
  seeds, restarts and hyperparameter sweeps are a single compiled computation. How the
  restarts are laid out in that program is `restart_axis`: ``"vmap"`` batches them (one
  batched matrix product per layer), ``"map"`` runs them one after another inside the
  compiled step with `lax.map` (plain matrix products: on XLA:CPU a batched dot can run
  below the rate of its GEMMs), ``"auto"`` (the default) picks by backend
  (`restart_axis_for`); the results are the same up to float rounding;
* runs the steps in `lax.scan`, in fixed-size chunks (one compilation; steps past the
  end are skipped with `lax.cond`), evaluating `evaluate` every `eval_every` steps
  inside the scan and returning every metric as an array;
* shards the work over a 2-D device `Mesh` with axes ``("restarts", "data")``
  (`training_mesh`): the restart axis of the state over ``"restarts"``, and, with
  ``data_shards > 1``, the batch axis of every data array over ``"data"``. Only the
  inputs' shardings are set; `jax.jit` partitions the step and XLA inserts the reductions
  of the data-parallel gradients (no hand-written collectives). The default,
  ``data_shards=1``, replicates the data and spreads restarts over as many devices as
  divide them;
* reports progress between chunks, stops with an error naming the step, the loss term
  and the restart when a loss goes non-finite, and checkpoints with orbax after each
  chunk so that a killed run resumes where it stopped and ends with the same result.

Per-step randomness is `fold_in(restart_key, step)`, so results do not depend on the
chunking or on resumption (nor, with JAX's partitionable threefry, on the sharding).
`init` gets the restart key itself. Under the partitionable threefry, `split(key)` equals
`[fold_in(key, 0), fold_in(key, 1)]`, so an `init` that splits the restart key shares its
keys with steps 0 and 1: a new Task should derive its init keys as
`fold_in(key, 2**32 - 1 - i)`, which no step reaches. The built-in tasks (rex, bhn,
memorization, naf) still split, a known overlap kept until their published figures are
rerun, since changing any key changes every result.

Multi-host: run the same program on every host after
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` (on
Cloud TPU and SLURM clusters it needs no arguments). `jax.devices()` then lists every
host's devices, `training_mesh` spans them all, each host passes the same full `keys`,
`hparams` and `data` (every host builds its own shards from them), and the returned
history is gathered onto every host. The orbax checkpoints are written collectively.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxthesis import _checks, _runtime
from jaxthesis.typing import Array, PRNGKey, PyTree

# Importing jaxthesis (which imports the engine) sets the allocator for XLA:CPU's
# per-call temporaries; see jaxthesis/_runtime.py (JAXTHESIS_MALLOC=default opts out).
_runtime.configure_process()

InitFn = Callable[[PRNGKey, PyTree, PyTree], PyTree]
StepFn = Callable[[PyTree, Array, PRNGKey, PyTree, PyTree],
                  tuple[PyTree, dict[str, Array], dict[str, Array]]]
EvalFn = Callable[[PyTree, PyTree, PyTree], dict[str, Array]]


class _TaskFields(NamedTuple):
  init: InitFn
  step: StepFn
  evaluate: Optional[EvalFn] = None


class CheckpointMismatchError(ValueError):
  """A checkpoint directory holds a run with another configuration than the one asked for."""


class Task(_TaskFields):
  """One training run as pure functions; the Runner vmaps them over restarts.

  Attributes:
    init: `(key, hparams, data) -> state`.
    step: `(state, step, key, hparams, data) -> (state, losses, metrics)`: one update.
      `losses` maps each loss term (including the total) to a scalar; they are checked
      for finiteness. `metrics` maps names to scalars recorded every step.
    evaluate: optional `(state, hparams, data) -> {name: scalar}`, run every
      `eval_every` steps (before that step's update) and once after the last step.

  Each field is checked to be callable when the Task is built (TypeError naming it).
  """
  __slots__ = ()

  def __new__(cls, *args, **kwargs):
    task = super().__new__(cls, *args, **kwargs)
    _check_task_fields(task)
    return task


def _check_task_fields(task: "Task") -> None:
  _checks.check_callable("task.init", task.init)
  _checks.check_callable("task.step", task.step)
  _checks.check_callable("task.evaluate", task.evaluate, optional=True)


class History(NamedTuple):
  """Everything a run recorded, as host numpy arrays with the restart axis first."""
  losses: dict[str, np.ndarray]   # each [R, T]
  metrics: dict[str, np.ndarray]  # each [R, T]
  eval_steps: np.ndarray          # [E]: the step before which each evaluation ran (T = final)
  evals: dict[str, np.ndarray]    # each [R, E]


class RunResult(NamedTuple):
  state: PyTree     # final per-restart state, leading axis R
  history: History


RESTART_AXES = ("vmap", "map", "auto")


@functools.lru_cache(maxsize=32)
def _vmapped_init(init: Callable) -> Callable:
  """`jit(vmap(init))`, one per task `init` function: Runners built for the same Task
  (other step counts or layouts) share its compilation, which took 1-3 s for the
  chapters' models on a CPU."""
  return jax.jit(jax.vmap(init, in_axes=(0, 0, None)))


def restart_axis_for(platform: str) -> str:
  """The restart formulation ``restart_axis="auto"`` uses on a backend.

  ``"map"`` on ``"cpu"``: XLA:CPU can run a batched dot over the restart axis below the
  rate of its plain GEMMs, and the mapped step measured at least as fast as the vmapped
  one there (benchmarks/rex_cmnist_speed.py times both side by side and records them);
  ``"vmap"`` on GPU and TPU, where one batched kernel fills the device better than R
  small sequential ones.
  """
  if not isinstance(platform, str):
    raise TypeError(f"platform must be a str such as 'cpu' or 'gpu', got {type(platform).__name__}")
  return "map" if platform == "cpu" else "vmap"


def restart_mesh(num_restarts: int, devices=None) -> Mesh:
  """A 1-D mesh over as many devices as evenly divide the restarts."""
  _checks.check_positive_int("num_restarts", num_restarts)
  devices = list(jax.devices() if devices is None else devices)
  n = math.gcd(int(num_restarts), len(devices)) or 1
  return Mesh(np.array(devices[:n]), ("restarts",))


def training_mesh(num_restarts: int, data_shards: int = 1, devices=None) -> Mesh:
  """The Runner's 2-D mesh ``("restarts", "data")``.

  ``"data"`` has `data_shards` devices; ``"restarts"`` gets as many of the remaining
  device groups as evenly divide `num_restarts` (so 8 devices, 2 restarts and
  `data_shards=4` give a 2 × 4 mesh; 1 restart and `data_shards=8` a 1 × 8 one).
  """
  devices = list(jax.devices() if devices is None else devices)
  _checks.check_positive_int("num_restarts", num_restarts)
  _checks.check_positive_int("data_shards", data_shards)
  if data_shards > len(devices):
    raise ValueError(f"data_shards={data_shards} needs that many devices; "
                     f"{len(devices)} available")
  n_restarts = math.gcd(int(num_restarts), len(devices) // data_shards) or 1
  grid = np.array(devices[:n_restarts * data_shards]).reshape(n_restarts, data_shards)
  return Mesh(grid, ("restarts", "data"))


def _over_restarts(fn: Callable, in_axes: tuple, how: str, shards: int) -> Callable:
  """`fn` applied along the leading restart axis of the arguments whose in_axis is 0.

  ``"vmap"`` batches the restarts; ``"map"`` loops over them inside the program
  (`lax.map`), one slice of the restart axis per restart shard, so that each device
  loops over its own restarts.
  """
  if how == "vmap":
    return jax.vmap(fn, in_axes=in_axes)

  def mapped(*args):
    batched = tuple(a for a, axis in zip(args, in_axes) if axis == 0)

    def one(slices):
      it = iter(slices)
      return fn(*(next(it) if axis == 0 else a for a, axis in zip(args, in_axes)))

    if shards == 1:
      return jax.lax.map(one, batched)
    split = jax.tree_util.tree_map(lambda x: x.reshape((shards, -1) + x.shape[1:]), batched)
    out = jax.vmap(lambda b: jax.lax.map(one, b))(split)
    return jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), out)

  return mapped


def _data_shardings(data: PyTree, data_axes: PyTree, mesh: Mesh) -> PyTree:
  """One NamedSharding per data leaf: its batch axis over ``"data"``, or replicated.

  Refuses a batch axis that the data shards do not divide (padding would change every
  mean over the batch unless the task masks it, so the caller pads, with a mask).
  """
  shards = mesh.shape["data"]
  leaves, treedef = jax.tree_util.tree_flatten_with_path(data)
  if shards == 1:
    return jax.tree_util.tree_unflatten(
        treedef, [NamedSharding(mesh, PartitionSpec()) for _ in leaves])
  axes = []

  def collect(axis, subtree):
    axes.extend([axis] * len(jax.tree_util.tree_leaves(subtree)))

  try:
    jax.tree_util.tree_map(collect, data_axes, data, is_leaf=lambda x: x is None)
  except ValueError as error:
    raise ValueError(f"data_axes must be an int, None or a pytree prefix of data "
                     f"(one batch axis or None per subtree): {error}") from None
  shardings = []
  for (path, leaf), axis in zip(leaves, axes):
    name = "data" + jax.tree_util.keystr(path)
    ndim = np.ndim(leaf)
    if axis is None or ndim == 0:
      shardings.append(NamedSharding(mesh, PartitionSpec()))
      continue
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
      raise TypeError(f"data_axes for {name} must be an int or None, got {axis!r}")
    if not -ndim <= axis < ndim:
      raise ValueError(f"data_axes gives axis {axis} for {name} of shape {np.shape(leaf)}")
    axis = int(axis) % ndim
    size = np.shape(leaf)[axis]
    if size % shards:
      raise ValueError(
          f"{name} has {size} entries along its batch axis {axis}, which {shards} data "
          f"shards do not divide evenly; pad it to a multiple of {shards} (with a mask the "
          f"task applies), drop {size % shards} entries, or choose data_shards dividing {size}")
    spec = [None] * ndim
    spec[axis] = "data"
    shardings.append(NamedSharding(mesh, PartitionSpec(*spec)))
  return jax.tree_util.tree_unflatten(treedef, shardings)


def _put(tree: PyTree, shardings: PyTree) -> PyTree:
  """Places host or device values; on several hosts each builds its own shards."""
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)

  def place(x, sharding):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

  return jax.tree_util.tree_map(place, tree, shardings)


def _fetch(tree: PyTree) -> PyTree:
  """Device values to host numpy; gathered from every host when they span several."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils
  return multihost_utils.process_allgather(tree, tiled=True)


def _leading_size(tree: PyTree, name: str) -> Optional[int]:
  sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree_util.tree_leaves(tree)}
  if None in sizes:
    raise ValueError(f"{name}: every leaf needs a leading restart axis; found a scalar leaf")
  if len(sizes) > 1:
    raise ValueError(f"{name}: leaves disagree on the restart axis size: {sorted(sizes)}")
  return sizes.pop() if sizes else None


class Runner:
  """Compiles a `Task` once and runs it for any restart keys / hyperparameters.

  Args:
    task: the `Task` to run.
    num_steps: number of `step` calls per restart.
    eval_every: evaluate every this many steps (default: about 20 evaluations).
    chunk_size: steps per compiled scan between progress updates and checkpoints
      (default: about 10 chunks).
    progress: show a progress bar on stderr.
    description: label of the progress bar.
    devices: devices for the mesh (default: all, every host's after
      `jax.distributed.initialize`).
    restart_axis: how the restarts are laid out in the compiled step: ``"vmap"``
      (batched), ``"map"`` (`lax.map`, one restart after another, plain matrix products)
      or ``"auto"`` (`restart_axis_for` the devices' platform). Same results up to
      float rounding.
    data_shards: size of the mesh's ``"data"`` axis; the data's batch axes are split
      over it and XLA reduces the gradients. Restarts take the remaining devices.
    data_axes: which axis of each data leaf is its batch axis, as an int (every leaf),
      or a pytree prefix of `data` with an int or None (replicated) per subtree; 0-d
      leaves are always replicated. Used only when `data_shards > 1`; a batch axis that
      `data_shards` does not divide is refused with an error naming the leaf.
  """

  def __init__(self, task: Task, num_steps: int, *, eval_every: Optional[int] = None,
               chunk_size: Optional[int] = None, progress: bool = True,
               description: str = "train", devices=None, restart_axis: str = "auto",
               data_shards: int = 1, data_axes: PyTree = 0):
    if not isinstance(task, Task):
      raise TypeError(f"task must be a jaxthesis.engine.Task, got {type(task).__name__}")
    _check_task_fields(task)  # a Task rebuilt with `_replace` skips `Task.__new__`
    _checks.check_positive_int("num_steps", num_steps)  # bools are not counts
    if eval_every is not None:
      _checks.check_positive_int("eval_every", eval_every)
    if chunk_size is not None:
      _checks.check_positive_int("chunk_size", chunk_size)
    if restart_axis not in RESTART_AXES:
      raise ValueError(f"restart_axis must be one of {RESTART_AXES}, got {restart_axis!r}")
    _checks.check_positive_int("data_shards", data_shards)
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
      raise ValueError("devices must name at least one device, got none")
    if data_shards > len(devices):
      raise ValueError(f"data_shards={data_shards} needs that many devices; "
                       f"{len(devices)} available")
    self.task = task
    self.num_steps = num_steps = int(num_steps)
    self.eval_every = int(eval_every or max(1, num_steps // 20))
    self.chunk_size = int(min(chunk_size or max(1, math.ceil(num_steps / 10)), num_steps))
    self.progress = progress
    self.description = description
    self.devices = devices
    self.restart_axis = (restart_axis_for(devices[0].platform) if restart_axis == "auto"
                         else restart_axis)
    self.data_shards = int(data_shards)
    self.data_axes = data_axes
    try:
      self._init = _vmapped_init(task.init)
    except TypeError:  # an unhashable callable: its own, not shared
      self._init = _vmapped_init.__wrapped__(task.init)
    self._chunk = jax.jit(self._run_chunk, donate_argnums=(0,))
    self._final_eval = (jax.jit(self._evaluate_all) if task.evaluate is not None else None)

  def mesh(self, num_restarts: int) -> Mesh:
    """The ``("restarts", "data")`` mesh a run with `num_restarts` restarts uses."""
    return training_mesh(num_restarts, self.data_shards, self.devices)

  def _over_restarts(self, fn: Callable, in_axes: tuple, num_restarts: int) -> Callable:
    return _over_restarts(fn, in_axes, self.restart_axis,
                          self.mesh(num_restarts).shape["restarts"])

  def _evaluate_all(self, states, hparams, data):
    num_restarts = jax.tree_util.tree_leaves(states)[0].shape[0]
    return self._over_restarts(self.task.evaluate, (0, 0, None), num_restarts)(
        states, hparams, data)

  # -- the compiled program ------------------------------------------------------------

  def _run_chunk(self, states, keys, hparams, data, start):
    """`chunk_size` steps of every restart: `_over_restarts` of one restart's scan.

    The restart axis is mapped *outside* the scan over steps. With ``"vmap"`` that is the
    same program as a scan of vmapped steps (vmap moves into the scan body); with
    ``"map"`` each restart runs its whole chunk as a loop of its own, so its state stays
    in the loop's carry instead of being sliced out of, and written back into, the stacked
    state of all restarts at every step (a copy of every parameter and optimizer buffer
    per restart and step: about 1 ms per step of a 784-512-512-10 MLP, as much as the
    step's arithmetic). Histories come back time-major, `[chunk, R, ...]`.
    """
    task, num_steps, eval_every = self.task, self.num_steps, self.eval_every
    num_restarts = keys.shape[0]

    def one_restart(state, key, hp):
      def one_step(state, offset):
        step = start + offset
        if task.evaluate is not None:
          evaluate = lambda s: task.evaluate(s, hp, data)
          shapes = jax.eval_shape(evaluate, state)
          zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
          due = (step % eval_every == 0) & (step < num_steps)
          evals = jax.lax.cond(due, evaluate, lambda s: zeros, state)
        else:
          evals = {}

        def update(s):
          return task.step(s, step, jax.random.fold_in(key, step), hp, data)

        out_shapes = jax.eval_shape(update, state)
        _check_step_outputs(out_shapes)
        idle = lambda s: (s,) + jax.tree_util.tree_map(
            lambda a: jnp.full(a.shape, jnp.nan, a.dtype), out_shapes[1:])
        state, losses, metrics = jax.lax.cond(step < num_steps, update, idle, state)
        return state, (losses, metrics, evals)

      return jax.lax.scan(one_step, state, jnp.arange(self.chunk_size))

    states, history = self._over_restarts(one_restart, (0, 0, 0), num_restarts)(
        states, keys, hparams)
    return states, jax.tree_util.tree_map(lambda a: jnp.swapaxes(a, 0, 1), history)

  # -- driving it ----------------------------------------------------------------------

  def run(self, keys: PRNGKey, hparams: PyTree = None, data: PyTree = None, *,
          checkpoint_dir: Optional[str] = None, fingerprint: Any = None) -> RunResult:
    """Runs every restart to the end.

    Args:
      keys: `[R]` PRNG keys (typed, or raw uint32 `[R, 2]`), one per restart.
      hparams: pytree whose leaves have the leading restart axis R (may be None).
      data: pytree of arrays shared by every restart: replicated over the devices, or,
        with `data_shards > 1`, split along the batch axes that `data_axes` names.
      checkpoint_dir: if given, checkpoint here after each chunk and resume from the
        latest checkpoint found (a run killed and restarted with the same directory ends
        with the same result).
      fingerprint: JSON-able description of the configuration; resuming from a
        checkpoint written under another fingerprint is refused.

    Returns:
      `RunResult(state, history)`.
    """
    keys = jnp.asarray(keys) if not jax.dtypes.issubdtype(
        getattr(keys, "dtype", None), jax.dtypes.prng_key) else keys
    if jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key):
      if keys.ndim != 1:
        raise ValueError(f"keys must be a 1-D array of PRNG keys [R], got shape {keys.shape}")
    elif (keys.ndim != 2 or keys.dtype != jnp.uint32
          or keys.shape[1] != jax.random.PRNGKey(0).shape[-1]):
      raise ValueError(f"keys must be [R] typed keys or raw uint32 [R, 2], got "
                       f"{keys.dtype}{list(keys.shape)}")
    num_restarts = keys.shape[0]
    if num_restarts < 1:
      raise ValueError("keys must hold at least one restart key, got none")
    hp_size = _leading_size(hparams, "hparams")
    if hp_size is not None and hp_size != num_restarts:
      raise ValueError(f"hparams has restart axis {hp_size}, keys has {num_restarts}")

    mesh = self.mesh(num_restarts)
    data_shardings = _data_shardings(data, self.data_axes, mesh)
    split = NamedSharding(mesh, PartitionSpec("restarts"))
    keys = _put(keys, split)
    hparams = _put(hparams, jax.tree_util.tree_map(lambda _: split, hparams))
    data = _put(data, data_shardings)
    states = self._init(keys, hparams, data)
    states = jax.device_put(states, split)

    total = self.num_steps
    num_chunks = math.ceil(total / self.chunk_size)
    eval_steps = np.arange(0, total, self.eval_every)
    loss_hist = metric_hist = eval_hist = None
    start_chunk = 0

    manager = None
    if checkpoint_dir is not None:
      manager, restored = _open_checkpoint(checkpoint_dir, fingerprint, num_restarts, total,
                                           self.chunk_size, self.eval_every)
      if restored is not None:
        start_chunk, states, loss_hist, metric_hist, eval_hist = _restore(
            manager, restored, states, split)

    bar = _progress_bar(total, self.description, self.progress, start_chunk * self.chunk_size)
    try:
      for chunk in range(start_chunk, num_chunks):
        start = chunk * self.chunk_size
        states, (losses, metrics, evals) = self._chunk(states, keys, hparams, data,
                                                       jnp.int32(start))
        losses, metrics, evals = _fetch((losses, metrics, evals))
        n = min(self.chunk_size, total - start)
        if loss_hist is None:
          loss_hist = {k: np.full((num_restarts, total), np.nan, np.float32) for k in losses}
          metric_hist = {k: np.full((num_restarts, total), np.nan, np.float32) for k in metrics}
          eval_hist = {k: np.full((num_restarts, len(eval_steps) + 1), np.nan, np.float32)
                       for k in evals}
        for hist, new in ((loss_hist, losses), (metric_hist, metrics)):
          for k, v in new.items():
            hist[k][:, start:start + n] = np.asarray(v[:n]).T
        due = np.flatnonzero((np.arange(start, start + n) % self.eval_every) == 0)
        for k, v in evals.items():
          eval_hist[k][:, (start + due) // self.eval_every] = np.asarray(v)[due].T
        _check_finite(loss_hist, start, start + n)
        if manager is not None:
          _save(manager, chunk + 1, states, loss_hist, metric_hist, eval_hist)
        if bar is not None:
          bar.update(n)
          if "loss" in loss_hist:
            bar.set_postfix(loss=f"{np.nanmean(loss_hist['loss'][:, start + n - 1]):.4g}")
    finally:
      if bar is not None:
        bar.close()
      if manager is not None:
        manager.wait_until_finished()

    if self._final_eval is not None:
      final = _fetch(self._final_eval(states, hparams, data))
      for k, v in final.items():
        eval_hist[k][:, -1] = np.asarray(v)
    history = History(losses=loss_hist or {}, metrics=metric_hist or {},
                      eval_steps=np.append(eval_steps, total),
                      evals=eval_hist or {})
    return RunResult(state=states, history=history)


# ---------------------------------------------------------------------------- helpers


def _check_step_outputs(out_shapes) -> None:
  """`task.step`'s losses and metrics are dicts of scalars (checked while tracing, so a
  vector loss is named here instead of failing later as a numpy broadcast error)."""
  for what, out in (("losses", out_shapes[1]), ("metrics", out_shapes[2])):
    if not isinstance(out, Mapping):
      raise TypeError(f"task.step must return {what} as a dict of scalars, got "
                      f"{type(out).__name__}")
    for name, value in out.items():
      if not hasattr(value, "shape") or value.shape != ():
        raise ValueError(f"task.step {what}[{name!r}] must be a scalar, got shape "
                         f"{getattr(value, 'shape', type(value).__name__)}")


def _check_finite(loss_hist: dict[str, np.ndarray], start: int, stop: int) -> None:
  """Raises FloatingPointError naming the first step, the first restart bad at that step,
  and every term that is non-finite at that step of that restart."""
  if not loss_hist:
    return
  bad = np.any([~np.isfinite(v[:, start:stop]) for v in loss_hist.values()], axis=0)
  if not bad.any():
    return
  restarts, offsets = np.nonzero(bad)
  step = start + int(offsets.min())
  restart = int(restarts[offsets == offsets.min()].min())
  terms = [f"{term}={values[restart, step]}" for term, values in loss_hist.items()
           if not np.isfinite(values[restart, step])]
  raise FloatingPointError(f"non-finite loss at step {step} (restart {restart}): "
                           f"{', '.join(terms)}")


def _progress_bar(total: int, description: str, enabled: bool, initial: int):
  from jaxthesis._progress import progress_bar
  return progress_bar(total, description, enabled, initial)


def _open_checkpoint(directory: str, fingerprint: Any, num_restarts: int, total: int,
                     chunk_size: int, eval_every: int):
  import orbax.checkpoint as ocp

  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  # eval_every lays out the evaluation history: resuming under another one would mix two.
  meta = {"fingerprint": fingerprint, "num_restarts": num_restarts, "num_steps": total,
          "chunk_size": chunk_size, "eval_every": eval_every}
  meta_path = os.path.join(directory, "run_meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    old.setdefault("eval_every", eval_every)  # written before eval_every was recorded
    if old != json.loads(json.dumps(meta, default=str)):
      raise CheckpointMismatchError(
          f"checkpoint_dir {directory!r} holds a run with another configuration; use a new "
          f"directory or delete it (on the command line: --fresh)")
  else:
    with open(meta_path, "w") as f:
      json.dump(meta, f, default=str)
  manager = ocp.CheckpointManager(
      os.path.join(directory, "checkpoints"),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False))
  return manager, manager.latest_step()


def _save(manager, chunk: int, states, loss_hist, metric_hist, eval_hist) -> None:
  import orbax.checkpoint as ocp
  # States go in as a flat, index-keyed dict so any pytree (NamedTuples included)
  # round-trips exactly; the structure comes back from the freshly initialized state.
  leaves = {str(i): leaf for i, leaf in enumerate(jax.tree_util.tree_leaves(states))}
  payload = {"states": leaves, "losses": loss_hist, "metrics": metric_hist, "evals": eval_hist}
  manager.save(chunk, args=ocp.args.StandardSave(payload))


def _restore(manager, chunk: int, states, sharding):
  import orbax.checkpoint as ocp
  restored = manager.restore(chunk, args=ocp.args.StandardRestore())
  leaves = restored["states"]
  restored_states = jax.tree_util.tree_unflatten(
      jax.tree_util.tree_structure(states), [leaves[str(i)] for i in range(len(leaves))])
  restored_states = jax.device_put(
      jax.tree_util.tree_map(lambda r, s: np.asarray(r, dtype=s.dtype), restored_states, states),
      sharding)
  as_np = lambda d: {k: np.array(v) for k, v in d.items()}
  return (chunk, restored_states, as_np(restored["losses"]), as_np(restored["metrics"]),
          as_np(restored["evals"]))
