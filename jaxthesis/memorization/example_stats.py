"""Per-example statistics recorded inside any engine run, without callbacks.

`with_example_stats(task, per_example, num_examples, every)` wraps an `engine.Task`: its
state becomes `(inner state, ExampleStats)` and every `every` steps, before the update,
the wrapped step measures every example's loss and correctness with `per_example` and
folds them into the statistics (a `lax.cond` on the step, so other steps cost nothing):

* `loss`, `correct`: the latest measurement;
* `first_learned`: the first measured step at which the example was classified
  correctly (−1: never), the "learned" time of thesis 3.4;
* `last_learned`: the step of its last incorrect → correct transition (the step after
  which it stayed learned, if it is still correct at the end);
* `forgetting`: number of correct → incorrect transitions (forgetting events);
* `times_correct`: how many measurements found it correct.

Split by the `corrupted` mask of `jaxthesis.memorization.corruption`, `first_learned`
says when the model starts memorizing the noise examples (`onset_step`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, engine
from jaxthesis.typing import Array, PyTree

PerExampleFn = Callable[[PyTree, PyTree, PyTree], tuple[Array, Array]]


class ExampleStats(NamedTuple):
  loss: Array           # f32[N]
  correct: Array        # bool[N]
  first_learned: Array  # i32[N], -1 if never
  last_learned: Array   # i32[N], -1 if never
  forgetting: Array     # i32[N]
  times_correct: Array  # i32[N]
  measurements: Array   # i32[]


def example_stats_init(num_examples: int) -> ExampleStats:
  """Empty statistics for `num_examples` examples."""
  if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) \
      or num_examples < 1:
    raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
  n = num_examples
  return ExampleStats(loss=jnp.full(n, jnp.nan), correct=jnp.zeros(n, bool),
                      first_learned=jnp.full(n, -1, jnp.int32),
                      last_learned=jnp.full(n, -1, jnp.int32),
                      forgetting=jnp.zeros(n, jnp.int32), times_correct=jnp.zeros(n, jnp.int32),
                      measurements=jnp.int32(0))


def example_stats_update(stats: ExampleStats, step, loss: Array, correct: Array) -> ExampleStats:
  """Folds one measurement of every example (at training step `step`) into `stats`."""
  _checks.check_same_shape("stats.loss", stats.loss, "loss", loss)
  _checks.check_same_shape("stats.loss", stats.loss, "correct", correct)
  correct = jnp.asarray(correct, bool)
  step = jnp.asarray(step, jnp.int32)
  learned_now = correct & ~stats.correct
  forgot_now = ~correct & stats.correct
  first = jnp.where((stats.first_learned < 0) & correct, step, stats.first_learned)
  return ExampleStats(
      loss=jnp.asarray(loss, jnp.float32), correct=correct, first_learned=first,
      last_learned=jnp.where(learned_now, step, stats.last_learned),
      forgetting=stats.forgetting + forgot_now.astype(jnp.int32),
      times_correct=stats.times_correct + correct.astype(jnp.int32),
      measurements=stats.measurements + 1)


class WithStats(NamedTuple):
  inner: PyTree
  stats: ExampleStats


def with_example_stats(task: engine.Task, per_example: PerExampleFn, num_examples: int,
                       every: int = 1) -> engine.Task:
  """`task` with per-example statistics recorded every `every` steps (before the update).

  Args:
    task: any `engine.Task`.
    per_example: `(inner_state, hparams, data) -> (loss f32[N], correct bool[N])` on the
      examples to track (typically the whole training set).
    num_examples: N.
    every: measurement interval in steps.

  Returns:
    An `engine.Task` whose state is `WithStats(inner, stats)`. It adds the metrics
    `learned_frac` (fraction correct at the last measurement) and `forgetting_events`
    (total so far) to every step, and the same to `evaluate`.
  """
  if not isinstance(task, engine.Task):
    raise TypeError(f"task must be a jaxthesis.engine.Task, got {type(task).__name__}")
  if not callable(per_example):
    raise TypeError(f"per_example must be callable, got {type(per_example).__name__}")
  if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
    raise ValueError(f"every must be a positive int, got {every!r}")
  example_stats_init(num_examples)  # validates

  def init(key, hparams, data):
    return WithStats(task.init(key, hparams, data), example_stats_init(num_examples))

  def summary(stats):
    return {"learned_frac": jnp.mean(stats.correct.astype(jnp.float32)),
            "forgetting_events": jnp.sum(stats.forgetting).astype(jnp.float32)}

  def step(state: WithStats, t, key, hparams, data):
    def measure(stats):
      loss, correct = per_example(state.inner, hparams, data)
      return example_stats_update(stats, t, loss, correct)

    stats = jax.lax.cond(t % every == 0, measure, lambda s: s, state.stats)
    inner, losses, metrics = task.step(state.inner, t, key, hparams, data)
    return WithStats(inner, stats), losses, {**metrics, **summary(stats)}

  def evaluate(state: WithStats, hparams, data):
    inner = task.evaluate(state.inner, hparams, data) if task.evaluate is not None else {}
    return {**inner, **summary(state.stats)}

  return engine.Task(init=init, step=step, evaluate=evaluate)


def onset_step(first_learned: np.ndarray, mask: Optional[np.ndarray] = None,
               fraction: float = 0.5) -> float:
  """The step by which `fraction` of the (masked-in) examples had first been learned.

  With `mask` = the corrupted examples this is when memorization of the noise is under
  way. Returns `inf` when fewer than `fraction` of them were ever learned.
  """
  first = np.asarray(first_learned)
  if first.ndim != 1:
    raise ValueError(f"first_learned must be 1-D, got shape {first.shape}")
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
  if mask is not None:
    mask = np.asarray(mask, bool)
    if mask.shape != first.shape:
      raise ValueError(f"mask must have shape {first.shape}, got {mask.shape}")
    first = first[mask]
  if first.size == 0:
    raise ValueError("mask selects no examples")
  learned = np.sort(np.where(first >= 0, first, np.iinfo(np.int32).max))
  k = int(np.ceil(fraction * first.size)) - 1
  value = learned[k]
  return float("inf") if value == np.iinfo(np.int32).max else float(value)
