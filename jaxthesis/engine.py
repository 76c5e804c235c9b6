"""The compiled training engine shared by every experiment.

A training problem is a `Task`: pure functions `init`, `step` and (optionally)
`evaluate` over one run. The `Runner` compiles them into one program that

* vmaps a *restart axis*: one PRNG key and one hyperparameter vector per restart, so
  seeds, restarts and hyperparameter sweeps are a single batched computation;
* runs the steps in `lax.scan`, in fixed-size chunks (one compilation; steps past the
  end are skipped with `lax.cond`), evaluating `evaluate` every `eval_every` steps
  inside the scan and returning every metric as an array;
* shards the restart axis over the available devices with `jax.sharding` (a 1-D
  `Mesh` named ``"restarts"``), replicating the data;
* reports progress between chunks, stops with an error naming the step, the loss term
  and the restart when a loss goes non-finite, and checkpoints with orbax after each
  chunk so that a killed run resumes where it stopped and ends with the same result.

Per-step randomness is `fold_in(restart_key, step)`, so results do not depend on the
chunking or on resumption.
"""
from __future__ import annotations

import json
import math
import os
import sys
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxthesis import _checks
from jaxthesis.typing import Array, PRNGKey, PyTree

InitFn = Callable[[PRNGKey, PyTree, PyTree], PyTree]
StepFn = Callable[[PyTree, Array, PRNGKey, PyTree, PyTree],
                  tuple[PyTree, dict[str, Array], dict[str, Array]]]
EvalFn = Callable[[PyTree, PyTree, PyTree], dict[str, Array]]


class _TaskFields(NamedTuple):
  init: InitFn
  step: StepFn
  evaluate: Optional[EvalFn] = None


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


def restart_mesh(num_restarts: int, devices=None) -> Mesh:
  """A 1-D mesh over as many devices as evenly divide the restarts."""
  devices = list(jax.devices() if devices is None else devices)
  n = math.gcd(num_restarts, len(devices)) or 1
  return Mesh(np.array(devices[:n]), ("restarts",))


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
    devices: devices for the restart mesh (default: all).
  """

  def __init__(self, task: Task, num_steps: int, *, eval_every: Optional[int] = None,
               chunk_size: Optional[int] = None, progress: bool = True,
               description: str = "train", devices=None):
    if not isinstance(task, Task):
      raise TypeError(f"task must be a jaxthesis.engine.Task, got {type(task).__name__}")
    _check_task_fields(task)  # a Task rebuilt with `_replace` skips `Task.__new__`
    if not isinstance(num_steps, int) or num_steps < 1:
      raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    if eval_every is not None and (not isinstance(eval_every, int) or eval_every < 1):
      raise ValueError(f"eval_every must be a positive int, got {eval_every!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
      raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    self.task = task
    self.num_steps = num_steps
    self.eval_every = eval_every or max(1, num_steps // 20)
    self.chunk_size = min(chunk_size or max(1, math.ceil(num_steps / 10)), num_steps)
    self.progress = progress
    self.description = description
    self.devices = devices
    self._init = jax.jit(jax.vmap(task.init, in_axes=(0, 0, None)))
    self._chunk = jax.jit(self._run_chunk, donate_argnums=(0,))
    self._final_eval = (jax.jit(jax.vmap(task.evaluate, in_axes=(0, 0, None)))
                        if task.evaluate is not None else None)

  # -- the compiled program ------------------------------------------------------------

  def _run_chunk(self, states, keys, hparams, data, start):
    task, num_steps, eval_every = self.task, self.num_steps, self.eval_every
    vstep = jax.vmap(task.step, in_axes=(0, None, 0, 0, None))
    veval = (jax.vmap(task.evaluate, in_axes=(0, 0, None))
             if task.evaluate is not None else None)

    def one_step(states, offset):
      step = start + offset
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)

      def evaluate(s):
        return veval(s, hparams, data)

      if veval is not None:
        shapes = jax.eval_shape(evaluate, states)
        zeros = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)
        due = (step % eval_every == 0) & (step < num_steps)
        evals = jax.lax.cond(due, evaluate, lambda s: zeros, states)
      else:
        evals = {}

      def update(s):
        return vstep(s, step, step_keys, hparams, data)

      out_shapes = jax.eval_shape(update, states)
      idle = lambda s: (s,) + jax.tree_util.tree_map(
          lambda a: jnp.full(a.shape, jnp.nan, a.dtype), out_shapes[1:])
      states, losses, metrics = jax.lax.cond(step < num_steps, update, idle, states)
      return states, (losses, metrics, evals)

    return jax.lax.scan(one_step, states, jnp.arange(self.chunk_size))

  # -- driving it ----------------------------------------------------------------------

  def run(self, keys: PRNGKey, hparams: PyTree = None, data: PyTree = None, *,
          checkpoint_dir: Optional[str] = None, fingerprint: Any = None) -> RunResult:
    """Runs every restart to the end.

    Args:
      keys: `[R]` PRNG keys (typed, or raw uint32 `[R, 2]`), one per restart.
      hparams: pytree whose leaves have the leading restart axis R (may be None).
      data: pytree of arrays shared by every restart (replicated over devices).
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

    mesh = restart_mesh(num_restarts, self.devices)
    split = NamedSharding(mesh, PartitionSpec("restarts"))
    replicated = NamedSharding(mesh, PartitionSpec())
    keys = jax.device_put(keys, split)
    hparams = jax.device_put(hparams, split)
    data = jax.device_put(data, replicated)
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
                                           self.chunk_size)
      if restored is not None:
        start_chunk, states, loss_hist, metric_hist, eval_hist = _restore(
            manager, restored, states, split)

    bar = _progress_bar(total, self.description, self.progress, start_chunk * self.chunk_size)
    try:
      for chunk in range(start_chunk, num_chunks):
        start = chunk * self.chunk_size
        states, (losses, metrics, evals) = self._chunk(states, keys, hparams, data,
                                                       jnp.int32(start))
        losses, metrics, evals = jax.device_get((losses, metrics, evals))
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
      final = jax.device_get(self._final_eval(states, hparams, data))
      for k, v in final.items():
        eval_hist[k][:, -1] = np.asarray(v)
    history = History(losses=loss_hist or {}, metrics=metric_hist or {},
                      eval_steps=np.append(eval_steps, total),
                      evals=eval_hist or {})
    return RunResult(state=states, history=history)


# ---------------------------------------------------------------------------- helpers


def _check_finite(loss_hist: dict[str, np.ndarray], start: int, stop: int) -> None:
  """Raises FloatingPointError naming the first step, term(s) and restart that went bad."""
  first = None
  for term, values in loss_hist.items():
    bad = ~np.isfinite(values[:, start:stop])
    if bad.any():
      restart, offset = np.argwhere(bad)[np.argmin(np.argwhere(bad)[:, 1])]
      step = start + int(offset)
      if first is None or step < first[0]:
        first = (step, [], int(restart))
      if step == first[0]:
        first[1].append(f"{term}={values[restart, step]}")
  if first is not None:
    step, terms, restart = first
    raise FloatingPointError(f"non-finite loss at step {step} (restart {restart}): "
                             f"{', '.join(terms)}")


def _progress_bar(total: int, description: str, enabled: bool, initial: int):
  from jaxthesis._progress import progress_bar
  return progress_bar(total, description, enabled, initial)


def _open_checkpoint(directory: str, fingerprint: Any, num_restarts: int, total: int,
                     chunk_size: int):
  import orbax.checkpoint as ocp

  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  meta = {"fingerprint": fingerprint, "num_restarts": num_restarts, "num_steps": total,
          "chunk_size": chunk_size}
  meta_path = os.path.join(directory, "run_meta.json")
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    if old != json.loads(json.dumps(meta, default=str)):
      raise ValueError(f"checkpoint_dir {directory!r} holds a run with another configuration "
                       f"({old}); use a new directory or delete it")
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
