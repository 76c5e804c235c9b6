"""Contract suite: every entry of `rex.objectives.OBJECTIVES` must pass these (thesis 5.3).

Each objective is driven the way `train.make_domain_task` drives it: logits `[m, n]` ->
per-domain risks (`domain_risks`) -> `update(inputs, state, hparams)` -> `(base, penalty)`
-> `penalized_loss(base, penalty, w)`. Logits are drawn at a moderate scale (σ = 3), not
only near zero, and labels at random.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxthesis.rex import objectives as obj
from jaxthesis.rex import train

M, N = 3, 8


def _pooled(inp):
  return obj.erm(inp.risks, inp.sizes)


# What each registry entry is at penalty weight 0 (GroupDRO: at step size η = 0, from the
# uniform weights), by definition; None where the definition is not ERM.
AT_WEIGHT_ZERO = {
    "erm": _pooled,
    "irm": _pooled,
    "vrex": _pooled,
    "mmrex": _pooled,
    "ri": None,        # the worst risk max_e R_e (Eq. 5.5) at every weight
    "groupdro": _pooled,
}
# Every registry entry, plus the option the registry's defaults leave out.
CASES = {**obj.OBJECTIVES, "irm[unbiased]": obj.irm_objective("unbiased")}
assert set(AT_WEIGHT_ZERO) == set(obj.OBJECTIVES)


def test_every_registry_entry_is_covered():
  assert set(AT_WEIGHT_ZERO) == set(obj.OBJECTIVES) == set(train.METHODS)
  assert set(obj.OBJECTIVES) <= set(CASES)
  for name, objective in obj.OBJECTIVES.items():
    assert isinstance(objective, obj.Objective), name


def _problem(seed=0, dtype=jnp.float32, scale=3.0, sizes=(N, N, N)):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
  logits = (scale * jax.random.normal(k1, (M, N))).astype(dtype)
  labels = jax.random.bernoulli(k2, 0.5, (M, N)).astype(dtype)
  mask = (jnp.arange(N)[None, :] < jnp.asarray(sizes)[:, None]).astype(dtype)
  # A GroupDRO state away from uniform, so order invariance is tested on real weights.
  log_q = jax.nn.log_softmax(jax.random.normal(k3, (M,)))
  return logits, labels, mask, log_q


def _hparams(eta=0.3):
  return train.DomainHParams(*(jnp.float32(v) for v in (1e-3, 0.0, 0.0, 0.0, eta)))


def _state(name, log_q):
  state = CASES[name].init(M)
  return obj.GroupDROState(log_q=log_q) if isinstance(state, obj.GroupDROState) else state


def _terms(name, logits, labels, mask, state, hparams):
  risks = obj.domain_risks(obj.binary_cross_entropy, logits, labels, mask)
  inputs = obj.ObjectiveInputs(risks=risks, sizes=jnp.sum(mask, 1), logits=logits,
                               labels=labels, mask=mask)
  return CASES[name].update(inputs, state, hparams), inputs


def _loss(name, weight, hparams=None):
  def loss(logits, labels, mask, state):
    ((base, penalty), _), _ = _terms(name, logits, labels, mask, state, hparams or _hparams())
    return obj.penalized_loss(base, penalty, weight)
  return loss


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradients_are_finite_and_match_finite_differences(name):
  for scale, sizes in ((3.0, (N, N, N)), (30.0, (N, 5, 2))):  # moderate and extreme logits
    logits, labels, mask, log_q = _problem(1, scale=scale, sizes=sizes)
    grad = jax.jit(jax.grad(_loss(name, 10.0)))(logits, labels, mask, _state(name, log_q))
    assert bool(jnp.all(jnp.isfinite(grad))), (name, scale)
    assert float(jnp.abs(grad).max()) > 0.0
  if name == "groupdro":
    # The weights q are held fixed in the gradient (Sagawa et al.): dL/dz = d(Σ q_e R_e)/dz
    # with q the updated weights, not the derivative of the loss's value through q.
    logits, labels, mask, log_q = _problem(2)
    state = _state(name, log_q)
    (_, new_state), _ = _terms(name, logits, labels, mask, state, _hparams())
    q = jnp.exp(new_state.log_q)
    weighted = lambda z: jnp.sum(q * obj.domain_risks(obj.binary_cross_entropy, z, labels,
                                                       mask)) / 10.0  # / max(w, 1)
    np.testing.assert_allclose(jax.grad(_loss(name, 10.0))(logits, labels, mask, state),
                               jax.grad(weighted)(logits), rtol=1e-5, atol=1e-7)
    return
  with jax.enable_x64(True):  # central differences in float64
    logits, labels, mask, log_q = _problem(2, dtype=jnp.float64, sizes=(N, 6, 4))
    state = _state(name, log_q)
    f = jax.jit(lambda z: _loss(name, 10.0)(z, labels, mask, state))
    check_grads(f, (logits,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5, eps=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_invariant_to_the_order_of_domains(name):
  logits, labels, mask, log_q = _problem(3, sizes=(N, 5, 7))
  perm = np.array([2, 0, 1])
  (terms, state), _ = _terms(name, logits, labels, mask, _state(name, log_q), _hparams())
  (terms_p, state_p), _ = _terms(name, logits[perm], labels[perm], mask[perm],
                                 _state(name, log_q[perm]), _hparams())
  np.testing.assert_allclose(terms_p, terms, rtol=1e-6, atol=1e-7)
  for got, want in zip(jax.tree_util.tree_leaves(state_p), jax.tree_util.tree_leaves(state)):
    np.testing.assert_allclose(got, want[perm], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_erm_at_penalty_weight_zero(name):
  """Equal domain sizes, so ERM's pooled risk is the mean of the domain risks."""
  base_name = name.split("[")[0]
  logits, labels, mask, _ = _problem(4)
  state = CASES[name].init(M)  # GroupDRO: uniform weights
  hp = _hparams(eta=0.0)
  ((base, penalty), _), inputs = _terms(name, logits, labels, mask, state, hp)
  loss = obj.penalized_loss(base, penalty, 0.0)
  reference = AT_WEIGHT_ZERO[base_name]
  if reference is None:  # RI: its definition, the worst domain risk
    np.testing.assert_allclose(loss, jnp.max(inputs.risks), rtol=1e-6)
    return
  np.testing.assert_allclose(loss, reference(inputs), rtol=1e-6)
  erm_loss = lambda z: _loss("erm", 0.0, hp)(z, labels, mask, ())
  np.testing.assert_allclose(jax.grad(_loss(name, 0.0, hp))(logits, labels, mask, state),
                             jax.grad(erm_loss)(logits), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", sorted(CASES))
def test_vmaps_over_restarts_with_traced_hparams(name):
  """Under jit and vmap over (logits, state, hparams), as the engine's restart axis runs it,
  each restart gets what it gets alone."""
  logits, labels, mask, log_q = _problem(5)
  logits_r = jnp.stack([logits, 0.5 * logits])
  state = _state(name, log_q)
  states = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), state)
  hps = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), _hparams())
  run = jax.jit(jax.vmap(lambda z, s, hp: _terms(name, z, labels, mask, s, hp)[0]))
  (batched, _) = run(logits_r, states, hps)
  for r in range(2):
    hp_r = jax.tree_util.tree_map(lambda a: a[r], hps)
    (alone, _), _ = _terms(name, logits_r[r], labels, mask, state, hp_r)
    np.testing.assert_allclose(jnp.stack(batched)[:, r], jnp.stack(alone), rtol=1e-5, atol=1e-7)
