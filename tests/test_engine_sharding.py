"""The engine's restart-axis formulations and its 2-D ("restarts", "data") mesh.

* `restart_axis="map"` (lax.map over restarts) computes the same program as "vmap".
* On 8 simulated CPU devices (a subprocess, XLA_FLAGS set before jax is imported), a
  REx task (`rex.make_domain_task` on Colored MNIST built from small random digits) and a
  NAF task (the maximum-likelihood fit of a DSF flow) give the results of one device on a
  2 x 4 and a 1 x 8 mesh, the data really is split over "data", XLA reduces the
  gradients itself (an all-reduce in the compiled step), and a batch the data shards do
  not divide is refused with an error naming the leaf.
"""
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxthesis import engine, flows
from jaxthesis.experiments.naf._common import flow_task
from jaxthesis.rex import colored_mnist, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_cmnist(num_train: int = 64, num_test: int = 16):
  """Colored MNIST from random 28 x 28 digits: 2 domains of num_train / 2 examples."""
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, size=(num_train + num_test, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, size=num_train + num_test)
  return colored_mnist.make_colored_mnist(images[:num_train], labels[:num_train],
                                          images[num_train:], labels[num_train:],
                                          shuffle_key=jax.random.PRNGKey(0))


# The batch axis of every ColoredMNIST field: domains are stacked [m, n, ...].
CMNIST_DATA_AXES = colored_mnist.ColoredMNIST(
    train_pixels=1, train_digits=1, train_mask=1, train_color_flip=None, test_pixels=0,
    test_digits=0, test_color_flip=None, label_noise=None)


def rex_task():
  return train.make_domain_task("vrex", hidden=8, input_dim=392, num_domains=2,
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=colored_mnist.sample_eval_sets, population=True)


def rex_hparams(num_restarts: int):
  # A large learning rate and an early anneal, so that the runs move far from init and
  # the penalty weight switches on inside the test's few steps.
  return train.domain_hparams(num_restarts, learning_rate=3e-2, l2_weight=1e-3,
                              penalty_weight=10.0, penalty_anneal_iters=3)


def naf_task(num_dims: int = 2):
  """Maximum likelihood of a one-layer DSF flow on the data batch `data` [n, D]."""
  flow = flows.autoregressive_flow(num_dims, "dsf", transformer_kwargs={"hidden_units": 4},
                                   hidden_sizes=(8, 8), num_layers=1)
  nll = lambda params, data: -jnp.mean(flow.distribution(params).log_prob(data))
  return flow_task(flow, lambda params, key, data: nll(params, data), 3e-2,
                   evaluate=lambda params, data: {"nll": nll(params, data)})


def naf_data(n: int = 64, num_dims: int = 2):
  x = jax.random.normal(jax.random.PRNGKey(5), (n, num_dims))
  return x * jnp.array([1.5, 0.5]) + jnp.array([1.0, -1.0])


def test_map_formulation_equals_vmap_for_a_rex_task():
  data, keys = small_cmnist(), jax.random.split(jax.random.PRNGKey(1), 3)
  results = {how: engine.Runner(rex_task(), 5, eval_every=3, chunk_size=5, progress=False,
                                restart_axis=how).run(keys, rex_hparams(3), data)
             for how in ("vmap", "map")}
  vmap, mapped = results["vmap"], results["map"]
  assert np.all(vmap.history.metrics["penalty_weight"][:, -1] == 10.0)  # the penalty is on
  for name in vmap.history.losses:
    np.testing.assert_allclose(mapped.history.losses[name], vmap.history.losses[name],
                               rtol=2e-4, atol=1e-6, err_msg=name)
  for name in vmap.history.evals:
    np.testing.assert_allclose(mapped.history.evals[name], vmap.history.evals[name],
                               rtol=2e-4, atol=1e-6, err_msg=name)
  moved = jax.tree_util.tree_map(lambda a, b: np.max(np.abs(a - b)), vmap.state.params,
                                 engine.Runner(rex_task(), 1, progress=False)._init(
                                     keys, rex_hparams(3), data).params)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-2  # the weights moved from init
  for a, b in zip(jax.tree_util.tree_leaves(mapped.state.params),
                  jax.tree_util.tree_leaves(vmap.state.params)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


def test_map_formulation_equals_vmap_for_a_naf_task():
  keys = jax.random.split(jax.random.PRNGKey(2), 2)
  results = {how: engine.Runner(naf_task(), 6, chunk_size=4, progress=False,
                                restart_axis=how).run(keys, None, naf_data())
             for how in ("vmap", "map")}
  np.testing.assert_allclose(results["map"].history.losses["loss"],
                             results["vmap"].history.losses["loss"], rtol=1e-5)
  assert np.all(np.diff(results["map"].history.losses["loss"], axis=1) < 0)  # it trains


def test_auto_picks_by_backend_and_bad_options_are_named():
  assert engine.restart_axis_for("cpu") == "map"
  assert engine.restart_axis_for("gpu") == engine.restart_axis_for("tpu") == "vmap"
  assert engine.Runner(naf_task(), 2, progress=False).restart_axis == "map"  # CPU here
  with pytest.raises(ValueError, match="restart_axis must be one of"):
    engine.Runner(naf_task(), 2, restart_axis="pmap")
  with pytest.raises(ValueError, match="data_shards must be a positive int"):
    engine.Runner(naf_task(), 2, data_shards=0)
  with pytest.raises(ValueError, match="data_shards=2 needs that many devices"):
    engine.Runner(naf_task(), 2, data_shards=2, devices=jax.devices()[:1])
  with pytest.raises(TypeError, match="platform must be a str"):
    engine.restart_axis_for(None)


MESH_SCRIPT = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import jax, jax.numpy as jnp, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from jaxthesis import engine
    import test_engine_sharding as t

    def compare(a, b, rtol, atol):
      for name in a.history.losses:
        np.testing.assert_allclose(b.history.losses[name], a.history.losses[name],
                                   rtol=rtol, atol=atol, err_msg=name)
      for name in a.history.evals:
        np.testing.assert_allclose(b.history.evals[name], a.history.evals[name],
                                   rtol=rtol, atol=atol, err_msg=name)
      for x, y in zip(jax.tree_util.tree_leaves(a.state), jax.tree_util.tree_leaves(b.state)):
        if jnp.issubdtype(x.dtype, jnp.floating):
          np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=10 * rtol, atol=atol)

    def data_specs(runner, num_restarts, data):
      mesh = runner.mesh(num_restarts)
      specs = engine._data_shardings(data, runner.data_axes, mesh)
      return dict(mesh.shape), sorted({{repr(tuple(s.spec)) for s in jax.tree_util.tree_leaves(specs)}})

    def has_all_reduce(runner, keys, hparams, data):
      mesh = runner.mesh(keys.shape[0])
      split = engine.NamedSharding(mesh, engine.PartitionSpec("restarts"))
      keys = jax.device_put(keys, split)
      hparams = jax.device_put(hparams, split)
      data = jax.device_put(data, engine._data_shardings(data, runner.data_axes, mesh))
      states = jax.device_put(runner._init(keys, hparams, data), split)
      text = runner._chunk.lower(states, keys, hparams, data, jnp.int32(0)).compile().as_text()
      return "all-reduce" in text

    report = {{}}
    one_device = jax.devices()[:1]
    # REx (V-REx on Colored MNIST), 2 restarts: on 1 device, a 2 x 4 and a 1 x 8 mesh.
    data, keys, hp = t.small_cmnist(), jax.random.split(jax.random.PRNGKey(3), 2), t.rex_hparams(2)
    kw = dict(eval_every=5, chunk_size=5, progress=False)
    single = engine.Runner(t.rex_task(), 5, devices=one_device, **kw).run(keys, hp, data)
    for shards in (4, 8):
      runner = engine.Runner(t.rex_task(), 5, data_shards=shards,
                             data_axes=t.CMNIST_DATA_AXES, **kw)
      compare(single, runner.run(keys, hp, data), rtol=2e-4, atol=1e-5)
      mesh, specs = data_specs(runner, 2, data)
      report[f"rex_{{mesh['restarts']}}x{{shards}}"] = {{"mesh": mesh, "specs": specs}}
    # NAF (DSF maximum likelihood), data [64, 2] split on axis 0: the same meshes.
    x, keys = t.naf_data(), jax.random.split(jax.random.PRNGKey(4), 2)
    kw = dict(chunk_size=3, progress=False)
    single = engine.Runner(t.naf_task(), 6, devices=one_device, **kw).run(keys, None, x)
    for shards in (4, 8):
      runner = engine.Runner(t.naf_task(), 6, data_shards=shards, **kw)
      compare(single, runner.run(keys, None, x), rtol=1e-5, atol=1e-6)
      mesh, specs = data_specs(runner, 2, x)
      report[f"naf_{{mesh['restarts']}}x{{shards}}"] = {{"mesh": mesh, "specs": specs}}
    # The gradient reduction over "data" is XLA's: an all-reduce in the compiled step.
    report["naf_1x8"]["all_reduce"] = has_all_reduce(runner, keys, None, x)
    # Uneven: 60 examples do not split over 8 shards, nor 2 x 30 digits over 4.
    errors = []
    try:
      engine.Runner(t.naf_task(), 2, data_shards=8, progress=False).run(
          jax.random.split(jax.random.PRNGKey(0), 1), None, x[:60])
    except ValueError as e:
      errors.append(str(e))
    try:
      engine.Runner(t.rex_task(), 2, data_shards=4, data_axes=t.CMNIST_DATA_AXES,
                    progress=False).run(jax.random.split(jax.random.PRNGKey(0), 2),
                                        t.rex_hparams(2), t.small_cmnist(num_train=60))
    except ValueError as e:
      errors.append(str(e))
    try:
      engine.Runner(t.naf_task(), 2, data_shards=2, data_axes={{"x": 0}}, progress=False).run(
          jax.random.split(jax.random.PRNGKey(0), 1), None, x)
    except ValueError as e:
      errors.append(str(e))
    report["errors"] = errors
    print("REPORT " + json.dumps(report))
""")


@pytest.fixture(scope="module")
def mesh_report():
  script = MESH_SCRIPT.format(root=ROOT, tests=os.path.join(ROOT, "tests"))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=1200)
  assert out.returncode == 0, out.stderr[-4000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("REPORT ")][-1]
  return json.loads(line[len("REPORT "):])


def test_2x4_and_1x8_meshes_equal_one_device_for_rex_and_naf(mesh_report):
  # compare() inside the subprocess asserted the equality (2 restarts on 1 device, on
  # 2 x 4 and on 1 x 8); here: it ran on those meshes, the batch axes split over "data".
  for kind in ("rex", "naf"):
    assert mesh_report[f"{kind}_2x4"]["mesh"] == {"restarts": 2, "data": 4}
    assert mesh_report[f"{kind}_1x8"]["mesh"] == {"restarts": 1, "data": 8}
  assert mesh_report["naf_1x8"]["all_reduce"]
  assert mesh_report["naf_1x8"]["specs"] == ["('data', None)"]
  assert set(mesh_report["rex_2x4"]["specs"]) == {
      "()", "(None, 'data')", "(None, 'data', None)", "('data',)", "('data', None)"}


def test_uneven_batches_are_refused_naming_the_leaf(mesh_report):
  naf, rex, bad_prefix = mesh_report["errors"]
  assert "data has 60 entries along its batch axis 0, which 8 data shards" in naf
  assert "data.train_pixels has 30 entries along its batch axis 1" in rex
  assert "data_axes must be an int, None or a pytree prefix of data" in bad_prefix
