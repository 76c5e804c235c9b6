"""Bad input at the REx Python API (issue 14): named errors before tracing.

Two groups: callables are checked where they are received, and one rule for integer
arrays in every objective (see the `jaxthesis.rex` docstring): values a gradient is taken
through (logits, risks, model parameters) must be floating point — TypeError naming the
argument; labels, masks, domain sizes and probability tables may be integer or bool and
are cast.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import engine, sweeps
from jaxthesis.rex import objectives as obj
from jaxthesis.rex import search, sem, toy, train

BCE = obj.binary_cross_entropy
Z2 = jnp.array([[0.5, -1.0, 2.0, 0.1], [1.5, 0.3, -0.7, 0.2]])   # logits [m=2, n=4]
Y2 = jnp.array([[1, 0, 1, 1], [0, 1, 1, 0]], jnp.int32)           # integer labels
M2 = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)                # bool mask
R3 = jnp.array([0.3, 1.1, 0.7])


def _sampler(key, data):  # never called: the checks fire first
  raise AssertionError("a sampler was called before the arguments were checked")


TASK_ARGS = dict(num_domains=2, sample_train=_sampler, sample_eval=_sampler, population=True)


# ------------------------------------------------------------------------- callables


@pytest.mark.parametrize("call,name", [
    (lambda: obj.domain_risks("bce", Z2, Y2), "loss_fn"),
    (lambda: obj.irmv1_penalty(None, Z2[0], Y2[0]), "loss_fn"),
    (lambda: obj.irmv1_penalty_unbiased(3, Z2[0], Y2[0]), "loss_fn"),
    (lambda: obj.irm_objective(loss_fn="bce"), "loss_fn"),
    (lambda: train.make_domain_task("erm", hidden=4, input_dim=3,
                                    **{**TASK_ARGS, "sample_train": "draw"}), "sample_train"),
    (lambda: train.make_domain_task("erm", hidden=4, input_dim=3,
                                    **{**TASK_ARGS, "sample_eval": None}), "sample_eval"),
    (lambda: train.make_domain_task("erm", hidden=4, input_dim=3, input_transform="gray",
                                    **TASK_ARGS), "input_transform"),
    (lambda: train.make_domain_task("erm", model=train.DomainModel("init", lambda *a: 0),
                                    **TASK_ARGS), "model.init"),
    (lambda: train.make_domain_task("erm", model=train.DomainModel(lambda *a: 0, 1),
                                    **TASK_ARGS), "model.apply"),
    (lambda: search.make_search_task("vrex", width=4, width_limit=8, input_dim=3,
                                     **{**TASK_ARGS, "sample_train": 1.0}), "sample_train"),
    (lambda: sweeps.index_data(lambda: None), "task"),
    (lambda: sweeps.with_step_limit("task"), "task"),
    (lambda: engine.Task(init=_sampler, step="step"), "task.step"),
])
def test_non_callables_are_named_where_received(call, name):
  with pytest.raises(TypeError, match=rf"^{name.replace('.', '[.]')} must be"):
    call()


def test_task_arguments_are_checked_at_construction_not_at_trace_time():
  """A bad sampler used to surface as "'str' object is not callable" inside Runner.run."""
  with pytest.raises(TypeError, match="sample_train must be callable, got str"):
    train.make_domain_task("vrex", hidden=4, input_dim=3,
                           **{**TASK_ARGS, "sample_train": "cmnist"})
  with pytest.raises(ValueError, match="either model or hidden/input_dim"):
    train.make_domain_task("vrex", hidden=4, input_dim=3, model=train.mlp_model(4, 3),
                           **TASK_ARGS)
  with pytest.raises(ValueError, match="needs hidden and input_dim"):
    train.make_domain_task("vrex", hidden=4, **TASK_ARGS)
  with pytest.raises(TypeError, match="model must be a DomainModel"):
    train.make_domain_task("vrex", model=(lambda *a: 0, lambda *a: 0), **TASK_ARGS)


# ---------------------------------------------------------------------- integer arrays


@pytest.mark.parametrize("call,name", [
    (lambda: BCE(jnp.array([1, -2]), jnp.array([1.0, 0.0])), "logits"),
    (lambda: obj.domain_risks(BCE, Z2.astype(jnp.int32), Y2), "logits"),
    (lambda: obj.irmv1_penalty(BCE, jnp.array([1, 2, 0]), jnp.ones(3)), "logits"),
    (lambda: obj.irmv1_penalty_unbiased(BCE, jnp.array([1, 2, 0, 3]), jnp.ones(4)), "logits"),
    (lambda: obj.erm(jnp.array([1, 2])), "risks"),
    (lambda: obj.variance_penalty(jnp.array([1, 2])), "risks"),
    (lambda: obj.vrex(jnp.array([1, 2]), 1.0), "risks"),
    (lambda: obj.minimax_penalty(jnp.array([True, False])), "risks"),
    (lambda: obj.mmrex(np.array([1, 2]), -1.0), "risks"),
    (lambda: obj.risk_interpolation(np.array([1, 2], np.int64)), "risks"),
    (lambda: obj.groupdro_update(obj.groupdro_init(2), jnp.array([1, 2]), 0.1), "risks"),
    (lambda: toy.six_d_objective("rex", jnp.array([0, 1, 0]), jnp.zeros(3), jnp.ones((3, 6)),
                                 1.0), "logits"),
    (lambda: toy.six_d_objective("irm", jnp.zeros(3), jnp.array([0, 1, 0]), jnp.ones((3, 6)),
                                 1.0), "capacity_logits"),
    (lambda: toy.covariate_shift_risk(jnp.array([0, 1]), 0.5), "p"),
    (lambda: sem.domain_moments(jnp.ones((4, 3), jnp.int32), jnp.ones(4)), "inputs"),
])
def test_integer_values_under_a_gradient_are_rejected_by_name(call, name):
  with pytest.raises(TypeError, match=rf"^{name} must be a floating-point array, got dtype"):
    call()


def test_integer_and_bool_labels_masks_and_sizes_are_cast():
  fy, fm = Y2.astype(jnp.float32), M2.astype(jnp.float32)
  np.testing.assert_allclose(obj.domain_risks(BCE, Z2, Y2, M2), obj.domain_risks(BCE, Z2, fy, fm),
                             rtol=1e-6)
  for penalty in (obj.irmv1_penalty, obj.irmv1_penalty_unbiased):
    np.testing.assert_allclose(penalty(BCE, Z2[0], Y2[0], M2[0]), penalty(BCE, Z2[0], fy[0], fm[0]),
                               rtol=1e-6)
  np.testing.assert_allclose(BCE(Z2, Y2), BCE(Z2, fy), rtol=1e-6)
  np.testing.assert_allclose(obj.erm(R3, jnp.array([3, 1, 2])), obj.erm(R3, jnp.array([3.0, 1, 2])),
                             rtol=1e-6)
  # Scalar hyperparameters may be Python ints; probabilities may be Python numbers.
  np.testing.assert_allclose(obj.vrex(R3, 10), obj.vrex(R3, 10.0), rtol=1e-6)
  np.testing.assert_allclose(toy.covariate_shift_risk(1, 0), toy.covariate_shift_risk(1.0, 0.0))
  # The gradient with integer labels is the float-label gradient.
  g = lambda y: jax.grad(lambda z: obj.irmv1_penalty(BCE, z, y))(Z2[1])
  np.testing.assert_allclose(g(Y2[1]), g(fy[1]), rtol=1e-6)


@pytest.mark.parametrize("call,error,match", [
    (lambda: obj.domain_risks(BCE, Z2, np.asarray(Y2).astype(str)), TypeError,
     "labels must be a real"),
    (lambda: obj.domain_risks(BCE, Z2, Y2, jnp.ones((2, 3))), ValueError, "mask must have the shape"),
    (lambda: obj.irmv1_penalty(BCE, Z2[0], Y2[0], -jnp.ones(4)), ValueError, "mask must be >= 0"),
    (lambda: obj.groupdro_update((0.0, 0.0), R3, 0.1), TypeError, "state must be a GroupDROState"),
    (lambda: obj.make_objective("rex"), ValueError, "method must be one of"),
    (lambda: obj.make_objective("irm", irm_estimator="exact"), ValueError, "irm_estimator"),
    (lambda: obj.OBJECTIVES["vrex"].init(0), ValueError, "num_domains must be a positive int"),
    (lambda: toy.six_d_objective("rex", jnp.zeros(4), jnp.zeros(3), jnp.ones((3, 6)), 1.0),
     ValueError, r"logits must have shape \(3,\)"),
    (lambda: toy.six_d_objective("rex", jnp.zeros(3), jnp.zeros(3), jnp.ones((3, 5)), 1.0),
     ValueError, r"domains must be \[m, 6\]"),
    # an empty domain once gave a risk of 0 (V-REx, MM-REx, RI saw a perfect domain)
    (lambda: obj.domain_risks(BCE, Z2, Y2, jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]])), ValueError,
     r"mask leaves domain\(s\) \[1\] empty"),
    (lambda: obj.erm(R3, jnp.zeros(3)), ValueError, "domain_sizes must not all be zero"),
    (lambda: obj.penalty_weight_at(5, -3.0, 2), ValueError, "penalty_weight must be >= 0"),
    (lambda: obj.penalty_weight_at(5, 3.0, -2), ValueError, "penalty_anneal_iters must be >= 0"),
])
def test_other_bad_values_are_named(call, error, match):
  with pytest.raises(error, match=match):
    call()
