"""Loss-sensitivity through unrolled SGD (3.3.2, Figs. 3.3, 3.4) and the Gini coefficient.

Let θ_t be the parameters after t SGD updates and L_t the loss of the minibatch met at step
t, at θ_t. The loss-sensitivity of a training example x that was used in one of the K
updates before t is

    g_x^t = ‖∂L_t / ∂x‖₁,

the effect of x on L_t through the parameter updates it took part in. It is computed as
the thesis does (after Maclaurin et al.): unroll the K SGD updates from θ_{t−K} with the
past minibatches' inputs as arguments and backpropagate L_t through them. ḡ_x is the
average of g_x^t over the steps at which x was inside the unrolled window.

The class-specific version (Fig. 3.4) splits L_t into the cross-entropy terms of each
class, `L_t = Σ_i L_t(y=i)`, and averages `‖∂L_t(y=i)/∂x‖₁` over the examples x of class j:
that is ḡ_ij.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks, engine
from jaxthesis.memorization.models import mlp_apply, mlp_init
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey

PerExampleLoss = Callable[[Params, Array, Array], Array]  # (θ, x[B, ...], y[B]) -> f32[B]


def gini(values: ArrayLike, mask: Optional[ArrayLike] = None) -> Array:
  """Gini coefficient of non-negative values (0: all equal; (n−1)/n: one holds everything).

  `G = Σ_i (2i − n − 1) v_(i) / (n Σ_i v_i)` over the values sorted ascending (i = 1..n),
  which equals `Σ_ij |v_i − v_j| / (2 n Σ_i v_i)`. With `mask`, only the masked-in values
  count. Returns 0 when the values sum to zero.
  """
  _checks.check_rank("values", values, 1)
  _checks.check_nonempty("values", values)
  _checks.check_nonnegative("values", values)
  v = jnp.asarray(values, jnp.float32)
  if mask is None:
    mask = jnp.ones(v.shape, bool)
  else:
    _checks.check_same_shape("values", values, "mask", mask)
    mask = jnp.asarray(mask, bool)
  n = v.shape[0]
  m = jnp.sum(mask)
  ordered = jnp.sort(jnp.where(mask, v, -jnp.inf))
  valid = jnp.isfinite(ordered)
  ranks = jnp.arange(1, n + 1) - (n - m)  # ranks 1..m among the masked-in values
  ordered = jnp.where(valid, ordered, 0.0)
  total = jnp.sum(ordered)
  numerator = jnp.sum(jnp.where(valid, (2 * ranks - m - 1) * ordered, 0.0))
  return jnp.where(total > 0, numerator / (jnp.maximum(m, 1) * total), 0.0)


def sgd_unroll(loss_fn: PerExampleLoss, params: Params, xs: Array, ys: Array,
               learning_rate: ArrayLike, valid: Optional[Array] = None) -> Params:
  """θ after plain SGD steps `θ ← θ − η ∇_θ mean_b ℓ(θ; x_b, y_b)` on `xs[k], ys[k]`, k = 0..K−1.

  Steps with `valid[k] = False` are skipped (θ unchanged).
  """
  if _checks.is_concrete(learning_rate):  # may be a traced per-restart value
    _check_lr(learning_rate)
  if valid is None:
    valid = jnp.ones(xs.shape[0], bool)

  def body(p, batch):
    x, y, ok = batch
    grads = jax.grad(lambda q: jnp.mean(loss_fn(q, x, y)))(p)
    return jax.tree_util.tree_map(lambda a, g: jnp.where(ok, a - learning_rate * g, a),
                                  p, grads), None

  return jax.lax.scan(body, params, (xs, ys, valid))[0]


class Sensitivity(NamedTuple):
  """`‖∂L_t/∂x‖₁` for every example x of the unrolled past minibatches."""
  total: Array                # f32[K, B]: of the whole loss L_t
  per_class: Optional[Array]  # f32[C, K, B]: of the class terms L_t(y=i), i < C (or None)


def loss_sensitivity(loss_fn: PerExampleLoss, params: Params, past_x: Array, past_y: Array,
                     current_x: Array, current_y: Array, learning_rate: ArrayLike, *,
                     valid: Optional[Array] = None, num_classes: Optional[int] = None
                     ) -> Sensitivity:
  """Loss-sensitivity g_x^t of the past examples by differentiating through K SGD updates.

  `L_t = mean_b ℓ(θ_t; current_x_b, current_y_b)` with `θ_t = sgd_unroll(θ_{t−K}, past)`.

  Args:
    loss_fn: per-example loss `(θ, x[B, ...], y[B]) -> f32[B]`.
    params: θ_{t−K}, the parameters before the first unrolled update.
    past_x: f32[K, B, ...] the inputs of the K past minibatches (oldest first).
    past_y: [K, B] their labels.
    current_x, current_y: the minibatch L_t is measured on.
    learning_rate: SGD step size of the unrolled updates.
    valid: optional bool[K]: past steps that happened (earlier ones are skipped).
    num_classes: if given, also the class-specific sensitivities for classes 0..C−1
      (`total` still counts every example of the current minibatch, labels ≥ C included).

  Returns:
    `Sensitivity(total f32[K, B], per_class f32[C, K, B] or None)`.
  """
  _checks.check_floating("past_x", past_x)
  if np.ndim(past_x) < 3:
    raise ValueError(f"past_x must be [K, B, ...] (rank >= 3), got shape {np.shape(past_x)}")
  if np.shape(past_y) != np.shape(past_x)[:2]:
    raise ValueError(f"past_y must have shape {np.shape(past_x)[:2]}, got {np.shape(past_y)}")
  if np.shape(current_y) != np.shape(current_x)[:1]:
    raise ValueError(f"current_y must have shape {np.shape(current_x)[:1]}, got "
                     f"{np.shape(current_y)}")
  if num_classes is not None and (not isinstance(num_classes, (int, np.integer))
                                  or num_classes < 1):
    raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}")

  def class_losses(xs):
    theta = sgd_unroll(loss_fn, params, xs, past_y, learning_rate, valid)
    losses = loss_fn(theta, current_x, current_y) / current_y.shape[0]
    if num_classes is None:
      return jnp.sum(losses)
    # Row C collects the labels >= C (unique-class data has more classes than the class
    # matrix): segment_sum drops ids outside [0, C), and L_t must keep their terms.
    return jax.ops.segment_sum(losses, jnp.minimum(current_y, num_classes),
                               num_segments=num_classes + 1)

  l1 = lambda g: jnp.sum(jnp.abs(g.reshape(g.shape[:-past_x.ndim + 2] + (-1,))), axis=-1)
  if num_classes is None:
    return Sensitivity(l1(jax.grad(class_losses)(past_x)), None)
  jac = jax.jacrev(class_losses)(past_x)  # [C + 1, K, B, ...]
  total = jnp.sum(jac, axis=0)
  return Sensitivity(l1(total), l1(jac[:num_classes]))


# ------------------------------------------------------ the Fig. 3.3 / 3.4 training task


def masked_cross_entropy(logits: Array, labels: Array, num_classes: Array) -> Array:
  """Per-example cross-entropy over the first `num_classes` logits (the rest are masked)."""
  keep = jnp.arange(logits.shape[-1]) < num_classes
  logp = jax.nn.log_softmax(jnp.where(keep, logits, -1e9), axis=-1)
  return -jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]


class SensitivityHParams(NamedTuple):
  """Per-restart settings (scalars in a run, `[R]` at the Runner)."""
  dataset: Array      # i32: which of the stacked data sets this run trains on
  num_classes: Array  # i32: classes in use (10, or N for unique-class labels)


class SensitivityState(NamedTuple):
  params: Params
  past_params: Params   # leaves [K, ...]: θ before each of the last K updates (oldest first)
  past_index: Array     # i32[K, B]: their minibatches
  past_valid: Array     # bool[K]
  sum_g: Array          # f32[N]: Σ_t g_x^t
  count: Array          # f32[N]: number of g_x^t summed
  class_sum: Array      # f32[C, C]: Σ ‖∂L_t(y=i)/∂x‖₁ over x of class j, at [i, j]
  class_count: Array    # f32[C]: number of such x of class j
  shuffle_key: Array


def make_sensitivity_task(*, num_examples: int, input_dim: int, max_classes: int,
                          width: int = 16, batch_size: int = 10, learning_rate: float = 0.01,
                          unroll: int = 1, class_matrix_size: int = 10) -> engine.Task:
  """Trains the 2-layer MLP with SGD and accumulates ḡ_x and ḡ_ij along the way (Fig. 3.3).

  Data: `{"inputs": f32[S, N, input_dim], "labels": i32[S, N]}` (S stacked data sets,
  picked per restart by `SensitivityHParams.dataset`). Minibatches walk through a fresh
  permutation every epoch. Every step first measures the sensitivities of the last
  `unroll` minibatches' examples to the current minibatch's loss, then takes the update.
  `evaluate` reports the Gini coefficient of ḡ over the examples measured so far and the
  training accuracy.
  """
  for name, value in (("num_examples", num_examples), ("input_dim", input_dim),
                      ("max_classes", max_classes), ("width", width),
                      ("batch_size", batch_size), ("unroll", unroll),
                      ("class_matrix_size", class_matrix_size)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  if batch_size > num_examples:
    raise ValueError(f"batch_size ({batch_size}) must be <= num_examples ({num_examples})")
  _check_lr(learning_rate)
  steps_per_epoch = num_examples // batch_size
  c = class_matrix_size

  def batch_index(shuffle_key, t):
    epoch, pos = t // steps_per_epoch, t % steps_per_epoch
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), num_examples)
    return jax.lax.dynamic_slice(order, (pos * batch_size,), (batch_size,))

  def init(key, hp: SensitivityHParams, data):
    model_key, shuffle_key = jax.random.split(key)
    params = mlp_init(model_key, input_dim, max_classes, width)
    stacked = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (unroll,) + a.shape), params)
    return SensitivityState(
        params=params, past_params=stacked,
        past_index=jnp.zeros((unroll, batch_size), jnp.int32),
        past_valid=jnp.zeros(unroll, bool), sum_g=jnp.zeros(num_examples),
        count=jnp.zeros(num_examples), class_sum=jnp.zeros((c, c)),
        class_count=jnp.zeros(c), shuffle_key=shuffle_key)

  def step(state: SensitivityState, t, key, hp: SensitivityHParams, data):
    del key
    # Gather minibatches only (indexing the data set first would copy it per restart).
    inputs = lambda i: data["inputs"][hp.dataset, i]
    labels = lambda i: data["labels"][hp.dataset, i]
    loss_fn = lambda p, x, y: masked_cross_entropy(mlp_apply(p, x), y, hp.num_classes)
    idx = batch_index(state.shuffle_key, t)
    x, y = inputs(idx), labels(idx)
    first = jax.tree_util.tree_map(lambda a: a[0], state.past_params)
    sens = loss_sensitivity(loss_fn, first, inputs(state.past_index), labels(state.past_index),
                            x, y, learning_rate, valid=state.past_valid, num_classes=c)
    weight = state.past_valid[:, None].astype(jnp.float32) * jnp.ones_like(sens.total)
    flat_idx = state.past_index.reshape(-1)
    sum_g = state.sum_g.at[flat_idx].add((sens.total * weight).reshape(-1))
    count = state.count.at[flat_idx].add(weight.reshape(-1))
    past_labels = labels(state.past_index).reshape(-1)
    in_matrix = (past_labels < c) & (weight.reshape(-1) > 0)
    col = jnp.where(in_matrix, past_labels, 0)
    per_class = sens.per_class.reshape(c, -1) * in_matrix
    class_sum = state.class_sum.at[:, col].add(per_class)
    class_count = state.class_count.at[col].add(in_matrix.astype(jnp.float32))

    loss, grads = jax.value_and_grad(lambda p: jnp.mean(loss_fn(p, x, y)))(state.params)
    params = jax.tree_util.tree_map(lambda a, g: a - learning_rate * g, state.params, grads)
    roll = lambda buf, new: jnp.concatenate([buf[1:], new[None]], axis=0)
    state = state._replace(
        params=params,
        past_params=jax.tree_util.tree_map(roll, state.past_params, state.params),
        past_index=roll(state.past_index, idx),
        past_valid=roll(state.past_valid, jnp.bool_(True)),
        sum_g=sum_g, count=count, class_sum=class_sum, class_count=class_count)
    return state, {"loss": loss}, {}

  def evaluate(state: SensitivityState, hp: SensitivityHParams, data):
    inputs, labels = data["inputs"][hp.dataset], data["labels"][hp.dataset]
    logits = mlp_apply(state.params, inputs)
    keep = jnp.arange(max_classes) < hp.num_classes
    correct = jnp.argmax(jnp.where(keep, logits, -jnp.inf), axis=-1) == labels
    measured = state.count > 0
    g_bar = jnp.where(measured, state.sum_g / jnp.maximum(state.count, 1), 0.0)
    return {"gini": gini(g_bar, measured), "train_acc": jnp.mean(correct)}

  return engine.Task(init=init, step=step, evaluate=evaluate)


def mean_sensitivity(state: SensitivityState) -> tuple[Array, Array]:
  """`(ḡ_x f32[..., N], ḡ_ij f32[..., C, C])` from a (possibly restart-stacked) state."""
  g_bar = state.sum_g / jnp.maximum(state.count, 1)
  class_bar = state.class_sum / jnp.maximum(state.class_count, 1)[..., None, :]
  return g_bar, class_bar


def _check_lr(learning_rate) -> None:
  if np.ndim(learning_rate) != 0 or not float(learning_rate) > 0:
    raise ValueError(f"learning_rate must be a positive scalar, got {learning_rate!r}")
