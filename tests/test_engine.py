"""The compiled training engine: vmap over restarts, scan over steps, resume, guards."""
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxthesis import engine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quadratic_task(step_fn_wrapper=lambda f: f):
  """Noisy SGD on ‖θ − target‖²: state is (θ, opt_state); hparams is the learning rate."""
  opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)

  def init(key, lr, data):
    theta = jax.random.normal(key, (3,))
    state = opt.init(theta)
    state.hyperparams["learning_rate"] = lr
    return theta, state

  def step(state, t, key, lr, data):
    theta, opt_state = state
    noise = 0.01 * jax.random.normal(key, (3,))
    loss, grad = jax.value_and_grad(lambda th: jnp.sum((th - data) ** 2))(theta)
    updates, opt_state = opt.update(grad + noise, opt_state)
    return (optax.apply_updates(theta, updates), opt_state), {"loss": loss}, {"t": t * 1.0}

  def evaluate(state, lr, data):
    return {"dist": jnp.linalg.norm(state[0] - data)}

  return engine.Task(init, step_fn_wrapper(step), evaluate)


TARGET = jnp.array([1.0, -2.0, 0.5])


def test_matches_a_python_loop_per_restart():
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  lrs = jnp.array([0.05, 0.1, 0.2])
  runner = engine.Runner(quadratic_task(), 23, eval_every=5, chunk_size=7, progress=False)
  result = runner.run(keys, lrs, TARGET)
  task = quadratic_task()
  for r in range(3):  # reference: one restart at a time, one step at a time
    state = task.init(keys[r], lrs[r], TARGET)
    for t in range(23):
      state, losses, _ = task.step(state, t, jax.random.fold_in(keys[r], t), lrs[r], TARGET)
      np.testing.assert_allclose(result.history.losses["loss"][r, t], losses["loss"], rtol=1e-5)
    np.testing.assert_allclose(result.state[0][r], state[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(result.history.eval_steps, [0, 5, 10, 15, 20, 23])
  np.testing.assert_allclose(result.history.metrics["t"][0], np.arange(23))
  final = jnp.linalg.norm(result.state[0] - TARGET, axis=-1)
  np.testing.assert_allclose(result.history.evals["dist"][:, -1], final, rtol=1e-5)


def test_second_call_does_not_retrace():
  traces = {"n": 0}

  def counting(step):
    def wrapped(*args):
      traces["n"] += 1  # runs only while JAX traces the step
      return step(*args)
    return wrapped

  runner = engine.Runner(quadratic_task(counting), 10, chunk_size=4, progress=False)
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  first = runner.run(keys, jnp.array([0.1, 0.2]), TARGET)
  after_first = traces["n"]
  assert 1 <= after_first <= 2  # the scan body traces the step (and its output shapes) once
  second = runner.run(jax.random.split(jax.random.PRNGKey(2), 2), jnp.array([0.3, 0.05]), TARGET)
  assert traces["n"] == after_first, "the second run retraced the compiled step"
  assert not np.allclose(first.history.losses["loss"], second.history.losses["loss"])
  # The same holds with chex's own guard around the whole compiled chunk.
  guarded = engine.Runner(quadratic_task(), 10, chunk_size=4, progress=False)
  guarded._chunk = jax.jit(chex.assert_max_traces(guarded._run_chunk, n=1), donate_argnums=(0,))
  guarded.run(keys, jnp.array([0.1, 0.2]), TARGET)
  guarded.run(keys, jnp.array([0.2, 0.2]), TARGET)


def test_runners_of_one_task_share_the_compiled_init():
  """A second Runner for the same Task (another layout or step count) does not trace and
  compile the vmapped init again; the runs still agree."""
  traces = {"n": 0}
  task = quadratic_task()
  init = task.init

  def counting_init(key, lr, data):
    traces["n"] += 1
    return init(key, lr, data)

  task = task._replace(init=counting_init)
  keys = jax.random.split(jax.random.PRNGKey(1), 2)
  a = engine.Runner(task, 6, progress=False, restart_axis="vmap").run(keys, jnp.array([0.1, 0.2]),
                                                                      TARGET)
  assert traces["n"] == 1
  b = engine.Runner(task, 6, progress=False, restart_axis="map").run(keys, jnp.array([0.1, 0.2]),
                                                                     TARGET)
  assert traces["n"] == 1
  np.testing.assert_allclose(a.history.losses["loss"], b.history.losses["loss"], rtol=1e-6)


def test_nonfinite_loss_names_step_term_and_restart():
  def init(key, hp, data):
    return jnp.zeros(())

  def step(state, t, key, hp, data):
    bad = jnp.where((t == 6) & (hp > 1), jnp.nan, 1.0)
    return state + 1, {"loss": bad, "penalty": bad * 2}, {}

  runner = engine.Runner(engine.Task(init, step), 10, chunk_size=4, progress=False)
  with pytest.raises(FloatingPointError, match=r"step 6 \(restart 1\).*loss=nan.*penalty=nan"):
    runner.run(jax.random.split(jax.random.PRNGKey(0), 2), jnp.array([0.0, 2.0]))


def test_resume_after_kill_gives_the_same_result(tmp_path):
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  lrs = jnp.array([0.05, 0.1])
  straight = engine.Runner(quadratic_task(), 20, eval_every=3, chunk_size=5,
                           progress=False).run(keys, lrs, TARGET)

  class Killed(Exception):
    pass

  calls = {"n": 0}
  runner = engine.Runner(quadratic_task(), 20, eval_every=3, chunk_size=5, progress=False)
  chunk = runner._chunk

  def dying_chunk(*args):  # the process "dies" after two chunks were checkpointed
    calls["n"] += 1
    if calls["n"] == 3:
      raise Killed()
    return chunk(*args)

  runner._chunk = dying_chunk
  with pytest.raises(Killed):
    runner.run(keys, lrs, TARGET, checkpoint_dir=str(tmp_path), fingerprint={"lr": "a"})
  fresh = engine.Runner(quadratic_task(), 20, eval_every=3, chunk_size=5, progress=False)
  calls_before = {"n": 0}
  inner = fresh._chunk

  def counting_chunk(*args):
    calls_before["n"] += 1
    return inner(*args)

  fresh._chunk = counting_chunk
  resumed = fresh.run(keys, lrs, TARGET, checkpoint_dir=str(tmp_path), fingerprint={"lr": "a"})
  assert calls_before["n"] == 2  # chunks 3 and 4 only
  np.testing.assert_array_equal(resumed.state[0], straight.state[0])
  for k in straight.history.losses:
    np.testing.assert_array_equal(resumed.history.losses[k], straight.history.losses[k])
  for k in straight.history.evals:
    np.testing.assert_array_equal(resumed.history.evals[k], straight.history.evals[k])
  with pytest.raises(ValueError, match="another configuration"):
    fresh.run(keys, lrs, TARGET, checkpoint_dir=str(tmp_path), fingerprint={"lr": "b"})


def test_bad_arguments_are_named():
  task = quadratic_task()
  with pytest.raises(ValueError, match="num_steps"):
    engine.Runner(task, 0)
  with pytest.raises(TypeError, match="task"):
    engine.Runner(lambda: None, 3)
  runner = engine.Runner(task, 3, progress=False)
  with pytest.raises(ValueError, match="hparams has restart axis 3, keys has 2"):
    runner.run(jax.random.split(jax.random.PRNGKey(0), 2), jnp.ones(3), TARGET)
  with pytest.raises(ValueError, match="keys must be"):
    runner.run(jnp.zeros((2, 3), jnp.uint32), jnp.ones(2), TARGET)


@pytest.mark.parametrize("field", ["init", "step", "evaluate"])
def test_task_fields_must_be_callable(field):
  """A non-callable field is named when the Task is built, and again by the Runner when a
  Task was rebuilt with `_replace` (which bypasses the constructor)."""
  task = quadratic_task()
  with pytest.raises(TypeError, match=f"task.{field} must be callable, got str"):
    engine.Task(**{**task._asdict(), field: "not a function"})
  with pytest.raises(TypeError, match=f"task.{field} must be callable, got int"):
    engine.Runner(task._replace(**{field: 3}), 3, progress=False)
  if field == "evaluate":
    assert engine.Task(task.init, task.step).evaluate is None  # optional, may be None
  else:
    with pytest.raises(TypeError, match=f"task.{field} must be callable, got NoneType"):
      engine.Task(**{**task._asdict(), field: None})


MULTI_DEVICE_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from jaxthesis import engine
    from test_engine import quadratic_task, TARGET
    keys = jax.random.split(jax.random.PRNGKey(4), 8)
    lrs = jnp.linspace(0.02, 0.2, 8)
    many = engine.Runner(quadratic_task(), 15, chunk_size=5, progress=False).run(keys, lrs, TARGET)
    shardings = {{str(x.sharding) for x in jax.tree_util.tree_leaves(many.state)}}
    n_devices = {{len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(many.state)}}
    one = engine.Runner(quadratic_task(), 15, chunk_size=5, progress=False,
                        devices=jax.devices()[:1]).run(keys, lrs, TARGET)
    np.testing.assert_allclose(many.history.losses["loss"], one.history.losses["loss"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(many.state[0]), np.asarray(one.state[0]), rtol=1e-5)
    print(json.dumps({{"devices": sorted(n_devices)}}))
""")


def test_eight_simulated_devices_match_one_device():
  script = MULTI_DEVICE_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '"devices": [8]' in out.stdout  # the restart axis really was split over 8 devices
