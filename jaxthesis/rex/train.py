"""Training a classifier across domains with ERM, IRMv1, V-REx, MM-REx, RI or GroupDRO.

`make_domain_task` turns a method name and a domain sampler into an engine `Task`
(`jaxthesis.engine`): each step draws the training domains stacked as `[m, n, d]`,
computes the m per-domain risks in one vmapped pass, forms the objective

    loss = (base(R) + l2 · ‖θ‖² + w(t) · penalty(R)) / max(w(t), 1),

with `w(t)` = 1 before `penalty_anneal_iters` and `penalty_weight` after (the IRM/REx
reference schedule), and takes one Adam step. All tunables are per-restart arrays in
`DomainHParams`, so restarts and hyperparameter sweeps are one vmapped program.

Per method, with R the vector of training risks and m its length:

| method   | base                     | penalty                           |
|----------|--------------------------|-----------------------------------|
| erm      | pooled risk (eq 5.3)     | none                              |
| irm      | mean_e R_e               | mean_e IRMv1 penalty              |
| vrex     | mean_e R_e               | Var(R) (eq 5.8 divided by m, β = m·w) |
| mmrex    | mean_e R_e               | max R − mean R (eq 5.7, w = 1 − m λ_min) |
| ri       | max_e R_e (eq 5.5)       | none                              |
| groupdro | Σ_e q_e R_e, q by exponentiated gradient | none               |
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxthesis import engine
from jaxthesis.nn import MLP, squared_norm
from jaxthesis.rex import objectives as obj
from jaxthesis.typing import Array, Params, PRNGKey, PyTree

METHODS = ("erm", "irm", "vrex", "mmrex", "ri", "groupdro")
IRM_ESTIMATORS = ("biased", "unbiased")

# (key, data, step) -> (x f32[m, n, d], y f32[m, n], mask f32[m, n])
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
  dro: obj.GroupDROState
  data_key: Array  # u32[2]: the restart's key for fixed data draws


def _accuracy(logits: Array, labels: Array, mask: Optional[Array] = None) -> Array:
  return obj.masked_mean(((logits > 0) == (labels > 0.5)).astype(jnp.float32), mask)


def objective_terms(method: str, risks: Array, sizes: Array, irm_penalties: Optional[Array],
                    dro: obj.GroupDROState, dro_eta: Array):
  """`(base, penalty, new_dro_state)` of `method` for the vector of domain risks."""
  zero = jnp.zeros((), risks.dtype)
  if method == "erm":
    return obj.erm(risks, sizes), zero, dro
  if method == "irm":
    return jnp.mean(risks), jnp.mean(irm_penalties), dro
  if method == "vrex":
    return jnp.mean(risks), obj.variance_penalty(risks), dro
  if method == "mmrex":
    return jnp.mean(risks), obj.minimax_penalty(risks), dro
  if method == "ri":
    return obj.risk_interpolation(risks), zero, dro
  if method == "groupdro":
    loss, dro = obj.groupdro_update(dro, risks, dro_eta)
    return loss, zero, dro
  raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")


def make_domain_task(method: str, *, hidden: int, input_dim: int, num_domains: int,
                     sample_train: DomainSampler, sample_eval: EvalSampler,
                     population: bool, depth: int = 2,
                     reset_optimizer_at_anneal: bool = False,
                     irm_estimator: str = "biased",
                     input_transform: Optional[Callable[[Array], Array]] = None) -> engine.Task:
  """An engine `Task` training an MLP classifier across stacked domains.

  Args:
    method: one of `METHODS`.
    hidden: width H of the `input → H → ... → 1` ReLU MLP.
    input_dim: d, the width of the sampled inputs after `input_transform`.
    num_domains: m, number of training domains.
    sample_train: `(key, data) -> (x [m, n, d], y [m, n], mask [m, n])`.
    sample_eval: `(key, data) -> {name: (x [n, d], y [n])}`, drawn with the restart's
      fixed data key.
    population: redraw the training domains every step (`fold_in(key, step)`) instead of
      once per restart.
    depth: number of hidden layers.
    reset_optimizer_at_anneal: re-initialize Adam when the penalty weight switches on
      (DomainBed's choice) instead of keeping its moments.
    irm_estimator: 'biased' (square of one gradient) or 'unbiased' (split-batch product).
    input_transform: applied to every sampled input (e.g. `to_grayscale`).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
  if irm_estimator not in IRM_ESTIMATORS:
    raise ValueError(f"irm_estimator must be one of {IRM_ESTIMATORS}; got {irm_estimator!r}")
  for name, value in (("hidden", hidden), ("input_dim", input_dim),
                      ("num_domains", num_domains), ("depth", depth)):
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{name} must be a positive int, got {value!r}")
  model = MLP(hidden=(int(hidden),) * depth)
  optimizer = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
  transform = input_transform or (lambda x: x)
  irm_fn = obj.irmv1_penalty if irm_estimator == "biased" else obj.irmv1_penalty_unbiased

  def make_opt_state(params, hp):
    state = optimizer.init(params)
    state.hyperparams["learning_rate"] = hp.learning_rate
    return state

  def init(key, hp: DomainHParams, data) -> DomainState:
    model_key, data_key = jax.random.split(key)
    params = model.init(model_key, jnp.zeros((1, input_dim), jnp.float32))
    return DomainState(params=params, opt_state=make_opt_state(params, hp),
                       dro=obj.groupdro_init(num_domains), data_key=data_key)

  def logits_of(params, x):
    return model.apply(params, x)[..., 0]

  def step(state: DomainState, t, key, hp: DomainHParams, data):
    x, y, mask = sample_train(key if population else state.data_key, data)
    x = transform(x)
    sizes = jnp.sum(mask, axis=1)
    weight = obj.penalty_weight_at(t, hp.penalty_weight, hp.penalty_anneal_iters)

    def loss_fn(params):
      logits = logits_of(params, x)  # [m, n]
      risks = obj.domain_risks(obj.binary_cross_entropy, logits, y, mask)
      irm = (jax.vmap(lambda z, l, k: irm_fn(obj.binary_cross_entropy, z, l, k))(logits, y, mask)
             if method == "irm" else None)
      base, penalty, dro = objective_terms(method, risks, sizes, irm, state.dro, hp.groupdro_eta)
      l2 = hp.l2_weight * squared_norm(params)
      loss = obj.penalized_loss(base, penalty, weight, extra=l2)
      acc = jax.vmap(_accuracy)(logits, y, mask)
      return loss, (base, penalty, l2, risks, acc, dro)

    (loss, (base, penalty, l2, risks, acc, dro)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    opt_state = state.opt_state
    if reset_optimizer_at_anneal:
      fresh = make_opt_state(state.params, hp)
      at_anneal = t == hp.penalty_anneal_iters.astype(jnp.int32)
      opt_state = jax.tree_util.tree_map(lambda a, b: jnp.where(at_anneal, a, b), fresh, opt_state)
    updates, opt_state = optimizer.update(grads, opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    losses = {"loss": loss, "base": base, "penalty": penalty, "l2": l2}
    metrics = {"train_acc": jnp.sum(acc * sizes) / jnp.sum(sizes),
               "train_nll": jnp.mean(risks), "penalty_weight": weight}
    for e in range(num_domains):
      metrics[f"risk_{e}"] = risks[e]
    return state._replace(params=params, opt_state=opt_state, dro=dro), losses, metrics

  def evaluate(state: DomainState, hp: DomainHParams, data):
    out = {}
    for name, (x, y, *mask) in sample_eval(state.data_key, data).items():
      mask = mask[0] if mask else None
      logits = logits_of(state.params, transform(x))
      out[f"{name}_acc"] = _accuracy(logits, y, mask)
      out[f"{name}_nll"] = obj.masked_mean(obj.binary_cross_entropy(logits, y), mask)
    return out

  return engine.Task(init=init, step=step, evaluate=evaluate)
