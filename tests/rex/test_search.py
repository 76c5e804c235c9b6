"""Random search and model selection (appendix 11.1.9.1, thesis 5.4.3): batching is exact."""
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import engine, sweeps
from jaxthesis.rex import search, selection

D_IN, WIDTH, LIMIT = 6, 8, 16


def _tiny_domains(key, num_datasets=2, m=2, n=12):
  """Stacked toy datasets `[D, m, n, d]`: labels from a linear rule plus a domain shift."""
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (num_datasets, m, n, D_IN))
  w = jax.random.normal(kw, (D_IN,))
  shift = jnp.arange(m, dtype=jnp.float32)[None, :, None, None]
  y = ((x + shift) @ w > 0).astype(jnp.float32)
  return {"x": x + shift, "y": y, "mask": jnp.ones(y.shape)}


def _sample_train(key, data):
  return data["x"] + 0.1 * jax.random.normal(key, data["x"].shape), data["y"], data["mask"]


def _sample_eval(key, data):
  m, n = data["y"].shape
  return {"train": (data["x"].reshape(m * n, -1), data["y"].reshape(m * n)),
          "domain_1": (data["x"][1], data["y"][1], data["mask"][1])}


def _task(method, width=WIDTH):
  return search.make_search_task(method, width=width, width_limit=LIMIT, input_dim=D_IN,
                                 num_domains=2, sample_train=_sample_train,
                                 sample_eval=_sample_eval, population=True)


@pytest.mark.parametrize("method", ["vrex", "irm"])
def test_configurations_batched_equal_one_by_one(method):
  """Widths, step counts, rates, penalties and datasets vmapped on the restart axis give
  what a Python loop over configurations (one jitted step at a time) gives."""
  data = _tiny_domains(jax.random.PRNGKey(0))
  configs = {"hidden": np.array([3, 8, 5, 6], np.int32),
             "learning_rate": np.array([1e-2, 3e-2, 2e-2, 5e-3]),
             "l2_weight": np.array([1e-3, 0.0, 1e-2, 1e-4]),
             "penalty_weight": np.array([10.0, 100.0, 1.0, 1e3]),
             "penalty_anneal_iters": np.array([2, 0, 5, 3], np.int32)}
  steps = np.array([6, 4, 7, 5], np.int32)
  index = np.array([0, 1, 1, 0], np.int32)
  hp = search.search_hparams(configs)
  keys = jax.random.split(jax.random.PRNGKey(1), 4)
  batched_task = sweeps.index_data(sweeps.with_step_limit(_task(method)))
  runner = engine.Runner(batched_task, int(steps.max()), eval_every=100, progress=False)
  batched = runner.run(
      keys, sweeps.indexed_hparams(sweeps.step_limited_hparams(hp, steps), index, 2), data)

  task = _task(method)
  step, evaluate = jax.jit(task.step), jax.jit(task.evaluate)
  for r in range(4):  # the reference: each configuration alone, on its own dataset
    hp_r = jax.tree_util.tree_map(lambda a: a[r], hp)
    data_r = jax.tree_util.tree_map(lambda a: a[index[r]], data)
    state = task.init(keys[r], hp_r, data_r)
    for t in range(steps[r]):
      state, losses, _ = step(state, t, jax.random.fold_in(keys[r], t), hp_r, data_r)
      np.testing.assert_allclose(batched.history.losses["loss"][r, t], losses["loss"], rtol=2e-5)
    for name, value in evaluate(state, hp_r, data_r).items():
      np.testing.assert_allclose(batched.history.evals[name][r, -1], value, atol=1e-6)
    for got, want in zip(jax.tree_util.tree_leaves(batched.state.params),
                         jax.tree_util.tree_leaves(state.params)):
      np.testing.assert_allclose(got[r], want, rtol=2e-5, atol=1e-6)
  # Frozen restarts did not move after their own last step.
  np.testing.assert_array_equal(batched.history.metrics["active"].sum(1), steps)


def test_sample_configs_ranges_and_log_uniformity():
  space = search.THESIS_SPACE
  c = search.sample_configs(jax.random.PRNGKey(4), 4000, space)
  assert c["hidden"].min() >= 128 and c["hidden"].max() <= 4096
  assert 1e-4 <= c["l2_weight"].min() and c["l2_weight"].max() <= 1e-2
  assert 10 ** -4.3 <= c["learning_rate"].min() * (1 + 1e-6)
  assert c["learning_rate"].max() <= 10 ** -2.8 * (1 + 1e-6)
  assert c["penalty_anneal_iters"].min() >= 50 and c["penalty_anneal_iters"].max() <= 250
  assert c["steps"].min() >= 201 and c["steps"].max() <= 601
  # Log-uniform: half of the widths lie below the geometric midpoint 2^9.5 (±4σ).
  frac = np.mean(c["hidden"] < 2 ** 9.5)
  assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / 4000)
  frac = np.mean(c["penalty_weight"] < 1e4)
  assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / 4000)
  with pytest.raises(ValueError, match="num must be"):
    search.sample_configs(jax.random.PRNGKey(0), 0)


def test_satisfactory():
  train = np.array([0.7, 0.6, 0.4, 0.9])
  test = np.array([0.6, 0.65, 0.3, 0.5])
  np.testing.assert_array_equal(search.satisfactory(train, test), [True, False, False, False])


def test_selection_rules_pick_the_maximum():
  # 3 configurations, 2 trials, 2 checkpoints.
  val = np.array([[[0.6, 0.7], [0.5, 0.5]],
                  [[0.8, 0.65], [0.55, np.nan]],
                  [[0.1, 0.2], [0.9, 0.3]]])
  test = np.arange(12.0).reshape(3, 2, 2)
  picked = selection.training_domain_validation(val, test)
  np.testing.assert_array_equal(picked.config, [1, 2])
  np.testing.assert_array_equal(picked.checkpoint, [0, 0])
  np.testing.assert_array_equal(picked.accuracy, [test[1, 0, 0], test[2, 1, 0]])
  last = selection.oracle(val[..., -1], test[..., -1])
  np.testing.assert_array_equal(last.config, [0, 0])  # trial 1: [0.5, nan, 0.3]
  with pytest.raises(ValueError, match="report must have the shape"):
    selection.select_best(val, test[:2])


def test_holdout_masks_are_an_exact_disjoint_split():
  mask = np.ones((2, 50), np.float32)
  mask[1, 40:] = 0
  inside, out = selection.holdout_masks(jax.random.PRNGKey(5), mask, 0.2)
  inside, out = np.asarray(inside), np.asarray(out)
  np.testing.assert_array_equal(out.sum(1), [10, 8])
  np.testing.assert_array_equal(inside + out, mask)
  with pytest.raises(ValueError, match="fraction"):
    selection.holdout_masks(jax.random.PRNGKey(0), mask, 1.0)


SWEEP_ON_EIGHT_DEVICES = textwrap.dedent("""
    import os, sys, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    import jax, numpy as np
    assert jax.device_count() == 8, jax.devices()
    from jaxthesis import engine, sweeps
    from jaxthesis.rex import search
    from test_search import _task, _tiny_domains
    data = _tiny_domains(jax.random.PRNGKey(0))
    r = 8
    configs = {{"hidden": np.array([3, 8, 5, 6, 4, 7, 8, 2], np.int32),
               "learning_rate": np.linspace(5e-3, 3e-2, r),
               "l2_weight": np.linspace(0.0, 1e-2, r),
               "penalty_weight": np.logspace(0, 3, r),
               "penalty_anneal_iters": np.arange(r, dtype=np.int32) % 4}}
    steps = np.array([6, 4, 7, 5, 7, 3, 6, 5], np.int32)
    index = np.arange(r, dtype=np.int32) % 2
    hp = sweeps.indexed_hparams(sweeps.step_limited_hparams(search.search_hparams(configs), steps),
                                index, 2)
    task = sweeps.index_data(sweeps.with_step_limit(_task("vrex")))
    keys = jax.random.split(jax.random.PRNGKey(1), r)
    run = lambda devices: engine.Runner(task, int(steps.max()), eval_every=100, progress=False,
                                        devices=devices).run(keys, hp, data)
    many, one = run(None), run(jax.devices()[:1])
    np.testing.assert_allclose(many.history.losses["loss"], one.history.losses["loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(many.state.params),
                    jax.tree_util.tree_leaves(one.state.params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    n_devices = {{len(x.sharding.device_set) for x in jax.tree_util.tree_leaves(many.state)}}
    print(json.dumps({{"devices": sorted(n_devices)}}))
""")


def test_sweep_wrappers_on_eight_simulated_devices_match_one_device():
  """Widths, step limits and dataset indices sharded over 8 devices: same numbers as 1."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  script = SWEEP_ON_EIGHT_DEVICES.format(root=root, tests=os.path.join(root, "tests", "rex"))
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert '"devices": [8]' in out.stdout


def _flax_params_of(masked_params, hidden):
  """The `train.mlp_model` (flax MLP) parameters equal to the first `hidden` units of a
  masked-width MLP."""
  (w1, b1), (w2, b2), (w3, b3) = masked_params
  layers = [(w1[:, :hidden], b1[:hidden]), (w2[:hidden, :hidden], b2[:hidden]),
            (w3[:hidden], b3)]
  return {"params": {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in enumerate(layers)}}


@pytest.mark.parametrize("method", ["irm", "groupdro"])  # a penalty term; an objective state
def test_search_task_equals_the_domain_task(method):
  """One configuration (width 5 in a bucket of 8) through the search task equals the same
  configuration through `train.make_domain_task` with the flax MLP started from the same
  weights: losses, per-domain metrics, evaluations and final weights, with the unbiased
  IRMv1 estimator and the optimizer reset at the anneal step switched on."""
  from jaxthesis.nn import masked_mlp_init
  from jaxthesis.rex import train

  hidden, steps, anneal = 5, 6, 3
  options = dict(num_domains=2, sample_train=_sample_train, sample_eval=_sample_eval,
                 population=True, reset_optimizer_at_anneal=True, irm_estimator="unbiased")
  searched = search.make_search_task(method, width=WIDTH, width_limit=LIMIT, input_dim=D_IN,
                                     **options)
  plain = train.make_domain_task(method, hidden=hidden, input_dim=D_IN, **options)
  plain_init = plain.init

  def init_like_search(key, hp, data):  # same weights: the narrow slice of the masked init
    state = plain_init(key, hp, data)
    model_key, _ = jax.random.split(key)
    narrow = masked_mlp_init(model_key, D_IN, hidden, hidden, width_limit=LIMIT)
    return state._replace(params=_flax_params_of(narrow, hidden))

  plain = plain._replace(init=init_like_search)
  configs = {"hidden": np.array([hidden, hidden], np.int32), "learning_rate": np.array([2e-2, 5e-2]),
             "l2_weight": np.array([1e-3, 1e-2]), "penalty_weight": np.array([30.0, 5.0]),
             "penalty_anneal_iters": np.array([anneal, anneal], np.int32)}
  search_hp = search.search_hparams(configs, groupdro_eta=0.3)
  domain_hp = train.domain_hparams(2, **{k: configs[k] for k in configs if k != "hidden"},
                                   groupdro_eta=0.3)
  data = jax.tree_util.tree_map(lambda a: a[0], _tiny_domains(jax.random.PRNGKey(7)))
  keys = jax.random.split(jax.random.PRNGKey(8), 2)
  run = lambda task, hp: engine.Runner(task, steps, eval_every=2, progress=False).run(keys, hp, data)
  a, b = run(searched, search_hp), run(plain, domain_hp)

  for group in ("losses", "metrics", "evals"):
    got, want = getattr(a.history, group), getattr(b.history, group)
    assert set(got) == set(want), group  # same metrics: per-domain risks, penalty weight, ...
    for name in want:
      np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=1e-6, err_msg=name)
  assert {"risk_0", "risk_1", "penalty_weight"} <= set(a.history.metrics)
  np.testing.assert_allclose(a.history.metrics["penalty_weight"][:, anneal:], [[30.0] * 3, [5.0] * 3])
  want = jax.tree_util.tree_leaves(
      [(p["kernel"], p["bias"]) for p in b.state.params["params"].values()])
  for got_w, want_w, sl in zip(jax.tree_util.tree_leaves(a.state.params), want,
                               [np.s_[:, :, :hidden], np.s_[:, :hidden], np.s_[:, :hidden, :hidden],
                                np.s_[:, :hidden], np.s_[:, :hidden, :], np.s_[:, :]]):
    np.testing.assert_allclose(got_w[sl], want_w, rtol=2e-5, atol=1e-6)
