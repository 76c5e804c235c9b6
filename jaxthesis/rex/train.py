"""Training a classifier across domains with ERM, IRMv1, V-REx, MM-REx, RI or GroupDRO.

`make_domain_task` turns a method name and a domain sampler into an engine `Task`
(`jaxthesis.engine`): each step draws the training domains stacked as `[m, n, d]`,
computes the m per-domain risks in one vmapped pass, forms the objective

    loss = (base(R) + l2 · ‖θ‖² + w(t) · penalty(R)) / max(w(t), 1),

with `w(t)` = 1 before `penalty_anneal_iters` and `penalty_weight` after (the IRM/REx
reference schedule), and takes one Adam step. All tunables are per-restart arrays in
`DomainHParams`, so restarts and hyperparameter sweeps are one vmapped program.

The method's (base, penalty) comes from the registry `objectives.OBJECTIVES`; with R the
vector of training risks and m its length:

| method   | base                     | penalty                           |
|----------|--------------------------|-----------------------------------|
| erm      | pooled risk (Eq. 5.3)    | none                              |
| irm      | mean_e R_e               | mean_e IRMv1 penalty              |
| vrex     | mean_e R_e               | Var(R) (Eq. 5.8 divided by m, β = m·w) |
| mmrex    | mean_e R_e               | max R − mean R (Eq. 5.7, w = 1 − m λ_min) |
| ri       | max_e R_e (Eq. 5.5)      | none                              |
| groupdro | Σ_e q_e R_e, q by exponentiated gradient | none               |

The classifier is a `DomainModel` (init/apply pair reading its own tunables from the
restart's hparams): by default the flax `MLP` of thesis 5.4.1; the random search passes
the masked-width MLP (`rex.search.make_search_task`), so both share this one step.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import _checks, engine
from jaxthesis.nn import MLP, squared_norm
from jaxthesis.rex import objectives as obj
from jaxthesis.typing import Array, Params, PRNGKey, PyTree

METHODS = tuple(obj.OBJECTIVES)
IRM_ESTIMATORS = obj.IRM_ESTIMATORS

# (key, data) -> (x f32[m, n, d], y f32[m, n], mask f32[m, n])
DomainSampler = Callable[[PRNGKey, PyTree], tuple[Array, Array, Array]]
# (key, data) -> {name: (x f32[n, d], y f32[n][, mask f32[n]])}: fixed evaluation sets
EvalSampler = Callable[[PRNGKey, PyTree], dict[str, tuple[Array, Array]]]


class DomainHParams(NamedTuple):
  """Per-restart tunables (each f32[] inside a run, f32[R] when handed to the Runner)."""
  learning_rate: Array
  l2_weight: Array
  penalty_weight: Array
  penalty_anneal_iters: Array
  groupdro_eta: Array


def domain_hparams(num_restarts: int, *, learning_rate, l2_weight, penalty_weight=0.0,
                   penalty_anneal_iters=0, groupdro_eta=0.01) -> DomainHParams:
  """Broadcasts scalars (or `[R]` sweeps) to a `DomainHParams` with leading axis R."""
  if not isinstance(num_restarts, int) or num_restarts < 1:
    raise ValueError(f"num_restarts must be a positive int, got {num_restarts!r}")
  values = dict(learning_rate=learning_rate, l2_weight=l2_weight, penalty_weight=penalty_weight,
                penalty_anneal_iters=penalty_anneal_iters, groupdro_eta=groupdro_eta)
  out = {}
  for name, v in values.items():
    arr = np.asarray(v, np.float32)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.shape[0] != num_restarts):
      raise ValueError(f"{name} must be a scalar or have shape [{num_restarts}], got {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
      raise ValueError(f"{name} must be finite and >= 0, got {v}")
    out[name] = jnp.broadcast_to(jnp.asarray(arr), (num_restarts,))
  if np.any(np.asarray(out["learning_rate"]) <= 0):
    raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
  return DomainHParams(**out)


class DomainState(NamedTuple):
  params: Params
  opt_state: optax.OptState
  objective: PyTree  # the objective's state (`()`, or `GroupDROState` for GroupDRO)
  data_key: Array    # u32[2]: the restart's key for fixed data draws


class DomainModel(NamedTuple):
  """A binary classifier as pure functions of the restart's hparams.

  Attributes:
    init: `(key, hparams) -> params`.
    apply: `(params, x f32[..., d], hparams) -> logits f32[...]`.
  """
  init: Callable[[PRNGKey, PyTree], Params]
  apply: Callable[[Params, Array, PyTree], Array]


def mlp_model(hidden: int, input_dim: int, depth: int = 2) -> DomainModel:
  """The flax `MLP` `input_dim → hidden → ... → 1` (depth hidden layers) of thesis 5.4.1."""
  for name, value in (("hidden", hidden), ("input_dim", input_dim), ("depth", depth)):
    _checks.check_positive_int(name, value)
  net = MLP(hidden=(int(hidden),) * int(depth))
  return DomainModel(
      init=lambda key, hp: net.init(key, jnp.zeros((1, int(input_dim)), jnp.float32)),
      apply=lambda params, x, hp: net.apply(params, x)[..., 0])


def _accuracy(logits: Array, labels: Array, mask: Optional[Array] = None) -> Array:
  return obj.masked_mean(((logits > 0) == (labels > 0.5)).astype(jnp.float32), mask)


def make_domain_task(method: str, *, num_domains: int, sample_train: DomainSampler,
                     sample_eval: EvalSampler, population: bool,
                     hidden: Optional[int] = None, input_dim: Optional[int] = None,
                     depth: int = 2, model: Optional[DomainModel] = None,
                     reset_optimizer_at_anneal: bool = False,
                     post_anneal_lr_scale: float = 1.0,
                     irm_estimator: str = "biased",
                     input_transform: Optional[Callable[[Array], Array]] = None) -> engine.Task:
  """An engine `Task` training a classifier across stacked domains.

  Args:
    method: one of `METHODS` (the keys of `objectives.OBJECTIVES`).
    num_domains: m, number of training domains.
    sample_train: `(key, data) -> (x [m, n, d], y [m, n], mask [m, n])`.
    sample_eval: `(key, data) -> {name: (x [n, d], y [n][, mask [n]])}`, drawn with the
      restart's fixed data key.
    population: redraw the training domains every step (`fold_in(key, step)`) instead of
      once per restart.
    hidden, input_dim, depth: the default model, `mlp_model(hidden, input_dim, depth)`:
      a ReLU MLP `input_dim → hidden → ... → 1` with `depth` hidden layers.
    model: any `DomainModel` instead (then leave `hidden` and `input_dim` unset); its
      init/apply receive the restart's hparams, so e.g. a width can be a per-restart
      array (`rex.search.make_search_task`).
    reset_optimizer_at_anneal: re-initialize Adam when the penalty weight switches on
      (DomainBed's choice) instead of keeping its moments.
    post_anneal_lr_scale: the learning rate is `learning_rate · post_anneal_lr_scale` from
      `penalty_anneal_iters` on (1.0: one learning rate throughout, the reference code).
    irm_estimator: 'biased' (square of one gradient) or 'unbiased' (split-batch product).
    input_transform: applied to every sampled input (e.g. `to_grayscale`).

  Hparams (per restart) are `DomainHParams`, or any NamedTuple with its fields (plus
  whatever `model` reads).
  """
  _checks.check_choice("method", method, METHODS)
  _checks.check_choice("irm_estimator", irm_estimator, IRM_ESTIMATORS)
  _checks.check_positive_int("num_domains", num_domains)
  _checks.check_scalar("post_anneal_lr_scale", post_anneal_lr_scale, positive=True)
  post_anneal_lr_scale = float(post_anneal_lr_scale)
  _checks.check_callable("sample_train", sample_train)
  _checks.check_callable("sample_eval", sample_eval)
  _checks.check_callable("input_transform", input_transform, optional=True)
  if model is None:
    if hidden is None or input_dim is None:
      raise ValueError("make_domain_task needs hidden and input_dim (the default MLP) or a "
                       f"model; got hidden={hidden!r}, input_dim={input_dim!r}")
    model = mlp_model(hidden, input_dim, depth)
  else:
    if hidden is not None or input_dim is not None:
      raise ValueError("pass either model or hidden/input_dim, not both; got a model and "
                       f"hidden={hidden!r}, input_dim={input_dim!r}")
    if not isinstance(model, DomainModel):
      raise TypeError(f"model must be a DomainModel (init/apply), got {type(model).__name__}")
    _checks.check_callable("model.init", model.init)
    _checks.check_callable("model.apply", model.apply)
  objective = obj.make_objective(method, irm_estimator=irm_estimator)
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  transform = input_transform or (lambda x: x)

  def make_opt_state(params, hp):
    state = optimizer.init(params)
    state.hyperparams["learning_rate"] = hp.learning_rate
    return state

  def init(key, hp, data) -> DomainState:
    model_key, data_key = jax.random.split(key)
    params = model.init(model_key, hp)
    return DomainState(params=params, opt_state=make_opt_state(params, hp),
                       objective=objective.init(num_domains), data_key=data_key)

  def step(state: DomainState, t, key, hp, data):
    x, y, mask = sample_train(key if population else state.data_key, data)
    x = transform(x)
    y, mask = jnp.asarray(y, jnp.float32), jnp.asarray(mask, jnp.float32)
    sizes = jnp.sum(mask, axis=1)
    weight = obj.penalty_weight_at(t, hp.penalty_weight, hp.penalty_anneal_iters)

    def loss_fn(params):
      logits = model.apply(params, x, hp)  # [m, n]
      risks = obj.domain_risks(obj.binary_cross_entropy, logits, y, mask)
      (base, penalty), objective_state = objective.update(
          obj.ObjectiveInputs(risks=risks, sizes=sizes, logits=logits, labels=y, mask=mask),
          state.objective, hp)
      l2 = hp.l2_weight * squared_norm(params)
      loss = obj.penalized_loss(base, penalty, weight, extra=l2)
      acc = jax.vmap(_accuracy)(logits, y, mask)
      return loss, (base, penalty, l2, risks, acc, objective_state)

    (loss, (base, penalty, l2, risks, acc, objective_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    opt_state = state.opt_state
    if reset_optimizer_at_anneal:
      fresh = make_opt_state(state.params, hp)
      at_anneal = t == hp.penalty_anneal_iters.astype(jnp.int32)
      opt_state = jax.tree_util.tree_map(lambda a, b: jnp.where(at_anneal, a, b), fresh, opt_state)
    if post_anneal_lr_scale != 1.0:
      lr = hp.learning_rate * jnp.where(t >= hp.penalty_anneal_iters, post_anneal_lr_scale, 1.0)
      opt_state = opt_state._replace(
          hyperparams={**opt_state.hyperparams, "learning_rate": lr.astype(jnp.float32)})
    updates, opt_state = optimizer.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    losses = {"loss": loss, "base": base, "penalty": penalty, "l2": l2}
    metrics = {"train_acc": jnp.sum(acc * sizes) / jnp.sum(sizes),
               "train_nll": jnp.mean(risks), "penalty_weight": weight}
    for e in range(num_domains):  # m named scalars: the metrics dict is static
      metrics[f"risk_{e}"] = risks[e]
    return (state._replace(params=params, opt_state=opt_state, objective=objective_state),
            losses, metrics)

  def evaluate(state: DomainState, hp, data):
    out = {}
    for name, (x, y, *mask) in sample_eval(state.data_key, data).items():
      mask = jnp.asarray(mask[0], jnp.float32) if mask else None
      y = jnp.asarray(y, jnp.float32)
      logits = model.apply(state.params, transform(x), hp)
      out[f"{name}_acc"] = _accuracy(logits, y, mask)
      out[f"{name}_nll"] = obj.masked_mean(obj.binary_cross_entropy(logits, y), mask)
    return out

  return engine.Task(init=init, step=step, evaluate=evaluate)
