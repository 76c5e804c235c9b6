"""Training a `Method` with the shared engine: minibatch SGD on its loss, KL annealed.

`make_task(method, ...)` returns an `engine.Task` (restarts vmapped, steps scanned by the
`Runner`); `subset_trainer(method, ...)` trains on a growing labelled subset with fixed
shapes (active learning, one program for every round). Data is `{"x": [N, ...], "y": [N]}` (plus whatever `evaluate` reads); epoch e
visits the examples in the order `permutation(fold_in(key, e))`; the KL weight of epoch e
is `objectives.kl_annealing(e, num_epochs)` (w = min(1, 0.001 + e / (E / 2))). Adam with
gradient-norm clipping, as in Section 7.4.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks, engine
from jaxthesis.bhn.methods import Method
from jaxthesis.bhn.objectives import kl_annealing
from jaxthesis.typing import Array, Params, PRNGKey


class TrainState(NamedTuple):
  params: Params
  opt_state: Any
  data_key: PRNGKey  # orders the minibatches


def _check_positive(name: str, value) -> int:
  _checks.check_positive_int(name, value)  # bools are not counts
  return int(value)


def make_task(method: Method, *, num_train: int, batch_size: int, num_epochs: int,
              learning_rate: float = 1e-3, clip_norm: float = 10.0, anneal: bool = True,
              init_size: int = 100, warmup_steps: int = 10,
              evaluate: Optional[Callable[[Params, Any], dict[str, Array]]] = None) -> engine.Task:
  """An `engine.Task` training `method` on `data["x"], data["y"]`.

  Args:
    method: the `Method`.
    num_train: N, the number of training examples in `data` (the ELBO's divisor);
      `init` checks that `data["x"]` and `data["y"]` hold N examples.
    batch_size: minibatch size (<= N); an epoch is `N // batch_size` steps.
    num_epochs: E, used by the annealing (run the Runner for `E * steps_per_epoch` steps).
    learning_rate: Adam's step size (> 0).
    clip_norm: global gradient-norm clip (> 0).
    anneal: anneal the KL weight (else w = 1).
    init_size: examples of the first minibatch used by the data-dependent initialization.
    warmup_steps: Adam's learning rate rises linearly from 0 over these first steps (0:
      none); see `subset_trainer` for why (without it, RealNVP×12 on the MNIST MLP gave a
      non-finite KL at the second step).
    evaluate: optional `(params, data) -> {name: scalar}` for the Runner's evaluations.

  Returns:
    The `Task`; `steps_per_epoch(num_train, batch_size)` gives the steps of one epoch.
  """
  if not isinstance(method, Method):
    raise TypeError(f"method must be a Method, got {type(method).__name__}")
  num_train = _check_positive("num_train", num_train)
  batch_size = _check_positive("batch_size", batch_size)
  num_epochs = _check_positive("num_epochs", num_epochs)
  init_size = _check_positive("init_size", init_size)
  if batch_size > num_train:
    raise ValueError(f"batch_size must be <= num_train ({num_train}), got {batch_size}")
  spe = steps_per_epoch(num_train, batch_size)
  optimizer = _optimizer(learning_rate, clip_norm, warmup_steps)

  def init(key, hparams, data):
    del hparams
    _check_data(data, num_train)
    init_key, data_key = jax.random.split(key)
    first = jax.random.permutation(jax.random.fold_in(data_key, 0), num_train)[:init_size]
    params = method.init(init_key, data["x"][first])
    return TrainState(params, optimizer.init(params), data_key)

  def step(state, step, key, hparams, data):
    del hparams
    epoch = step // spe
    order = jax.random.permutation(jax.random.fold_in(state.data_key, epoch), num_train)
    idx = jax.lax.dynamic_slice(order, ((step % spe) * batch_size,), (batch_size,))
    weight = kl_annealing(epoch, num_epochs) if anneal else jnp.ones(())
    params, opt_state, losses = _update(method, optimizer, state.params, state.opt_state, key,
                                        data["x"][idx], data["y"][idx], weight, num_train)
    return (state._replace(params=params, opt_state=opt_state), losses, {"kl_weight": weight})

  task_eval = None
  if evaluate is not None:
    task_eval = lambda state, hparams, data: evaluate(state.params, data)
  return engine.Task(init, step, task_eval)


def _check_data(data, num_train: int) -> None:
  """`data["x"]` and `data["y"]` hold exactly `num_train` examples (shapes are static)."""
  for field in ("x", "y"):
    if field not in data:
      raise ValueError(f"data must hold {field!r}, got keys {sorted(data)}")
    rows = np.shape(data[field])[:1]
    if rows != (num_train,):
      raise ValueError(f"data[{field!r}] must hold num_train = {num_train} examples, got "
                       f"shape {np.shape(data[field])}")


def _check_subset(x, indices, count) -> None:
  """`1 <= count <= len(indices)` and `0 <= indices < len(x)`, each when concrete."""
  if np.ndim(indices) != 1:
    raise ValueError(f"indices must have shape [L], got {np.shape(indices)}")
  size, pool = np.shape(indices)[0], np.shape(x)[0]
  if np.ndim(count) != 0:
    raise ValueError(f"count must be a scalar, got shape {np.shape(count)}")
  if _checks.is_concrete(count) and not 1 <= int(np.asarray(count)) <= size:
    raise ValueError(f"count must be in [1, len(indices) = {size}], got {count!r}")
  _checks.check_below("indices", indices, pool, "positions", upper_name="len(x)")


def _optimizer(learning_rate: float, clip_norm: float,
               warmup_steps: int) -> optax.GradientTransformation:
  """Adam after a global gradient-norm clip (Section 7.4), its learning rate warmed up
  linearly from 0 over `warmup_steps` steps (0: constant); the arguments checked."""
  if not learning_rate > 0:
    raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
  if not clip_norm > 0:
    raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
  if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, (int, np.integer)) \
      or warmup_steps < 0:
    raise ValueError(f"warmup_steps must be a non-negative int, got {warmup_steps!r}")
  rate = (optax.linear_schedule(0.0, learning_rate, int(warmup_steps)) if warmup_steps
          else learning_rate)
  return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(rate))


def _update(method: Method, optimizer: optax.GradientTransformation, params: Params,
            opt_state: Any, key: PRNGKey, x: Array, y: Array, kl_weight: Array,
            num_train) -> tuple[Params, Any, dict[str, Array]]:
  """One gradient step on `method.loss` of a minibatch: `(params, opt_state, losses)`."""
  (loss, aux), grads = jax.value_and_grad(method.loss, has_aux=True)(
      params, key, x, y, kl_weight, num_train)
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return (optax.apply_updates(params, updates), opt_state,
          {"loss": loss, "nll": aux["nll"], "kl": aux["kl"]})


def subset_trainer(method: Method, *, batch_size: int, num_epochs: int,
                   learning_rate: float = 1e-3, clip_norm: float = 10.0,
                   anneal: bool = True, warmup_steps: int = 10
                   ) -> Callable[..., tuple[Params, Array, Array]]:
  """Training on a variable-size labelled subset with fixed shapes (active learning).

  Returns `train(params, key, x, y, indices, count, num_train=None) -> (params, mean loss
  of the last epoch, bad)`: `indices [L]` are positions into `x, y` whose first `count` (a
  traced int, `1 <= count <= L`) are the labelled examples (`count` and `0 <= indices <
  len(x)` are checked where concrete). It runs `num_epochs` epochs of
  `ceil(count / batch_size)` steps (Adam with a fresh state, the KL weight annealed over
  the epochs as in `make_task`); the ELBO's N is `num_train` (a traced scalar; None: N =
  count, the ELBO of the labelled set alone); epoch e visits the labelled examples in a
  random order drawn afresh each epoch, the last minibatch filled up from the start of
  that order (so a labelled set smaller than a minibatch repeats). `bad [2]` holds the
  first step (from 0) whose NLL / KL term was non-finite, -1 where none was.

  Adam's learning rate rises linearly from 0 over the first `warmup_steps` steps of each
  call (0: no warm-up). Adam's first steps move every parameter by about the learning
  rate whatever its gradient's size, and in a RealNVP hypernet the update of a coupling's
  output kernel is coherent over its hidden units (ReLU activations are >= 0), so with
  fresh moments one full step can compound through the couplings into overflowing
  scales; the warm-up lets the moment estimates settle first.

  Shapes do not depend on `count`: one compiled program serves every round, and the
  function vmaps over runs with different subsets (`count` unbatched).
  """
  if not isinstance(method, Method):
    raise TypeError(f"method must be a Method, got {type(method).__name__}")
  batch_size = _check_positive("batch_size", batch_size)
  num_epochs = _check_positive("num_epochs", num_epochs)
  optimizer = _optimizer(learning_rate, clip_norm, warmup_steps)

  def train(params, key, x, y, indices, count, num_train=None):
    _check_subset(x, indices, count)
    count = jnp.asarray(count, jnp.int32)
    n_kl = count.astype(jnp.float32) if num_train is None else jnp.asarray(num_train, jnp.float32)
    spe = (count + batch_size - 1) // batch_size
    size = indices.shape[0]
    order_key, noise_key = jax.random.split(key)

    def body(step, carry):
      params, opt_state, last, bad = carry
      epoch = step // spe
      draw = jax.random.uniform(jax.random.fold_in(order_key, epoch), (size,))
      order = jnp.argsort(jnp.where(jnp.arange(size) < count, draw, 2.0))
      pos = order[((step % spe) * batch_size + jnp.arange(batch_size)) % count]
      idx = indices[pos]
      weight = kl_annealing(epoch, num_epochs) if anneal else jnp.ones(())
      params, opt_state, losses = _update(
          method, optimizer, params, opt_state, jax.random.fold_in(noise_key, step),
          x[idx], y[idx], weight, n_kl)
      last = jnp.where(epoch == num_epochs - 1, last + losses["loss"] / spe, last)
      finite = jnp.stack([jnp.isfinite(losses["nll"]), jnp.isfinite(losses["kl"])])
      bad = jnp.where((bad < 0) & ~finite, step, bad)
      return params, opt_state, last, bad

    params, _, last, bad = jax.lax.fori_loop(
        0, num_epochs * spe, body,
        (params, optimizer.init(params), jnp.zeros(()), jnp.full((2,), -1, jnp.int32)))
    return params, last, bad

  return train


def steps_per_epoch(num_train: int, batch_size: int) -> int:
  """`N // batch_size` (the last partial minibatch of an epoch is dropped)."""
  return max(1, _check_positive("num_train", num_train) // _check_positive("batch_size", batch_size))


def fit(method: Method, key: PRNGKey, data: dict, *, num_epochs: int, batch_size: int,
        num_restarts: int = 1, learning_rate: float = 1e-3, clip_norm: float = 10.0,
        anneal: bool = True, init_size: int = 100, warmup_steps: int = 10, evaluate=None,
        progress: bool = False,
        description: str = "train", checkpoint_dir: Optional[str] = None,
        fingerprint: Any = None) -> engine.RunResult:
  """Trains `num_restarts` independent copies (a vmap axis) for `num_epochs` epochs.

  Returns the engine's `RunResult`; `result.state.params` has a leading restart axis.
  """
  num_train = int(np.shape(data["x"])[0])
  num_restarts = _check_positive("num_restarts", num_restarts)
  task = make_task(method, num_train=num_train, batch_size=batch_size, num_epochs=num_epochs,
                   learning_rate=learning_rate, clip_norm=clip_norm, anneal=anneal,
                   init_size=min(init_size, num_train), warmup_steps=warmup_steps,
                   evaluate=evaluate)
  steps = num_epochs * steps_per_epoch(num_train, batch_size)
  runner = engine.Runner(task, steps, progress=progress, description=description,
                         eval_every=max(1, steps // 10) if evaluate is not None else None)
  keys = jax.random.split(key, num_restarts)
  return runner.run(keys, None, data, checkpoint_dir=checkpoint_dir, fingerprint=fingerprint)
