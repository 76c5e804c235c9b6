"""Minibatch SGD training of a chapter-3 classifier as one engine `Task` (thesis 3.2).

Everything that the studies vary is a per-restart hyperparameter, so each study is one
vmapped program: the data set (an index into stacked corrupted copies), the hidden width,
the number of training examples used, the learning rate and every regularizer strength
(`Regularization`). The optimizer is SGD with optional momentum and a step decay of the
learning rate every few epochs (the CNN's "lr 0.01 halved every 15 epochs").

Data pytree:

* ``"train_x"``: f32[S, N, ...] and ``"train_y"``: i32[S, N] (S stacked training sets);
* ``"eval"``: `{name: (x f32[M, ...], y i32[M])}` sets shared by every restart (e.g. the
  clean validation set).

Minibatches walk through a fresh permutation of the first `num_examples` examples every
epoch (the shuffling is part of the restart's key).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import engine
from jaxthesis.memorization import critical_samples as lass_lib
from jaxthesis.memorization.models import Model
from jaxthesis.memorization.regularizers import Regularization, weight_penalty
from jaxthesis.typing import Array, Params, PRNGKey, PyTree


class ClassifierHParams(NamedTuple):
  """Per-restart settings (scalars in a run, `[R]` at the Runner)."""
  dataset: Array        # i32: index into the stacked training sets
  width: Array          # i32: true hidden width (MLP)
  num_examples: Array   # i32: train on the first this many examples
  learning_rate: Array  # f32
  reg: Regularization


def classifier_hparams(num_restarts: int, *, dataset=0, width=1, num_examples=1,
                       learning_rate=0.01, reg: Optional[Regularization] = None
                       ) -> ClassifierHParams:
  """`[R]` hparams, each field broadcast from a scalar or taken from an `[R]` array."""
  if isinstance(num_restarts, bool) or not isinstance(num_restarts, (int, np.integer)) \
      or num_restarts < 1:
    raise ValueError(f"num_restarts must be a positive int, got {num_restarts!r}")

  def field(name, value, dtype):
    arr = np.asarray(value)
    if arr.ndim not in (0, 1) or (arr.ndim == 1 and arr.shape[0] != num_restarts):
      raise ValueError(f"{name} must be a scalar or have shape [{num_restarts}], got "
                       f"{arr.shape}")
    return jnp.asarray(np.broadcast_to(arr, (num_restarts,)).astype(dtype))

  lr = field("learning_rate", learning_rate, np.float32)
  if np.any(np.asarray(lr) <= 0) or not np.all(np.isfinite(np.asarray(lr))):
    raise ValueError(f"learning_rate must be > 0 and finite, got {np.asarray(lr)}")
  for name, value in (("width", width), ("num_examples", num_examples)):
    if np.any(np.asarray(value) < 1):
      raise ValueError(f"{name} must be >= 1, got {value}")
  if np.any(np.asarray(dataset) < 0):
    raise ValueError(f"dataset must be >= 0, got {dataset}")
  reg = reg if reg is not None else Regularization()
  reg = Regularization(*(field(f"reg.{n}", v, np.float32) for n, v in zip(reg._fields, reg)))
  return ClassifierHParams(dataset=field("dataset", dataset, np.int32),
                           width=field("width", width, np.int32),
                           num_examples=field("num_examples", num_examples, np.int32),
                           learning_rate=lr, reg=reg)


class ClassifierState(NamedTuple):
  params: Params
  model_state: PyTree
  velocity: Params
  shuffle_key: Array
  order: Array        # i32[N]: the example order of epoch `order_epoch` (`epoch_order`)
  order_epoch: Array  # i32: -1 before the first step


class AdversarialSearch(NamedTuple):
  """LASS settings for adversarial training (defaults: the thesis's, footnote 7)."""
  alpha: float = lass_lib.ALPHA
  beta: float = lass_lib.BETA
  radius: float = lass_lib.RADIUS
  max_iterations: int = lass_lib.MAX_ITERATIONS
  data_range: Optional[tuple[float, float]] = (0.0, 1.0)


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Per-example cross-entropy `−log softmax(logits)[label]`."""
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


def epoch_order(shuffle_key: PRNGKey, epoch, num_examples, max_examples: int) -> Array:
  """The example order of epoch `epoch`: `i32[max_examples]`, a fresh permutation.

  `n = num_examples` may be traced: the permutation sorts random keys of the first n
  indices before the rest, so its first n entries are a uniform permutation of range(n).
  """
  keys = jax.random.uniform(jax.random.fold_in(shuffle_key, epoch), (max_examples,))
  return jnp.argsort(jnp.where(jnp.arange(max_examples) < num_examples, keys, 2.0))


def _epoch_position(step, num_examples, batch_size: int):
  steps_per_epoch = jnp.maximum(num_examples // batch_size, 1)
  return step // steps_per_epoch, step % steps_per_epoch


def epoch_batch(shuffle_key: PRNGKey, step, num_examples, max_examples: int,
                batch_size: int) -> Array:
  """Indices of the minibatch at `step`: epochs are fresh permutations of `range(n)`
  (`epoch_order`). The last `n mod batch_size` examples of each epoch's order are skipped.
  """
  epoch, pos = _epoch_position(step, num_examples, batch_size)
  order = epoch_order(shuffle_key, epoch, num_examples, max_examples)
  return jax.lax.dynamic_slice(order, (pos * batch_size,), (batch_size,))


def make_classifier_task(model: Model, *, max_examples: int, batch_size: int,
                         momentum: float = 0.0, lr_halving_epochs: Optional[int] = None,
                         adversarial: Optional[AdversarialSearch] = None,
                         csr_points: int = 0, csr_search: Optional[AdversarialSearch] = None
                         ) -> engine.Task:
  """An engine `Task` training `model` with SGD on per-restart data and regularizers.

  Loss: `(1 − w)·mean CE(x) + w·mean CE(x̂) + weight_decay/2 ‖θ‖²`, with x̂ from LASS on
  the (regularizer-free) model when `adversarial` is given (w = `reg.adversarial`).
  `evaluate` reports `train_acc` on the restart's own training examples (noise
  included), `<name>_acc` on every evaluation set and, with `csr_points > 0`, the CSR of
  the first `csr_points` examples of the first evaluation set (LASS with `csr_search`).

  Args:
    model: a `Model` (`mlp(...)` or `small_cnn(...)`).
    max_examples: N, the size of the stacked training sets (static).
    batch_size: minibatch size.
    momentum: SGD momentum (0: plain SGD).
    lr_halving_epochs: halve the learning rate every this many epochs (None: constant).
    adversarial: LASS settings for adversarial training (None: no adversarial term).
    csr_points: validation points whose CSR `evaluate` measures (0: none).
    csr_search: LASS settings for the CSR (default: the thesis's).
  """
  if not isinstance(model, Model):
    raise TypeError(f"model must be a jaxthesis.memorization.models.Model, got "
                    f"{type(model).__name__}")
  for name, value in (("max_examples", max_examples), ("batch_size", batch_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if batch_size > max_examples:
    raise ValueError(f"batch_size ({batch_size}) must be <= max_examples ({max_examples})")
  if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
    raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
  if lr_halving_epochs is not None and (not isinstance(lr_halving_epochs, int)
                                        or lr_halving_epochs < 1):
    raise ValueError(f"lr_halving_epochs must be a positive int or None, got "
                     f"{lr_halving_epochs!r}")
  if isinstance(csr_points, bool) or not isinstance(csr_points, (int, np.integer)) \
      or csr_points < 0:
    raise ValueError(f"csr_points must be an int >= 0, got {csr_points!r}")
  csr_search = csr_search or AdversarialSearch()

  def logits_fn(params, model_state, width):
    return lambda z: model.apply(params, model_state, z, width, train=False)[0]

  def init(key, hp: ClassifierHParams, data) -> ClassifierState:
    model_key, shuffle_key = jax.random.split(key)
    params, model_state = model.init(model_key, hp.width)
    return ClassifierState(params, model_state,
                           jax.tree_util.tree_map(jnp.zeros_like, params), shuffle_key,
                           order=jnp.zeros(max_examples, jnp.int32),
                           order_epoch=jnp.int32(-1))

  def batch_indices(state: ClassifierState, t, hp: ClassifierHParams):
    """`epoch_batch`, with the epoch's order drawn once (at its first step) and kept in the
    state: a sort of N keys per epoch instead of per step. A real branch inside `lax.map`
    / `scan` (the CPU layout); under `vmap` both sides run, as before."""
    epoch, pos = _epoch_position(t, hp.num_examples, batch_size)
    order = jax.lax.cond(
        epoch == state.order_epoch, lambda: state.order,
        lambda: epoch_order(state.shuffle_key, epoch, hp.num_examples, max_examples
                            ).astype(jnp.int32))
    idx = jax.lax.dynamic_slice(order, (pos * batch_size,), (batch_size,))
    return idx, state._replace(order=order, order_epoch=jnp.asarray(epoch, jnp.int32))

  def step(state: ClassifierState, t, key, hp: ClassifierHParams, data):
    idx, state = batch_indices(state, t, hp)
    # One gather of the minibatch (indexing the data set first would copy it per restart).
    x, y = data["train_x"][hp.dataset, idx], data["train_y"][hp.dataset, idx]
    noise_key, adv_key = jax.random.split(key)
    if adversarial is not None:
      found = lass_lib.lass(logits_fn(state.params, state.model_state, hp.width), x, adv_key,
                            alpha=adversarial.alpha, beta=adversarial.beta,
                            radius=adversarial.radius,
                            max_iterations=adversarial.max_iterations,
                            data_range=adversarial.data_range)
      x_adv = jax.lax.stop_gradient(found.points)
    w = hp.reg.adversarial

    def loss_fn(params):
      logits, model_state = model.apply(params, state.model_state, x, hp.width, train=True,
                                        reg=hp.reg, key=noise_key)
      clean = jnp.mean(cross_entropy(logits, y))
      data_loss = clean
      if adversarial is not None:
        adv_logits, _ = model.apply(params, state.model_state, x_adv, hp.width, train=True,
                                    reg=hp.reg, key=jax.random.fold_in(noise_key, 1))
        data_loss = (1.0 - w) * clean + w * jnp.mean(cross_entropy(adv_logits, y))
      penalty = weight_penalty(hp.reg, params)
      acc = jnp.mean(jnp.argmax(logits, -1) == y)
      return data_loss + penalty, (model_state, clean, penalty, acc)

    (loss, (model_state, clean, penalty, acc)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    lr = hp.learning_rate
    if lr_halving_epochs is not None:
      lr = lr * 0.5 ** (state.order_epoch // lr_halving_epochs)
    velocity = jax.tree_util.tree_map(lambda v, g: momentum * v + g, state.velocity, grads)
    params = jax.tree_util.tree_map(lambda p, v: p - lr * v, state.params, velocity)
    state = state._replace(params=params, model_state=model_state, velocity=velocity)
    return state, {"loss": loss, "cross_entropy": clean, "weight_penalty": penalty}, \
        {"batch_acc": acc}

  def accuracy(state, hp, x, y):
    logits = logits_fn(state.params, state.model_state, hp.width)(x)
    return jnp.argmax(logits, -1) == y

  def evaluate(state: ClassifierState, hp: ClassifierHParams, data):
    train_x, train_y = data["train_x"][hp.dataset], data["train_y"][hp.dataset]
    used = jnp.arange(max_examples) < hp.num_examples
    correct = accuracy(state, hp, train_x, train_y)
    out = {"train_acc": jnp.sum(correct * used) / jnp.sum(used)}
    for name, (x, y) in data.get("eval", {}).items():
      out[f"{name}_acc"] = jnp.mean(accuracy(state, hp, x, y))
    if csr_points:
      name, (x, _) = next(iter(data["eval"].items()))
      out[f"{name}_csr"] = lass_lib.critical_sample_ratio(
          logits_fn(state.params, state.model_state, hp.width), x[:csr_points],
          jax.random.fold_in(state.shuffle_key, 7), alpha=csr_search.alpha,
          beta=csr_search.beta, radius=csr_search.radius,
          max_iterations=csr_search.max_iterations, data_range=csr_search.data_range)
    return out

  return engine.Task(init=init, step=step, evaluate=evaluate)


def per_example_correct(model: Model, state: ClassifierState, width, x: Array, y: Array
                        ) -> tuple[Array, Array]:
  """`(loss f32[N], correct bool[N])` of one run's model on `(x, y)` (evaluation mode)."""
  logits = model.apply(state.params, state.model_state, x, width, train=False)[0]
  return cross_entropy(logits, y), jnp.argmax(logits, -1) == y
