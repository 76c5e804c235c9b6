"""Masked MLP, small CNN, the regularizer registry, SGD training and per-example stats."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import engine
from jaxthesis.memorization import example_stats as es
from jaxthesis.memorization import models, regularizers, train


def test_masked_mlp_equals_the_narrow_network_and_masked_units_stay_zero():
  params = models.mlp_init(jax.random.PRNGKey(0), 6, 3, 10, width=4)
  params = [(w * 2.0 + 0.0, b + 0.3 * (jnp.arange(b.shape[0]) < (4 if i < 2 else 3)))
            for i, (w, b) in enumerate(params)]
  x = jax.random.normal(jax.random.PRNGKey(1), (7, 6))
  narrow = [(params[0][0][:, :4], params[0][1][:4]), (params[1][0][:4, :4], params[1][1][:4]),
            (params[2][0][:4], params[2][1])]
  np.testing.assert_allclose(models.mlp_apply(params, x, 4), models.mlp_apply(narrow, x),
                             rtol=1e-5, atol=1e-6)
  grads = jax.grad(lambda p: jnp.sum(models.mlp_apply(p, x, 4) ** 2))(params)
  assert float(jnp.abs(grads[0][0][:, 4:]).max()) == 0.0
  assert float(jnp.abs(grads[1][0][4:, :]).max()) == 0.0
  assert float(jnp.abs(grads[2][0][4:, :]).max()) == 0.0
  fresh = models.mlp_init(jax.random.PRNGKey(0), 6, 3, 10, width=4)
  assert float(jnp.abs(fresh[1][0][4:]).max()) == 0.0 and float(jnp.abs(fresh[1][0][:, 4:]).max()) == 0.0
  limit = np.sqrt(6.0 / (4 + 4))  # Glorot limit of the true widths
  assert float(jnp.abs(fresh[1][0]).max()) <= limit


@pytest.mark.parametrize("width", [0, -3, 11])
def test_bad_widths_raise(width):
  with pytest.raises(ValueError, match="width must lie in"):
    models.mlp_init(jax.random.PRNGKey(0), 6, 3, 10, width=width)
  with pytest.raises(ValueError, match="max_width must be a positive int"):
    models.mlp(6, 3, 0)


def test_small_cnn_shapes_and_batch_norm_state():
  model = models.small_cnn((8, 8, 3), 5, channels=4, dense=(6, 5), crop=1)
  params, stats = model.init(jax.random.PRNGKey(0), None)
  assert params["Conv_0"]["kernel"].shape == (5, 5, 3, 4)
  assert params["Dense_2"]["kernel"].shape == (5, 5)
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 8, 8, 3)) + 2.0
  logits, new_stats = model.apply(params, stats, x, None, train=True,
                                  reg=regularizers.regularization(dropout=0.5),
                                  key=jax.random.PRNGKey(2))
  assert logits.shape == (8, 5)
  # running mean moves by (1 - momentum) towards the batch mean of the first conv output
  assert not np.allclose(new_stats["BatchNorm_0"]["mean"], stats["BatchNorm_0"]["mean"])
  eval_logits, same = model.apply(params, stats, x, None, train=False)
  assert eval_logits.shape == (8, 5) and same is stats
  with pytest.raises(ValueError, match="crop"):
    models.small_cnn((4, 4, 3), 5, crop=2)


@pytest.mark.parametrize("name", sorted(regularizers.REGULARIZERS))
def test_regularizer_registry_contract(name):
  entry = regularizers.REGULARIZERS[name]
  low, high = entry.thesis_range
  reg = regularizers.regularization(**{name: high})
  assert float(getattr(reg, entry.field)) == pytest.approx(high)
  off = regularizers.regularization(**{name: 0.0})
  params = models.mlp_init(jax.random.PRNGKey(0), 8, 3, 16)
  x = jax.random.uniform(jax.random.PRNGKey(1), (32, 8))
  clean = models.mlp_apply(params, x)
  np.testing.assert_allclose(models.mlp_apply(params, x, reg=off, key=jax.random.PRNGKey(2)),
                             clean, rtol=1e-6)  # strength 0 switches it off
  perturbed = models.mlp_apply(params, x, reg=reg, key=jax.random.PRNGKey(2))
  acts_on_network = name in ("dropout", "input_dropout", "input_noise", "hidden_noise")
  assert (not np.allclose(perturbed, clean)) == acts_on_network
  with pytest.raises(ValueError, match=f"{name} strength must lie in"):
    regularizers.regularization(**{name: -0.5})


def test_regularizer_statistics_and_bad_names():
  h = jnp.full((200000,), 2.0)
  dropped = regularizers.perturb_hidden(jax.random.PRNGKey(0), h,
                                        regularizers.regularization(dropout=0.75))
  np.testing.assert_allclose(float(jnp.mean(dropped == 0)), 0.75, atol=0.005)
  np.testing.assert_allclose(float(jnp.mean(dropped)), 2.0, rtol=0.02)  # inverted dropout
  noisy = regularizers.perturb_inputs(jax.random.PRNGKey(1), h,
                                      regularizers.regularization(input_noise=3.0))
  np.testing.assert_allclose(float(jnp.std(noisy)), 3.0, rtol=0.01)
  params = [(jnp.ones((2, 3)), jnp.ones(3))]
  np.testing.assert_allclose(regularizers.weight_penalty(
      regularizers.regularization(weight_decay=0.5), params), 0.5 * 0.5 * 9)
  with pytest.raises(ValueError, match="unknown regularizer 'dropconnect'"):
    regularizers.regularization(dropconnect=0.1)
  with pytest.raises(ValueError, match="dropout strength"):
    regularizers.regularization(dropout=1.0)
  stacked = regularizers.stack([{"dropout": 0.1}, {"weight_decay": 0.2}])
  np.testing.assert_allclose(stacked.dropout, [0.1, 0.0])


def test_epoch_batches_are_permutations_of_the_used_examples():
  f = jax.jit(lambda n, t: train.epoch_batch(jax.random.PRNGKey(0), t, n, 20, 3))
  for n in (9, 12):
    seen = np.concatenate([np.asarray(f(n, t)) for t in range(n // 3)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def _reference_perturb(key, x, rate, std):
  """The regularizers' formulas without the zero-strength shortcut."""
  drop_key, noise_key = jax.random.split(key)
  keep = 1.0 - rate
  x = jnp.where(jax.random.uniform(drop_key, x.shape) < keep, x / keep, 0.0)
  return x + std * jax.random.normal(noise_key, x.shape, x.dtype)


@pytest.mark.parametrize("rate,std", [(0.0, 0.0), (0.3, 0.0), (0.0, 0.7), (0.3, 0.7)])
def test_zero_strength_shortcut_gives_the_formulas_concrete_traced_and_vmapped(rate, std):
  key = jax.random.PRNGKey(3)
  x = jax.random.normal(jax.random.PRNGKey(4), (6, 5)) * 2.0 + 1.0
  want = _reference_perturb(key, x, rate, std)
  reg = regularizers.regularization(input_dropout=rate, input_noise=std, dropout=rate,
                                    hidden_noise=std, weight_decay=std)
  concrete = regularizers.perturb_inputs(key, x, reg)
  traced = jax.jit(regularizers.perturb_inputs)(key, x, reg)
  hidden = jax.jit(regularizers.perturb_hidden)(key, x, reg)
  for got in (concrete, traced, hidden):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  if rate == std == 0.0:
    np.testing.assert_array_equal(concrete, x)  # off: the input itself
  # Per-restart strengths: a stacked Regularization under vmap and under lax.map.
  regs = regularizers.stack([{"input_dropout": rate, "input_noise": std},
                             {"input_dropout": 0.5, "input_noise": 0.0}])
  keys = jax.random.split(key, 2)
  by_vmap = jax.vmap(regularizers.perturb_inputs, (0, None, 0))(keys, x, regs)
  by_map = jax.lax.map(lambda a: regularizers.perturb_inputs(a[0], x, a[1]), (keys, regs))
  for i, (r, s) in enumerate([(rate, std), (0.5, 0.0)]):
    np.testing.assert_allclose(by_vmap[i], _reference_perturb(keys[i], x, r, s), 1e-6, 1e-6)
    np.testing.assert_allclose(by_map[i], by_vmap[i], rtol=1e-6, atol=1e-6)
  params = [(jnp.full((2, 3), 1.5), jnp.ones(3))]
  penalty = 0.5 * std * (6 * 1.5 ** 2 + 3)
  np.testing.assert_allclose(regularizers.weight_penalty(reg, params), penalty, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(regularizers.weight_penalty)(reg, params), penalty,
                             rtol=1e-6)
  wds = regularizers.stack([{"weight_decay": std}, {"weight_decay": 0.25}])
  np.testing.assert_allclose(jax.vmap(regularizers.weight_penalty, (0, None))(wds, params),
                             [penalty, 0.5 * 0.25 * (6 * 1.5 ** 2 + 3)], rtol=1e-6)


def _tiny_data(n=24, d=5):
  x = jax.random.normal(jax.random.PRNGKey(0), (n, d))
  y = (x[:, 0] > 0).astype(jnp.int32)
  return {"train_x": x[None], "train_y": y[None], "eval": {"val": (x, y)}}


def test_classifier_step_is_sgd_with_momentum_and_halving():
  data = _tiny_data()
  model = models.mlp(5, 2, 8)
  task = train.make_classifier_task(model, max_examples=24, batch_size=6, momentum=0.9,
                                    lr_halving_epochs=1)
  hp = jax.tree_util.tree_map(lambda a: a[0], train.classifier_hparams(
      1, width=8, num_examples=24, learning_rate=0.1,
      reg=regularizers.regularization(weight_decay=0.01)))
  state = task.init(jax.random.PRNGKey(1), hp, data)
  velocity = jax.tree_util.tree_map(jnp.zeros_like, state.params)
  step = jax.jit(task.step)

  @jax.jit
  def reference_grads(params, t):
    idx = train.epoch_batch(state.shuffle_key, t, 24, 24, 6)
    x, y = data["train_x"][0][idx], data["train_y"][0][idx]
    return jax.grad(lambda p: jnp.mean(train.cross_entropy(models.mlp_apply(p, x), y))
                    + regularizers.weight_penalty(hp.reg, p))(params)

  for t in (0, 1, 4):  # 4 steps per epoch: step 4 has lr 0.05
    grads = reference_grads(state.params, t)
    velocity = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, velocity, grads)
    lr = 0.1 * 0.5 ** (t // 4)
    want = jax.tree_util.tree_map(lambda p, v: p - lr * v, state.params, velocity)
    state, losses, _ = step(state._replace(velocity=jax.tree_util.tree_map(
        lambda v, g: (v - g) / 0.9, velocity, grads)), t, jax.random.PRNGKey(2), hp, data)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["vmap", "map"])
def test_classifier_batches_follow_epoch_batch_from_any_step(layout):
  """The task keeps each epoch's order in its state; steps taken from an arbitrary start
  and across epoch boundaries must still use `epoch_batch`'s minibatches."""
  data = _tiny_data()
  model = models.mlp(5, 2, 8)
  task = train.make_classifier_task(model, max_examples=24, batch_size=6, momentum=0.9)
  hp = train.classifier_hparams(2, width=8, num_examples=np.array([24, 18]),
                                learning_rate=0.1)
  keys = jax.random.split(jax.random.PRNGKey(5), 2)
  ts = (5, 6, 7, 8, 13, 2)  # starts mid-epoch, crosses epochs, goes back to epoch 0
  over = (jax.vmap if layout == "vmap" else
          lambda f: lambda *a: jax.lax.map(lambda b: f(*b), a))

  def run(key, hp):
    state = task.init(key, hp, data)
    init = state
    for t in ts:
      state, _, _ = task.step(state, t, jax.random.PRNGKey(0), hp, data)
    return init, state

  init, got = jax.jit(over(run))(keys, hp)
  for r, n in enumerate((24, 18)):
    params = jax.tree_util.tree_map(lambda a: a[r], init.params)
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    for t in ts:
      idx = train.epoch_batch(init.shuffle_key[r], t, n, 24, 6)
      x, y = data["train_x"][0][idx], data["train_y"][0][idx]
      grads = jax.grad(lambda p: jnp.mean(
          train.cross_entropy(models.mlp_apply(p, x), y)))(params)
      velocity = jax.tree_util.tree_map(lambda v, g: 0.9 * v + g, velocity, grads)
      params = jax.tree_util.tree_map(lambda p, v: p - 0.1 * v, params, velocity)
    for a, b in zip(jax.tree_util.tree_leaves(got.params), jax.tree_util.tree_leaves(params)):
      np.testing.assert_allclose(a[r], b, rtol=1e-5, atol=1e-6)


def test_width_and_data_size_sweep_is_one_run_and_learns():
  data = _tiny_data()
  model = models.mlp(5, 2, 16)
  task = train.make_classifier_task(model, max_examples=24, batch_size=4)
  hp = train.classifier_hparams(3, width=np.array([1, 4, 16]),
                                num_examples=np.array([24, 12, 24]), learning_rate=0.2)
  runner = engine.Runner(task, 60, eval_every=30, progress=False)
  out = runner.run(jax.random.split(jax.random.PRNGKey(0), 3), hp, data)
  w1 = out.state.params[0][0][0]
  assert float(jnp.abs(w1[:, 1:]).max()) == 0.0  # width-1 run kept its masked units at zero
  final = out.history.evals["train_acc"][:, -1]
  assert final[2] > 0.9 and final[2] >= final[0]


def test_example_stats_follow_a_known_sequence():
  pattern = np.array([[0, 1, 1, 0, 1, 1],     # learned at 1, forgotten at 3, relearned at 4
                      [1, 1, 1, 1, 1, 1],     # learned at 0, never forgotten
                      [0, 0, 0, 0, 0, 0],     # never learned
                      [1, 0, 1, 0, 1, 0]]).T  # forgotten at 1, 3 and 5
  counter = engine.Task(init=lambda k, h, d: jnp.int32(0),
                        step=lambda s, t, k, h, d: (s + 1, {"loss": jnp.float32(0)}, {}))
  per_example = lambda s, h, d: (jnp.zeros(4), jnp.asarray(pattern)[s] > 0)
  task = es.with_example_stats(counter, per_example, 4, every=1)
  out = engine.Runner(task, 6, progress=False).run(jax.random.split(jax.random.PRNGKey(0), 2))
  stats = jax.tree_util.tree_map(lambda a: np.asarray(a[0]), out.state.stats)
  np.testing.assert_array_equal(stats.first_learned, [1, 0, -1, 0])
  np.testing.assert_array_equal(stats.last_learned, [4, 0, -1, 4])
  np.testing.assert_array_equal(stats.forgetting, [1, 0, 0, 3])
  np.testing.assert_array_equal(stats.times_correct, pattern.sum(0))
  assert es.onset_step(stats.first_learned, np.array([1, 0, 1, 1], bool), 0.5) == 1.0
  assert es.onset_step(stats.first_learned, None, 1.0) == float("inf")
  with pytest.raises(ValueError, match="every must be a positive int"):
    es.with_example_stats(counter, per_example, 4, every=0)
