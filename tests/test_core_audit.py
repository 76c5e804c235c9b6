"""Defects found in an audit of the engine, sweeps, vi, nn and data modules: each test
failed before its fix."""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import engine, sweeps, vi
from jaxthesis.data import load_tabular
from jaxthesis.nn import MLP, bucket_width


def _counter_task(loss_fn=lambda s, t, hp: {"loss": s * 1.0}, metric_fn=lambda s, t: {}):
  def init(key, hp, data):
    return jnp.zeros(())

  def step(state, t, key, hp, data):
    return state + 1, loss_fn(state, t, hp), metric_fn(state, t)

  def evaluate(state, hp, data):
    return {"state": state * 1.0}

  return engine.Task(init, step, evaluate)


KEYS = jax.random.split(jax.random.PRNGKey(0), 2)


# ------------------------------------------------------------------------------ engine


@pytest.mark.parametrize("kwargs,needle", [
    (dict(num_steps=True), "num_steps"),
    (dict(num_steps=4, eval_every=True), "eval_every"),
    (dict(num_steps=4, chunk_size=True), "chunk_size"),
    (dict(num_steps=4.0), "num_steps"),
])
def test_runner_rejects_bools_as_counts(kwargs, needle):
  num_steps = kwargs.pop("num_steps")
  with pytest.raises(ValueError, match=f"{needle} must be a positive int"):
    engine.Runner(_counter_task(), num_steps, progress=False, **kwargs)


def test_restart_mesh_rejects_bad_restart_counts():
  for bad in (True, 0, -2):
    with pytest.raises(ValueError, match="num_restarts must be a positive int"):
      engine.restart_mesh(bad)
  assert engine.restart_mesh(1).shape["restarts"] == 1


def test_nonfinite_message_names_only_the_terms_bad_at_the_named_restart():
  """Restart 0's loss and restart 1's penalty go bad at the same step: the message names
  restart 0 and its loss, not restart 1's penalty (which is finite at restart 0)."""
  def losses(state, t, hp):
    return {"loss": jnp.where((t == 3) & (hp == 0), jnp.nan, 1.0),
            "penalty": jnp.where((t == 3) & (hp == 1), jnp.inf, 1.0)}

  runner = engine.Runner(_counter_task(losses), 6, chunk_size=6, progress=False)
  with pytest.raises(FloatingPointError) as info:
    runner.run(KEYS, jnp.arange(2))
  assert str(info.value) == "non-finite loss at step 3 (restart 0): loss=nan"

  # Two terms bad at the same step and restart are both named; an earlier step wins.
  def both(state, t, hp):
    return {"loss": jnp.where((t >= 4) & (hp == 1), jnp.nan, 1.0),
            "penalty": jnp.where((t >= 2) & (hp == 1), jnp.inf, 1.0),
            "l2": jnp.where((t >= 2) & (hp == 1), jnp.nan, 1.0)}

  with pytest.raises(FloatingPointError,
                     match=r"^non-finite loss at step 2 \(restart 1\): l2=nan, penalty=inf$"):
    engine.Runner(_counter_task(both), 6, chunk_size=3, progress=False).run(KEYS, jnp.arange(2))


@pytest.mark.parametrize("loss_fn,metric_fn,error,needle", [
    (lambda s, t, hp: {"loss": jnp.ones(3)}, lambda s, t: {}, ValueError,
     r"losses\['loss'\] must be a scalar, got shape \(3,\)"),
    (lambda s, t, hp: {"loss": s}, lambda s, t: {"acc": jnp.ones(2)}, ValueError,
     r"metrics\['acc'\] must be a scalar, got shape \(2,\)"),
    (lambda s, t, hp: s, lambda s, t: {}, TypeError, "losses as a dict"),
])
def test_step_outputs_must_be_dicts_of_scalars(loss_fn, metric_fn, error, needle):
  """Before, a vector loss met a numpy broadcast error and a bare loss an unhashable-type
  error, neither naming the term."""
  runner = engine.Runner(_counter_task(loss_fn, metric_fn), 4, progress=False)
  with pytest.raises(error, match=needle):
    runner.run(KEYS)


def test_resuming_under_another_eval_every_is_refused(tmp_path):
  """Before, the resumed run kept the old evaluation history (5 columns) next to the new
  eval_steps (3 entries): a history whose columns no longer say when they were taken."""
  def stop_at_4(state, t, hp):
    return {"loss": jnp.where(t >= 4, jnp.nan, 1.0)}

  with pytest.raises(FloatingPointError):  # killed after the first chunk was saved
    engine.Runner(_counter_task(stop_at_4), 8, eval_every=2, chunk_size=4,
                  progress=False).run(KEYS, checkpoint_dir=str(tmp_path))
  resumed = engine.Runner(_counter_task(), 8, eval_every=4, chunk_size=4, progress=False)
  with pytest.raises(engine.CheckpointMismatchError, match="another configuration"):
    resumed.run(KEYS, checkpoint_dir=str(tmp_path))
  # The same eval_every resumes; so does a directory written before eval_every was recorded.
  meta_path = tmp_path / "run_meta.json"
  meta = json.loads(meta_path.read_text())
  assert meta["eval_every"] == 2
  del meta["eval_every"]
  meta_path.write_text(json.dumps(meta))
  result = engine.Runner(_counter_task(), 8, eval_every=2, chunk_size=4,
                         progress=False).run(KEYS, checkpoint_dir=str(tmp_path))
  np.testing.assert_array_equal(result.history.eval_steps, [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(result.history.evals["state"][0], [0, 2, 4, 6, 8])
  np.testing.assert_array_equal(result.history.losses["loss"][0, :4], 1.0)  # first chunk kept
  np.testing.assert_array_equal(result.history.losses["loss"][0, 4:], [4, 5, 6, 7])


# ------------------------------------------------------------------------------ sweeps


def test_sweep_hparams_reject_bools_and_scalar_leaves():
  with pytest.raises(ValueError, match="num_datasets must be a positive int"):
    sweeps.indexed_hparams(None, np.array([0, 0]), True)
  # A scalar hparams leaf (no restart axis) was an IndexError from np.shape(x)[0].
  with pytest.raises(ValueError, match="hparams: every leaf needs the leading restart axis"):
    sweeps.indexed_hparams({"lr": 0.1}, np.array([0, 1]), 2)
  with pytest.raises(ValueError, match="hparams: every leaf needs the leading restart axis"):
    sweeps.step_limited_hparams({"lr": jnp.float32(0.1)}, np.array([3, 4]))
  ok = sweeps.step_limited_hparams({"lr": jnp.ones(2)}, np.array([3, 4]))
  np.testing.assert_array_equal(ok.num_steps, [3, 4])


# ---------------------------------------------------------------------------------- vi


@pytest.mark.parametrize("call,error,needle", [
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(3), kl_weight=-0.5), ValueError, "kl_weight"),
    (lambda: vi.elbo(jnp.ones(3), jnp.ones(3), likelihood_weight=-1.0), ValueError,
     "likelihood_weight"),
    (lambda: vi.elbo(jnp.ones(0), jnp.ones(0)), ValueError, "at least one sample"),
    (lambda: vi.elbo(jnp.ones((0, 3)), jnp.ones((0, 3)), axis=0), ValueError,
     r"at least one sample along axis=0.*log_likelihood \(0, 3\)"),
    (lambda: vi.linear_anneal(-1, 100, 0.0, 0.5), ValueError, "step must be >= 0"),
    (lambda: vi.linear_anneal(True, 100, 0.0, 0.5), TypeError, "step"),
])
def test_vi_rejects_negative_weights_empty_terms_and_bad_steps(call, error, needle):
  """Before: a negative β flipped the KL term's sign, an empty sample axis averaged to nan,
  a negative step gave a weight below `start` (here -0.02), all silently."""
  with pytest.raises(error, match=needle):
    call()


def test_vi_checks_leave_valid_and_traced_calls_alone():
  ll, lq = jnp.arange(6.0).reshape(2, 3), jnp.ones((2, 3))
  np.testing.assert_allclose(vi.elbo(ll, lq, axis=1), [0.0, 3.0])
  assert vi.elbo(ll[:, :0], lq[:, :0], axis=0).shape == (0,)  # nothing averaged is empty
  assert float(vi.elbo(jnp.float32(2.0), jnp.float32(0.5))) == 1.5
  traced = jax.jit(lambda b, t: vi.elbo(ll, lq, kl_weight=b) + vi.linear_anneal(t, 10, 0.0, 1.0))
  np.testing.assert_allclose(traced(jnp.float32(0.5), jnp.int32(5)), 2.5 - 0.5 + 0.5)
  assert float(vi.linear_anneal(0, 10, 0.25, 1.0)) == 0.25


# ---------------------------------------------------------------------------------- nn


@pytest.mark.parametrize("kwargs,error,needle", [
    (dict(hidden=(0,)), ValueError, r"hidden\[0\] must be a positive int, got 0"),
    (dict(hidden=(8, -2)), ValueError, r"hidden\[1\] must be a positive int, got -2"),
    (dict(hidden=(True,)), ValueError, r"hidden\[0\] must be a positive int, got True"),
    (dict(hidden=(2.5,)), ValueError, r"hidden\[0\]"),
    (dict(hidden=(4,), out=0), ValueError, "out must be a positive int"),
    (dict(hidden=24), TypeError, "hidden must be a sequence"),
])
def test_mlp_rejects_bad_widths_naming_them(kwargs, error, needle):
  """Before: ZeroDivisionError, an MLIR error, a width-1 layer for True, a shape error."""
  with pytest.raises(error, match=needle):
    MLP(**kwargs).init(jax.random.PRNGKey(0), jnp.zeros((2, 3)))


def test_mlp_accepts_numpy_int_widths():
  params = MLP(hidden=(np.int64(4),), out=2).init(jax.random.PRNGKey(0), jnp.zeros((2, 3)))
  assert params["params"]["Dense_0"]["kernel"].shape == (3, 4)


@pytest.mark.parametrize("per_octave", [1, 2, 3, 4, 8])
def test_bucket_width_is_the_smallest_grid_point_at_or_above_h(per_octave):
  """The docstring's definition, by enumeration of the grid. Before, h = 3 went to 4 and
  h = 182 to 256 with per_octave = 2, although ceil(2^1.5) = 3 and ceil(2^7.5) = 182."""
  grid = np.unique(np.ceil(2.0 ** (np.arange(0, 20 * per_octave) / per_octave)))
  hidden = np.arange(1, 5000, dtype=np.int32)
  want = grid[np.searchsorted(grid, hidden)]
  np.testing.assert_array_equal(bucket_width(hidden, per_octave), want)
  if per_octave == 2:
    np.testing.assert_array_equal(bucket_width(np.array([3, 6, 182, 183])), [3, 6, 182, 256])


# -------------------------------------------------------------------------------- data


def test_power_noise_is_drawn_in_the_published_order(tmp_path):
  """MAF's power.py draws the voltage noise (0.01 U, column 1) before the global-active-
  power noise (0.001 U, column 0); drawing them the other way round changed both columns'
  noise, so the splits did not match the published ones."""
  rng = np.random.default_rng(1)
  data = rng.normal(size=(300, 8))
  os.makedirs(tmp_path / "power")
  np.save(tmp_path / "power" / "data.npy", data)

  # The published preprocessing, step by step (Papamakarios et al. 2017, datasets/power.py).
  ref = data.copy()
  stream = np.random.RandomState(42)
  stream.shuffle(ref)
  n = ref.shape[0]
  ref = np.delete(np.delete(ref, 3, axis=1), 1, axis=1)
  voltage_noise = 0.01 * stream.rand(n, 1)
  gap_noise = 0.001 * stream.rand(n, 1)
  sm_noise = stream.rand(n, 3)
  ref = ref + np.hstack((gap_noise, voltage_noise, sm_noise, np.zeros((n, 1))))
  n_test = int(0.1 * n)
  test, rest = ref[-n_test:], ref[:-n_test]
  n_valid = int(0.1 * rest.shape[0])
  valid, train = rest[-n_valid:], rest[:-n_valid]
  both = np.vstack((train, valid))
  mu, sd = both.mean(axis=0), both.std(axis=0)

  splits = load_tabular("power", str(tmp_path))
  for got, want in zip(splits[:3], (train, valid, test)):
    np.testing.assert_allclose(got, ((want - mu) / sd).astype(np.float32), rtol=1e-6, atol=1e-6)
