"""Loss-sensitivity through unrolled SGD (3.3.2) against finite differences; Gini."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.memorization import sensitivity as sens
from jaxthesis.memorization.models import mlp_apply, mlp_init


def _pairwise_gini(v):
  v = np.asarray(v, np.float64)
  return np.abs(v[:, None] - v[None, :]).sum() / (2 * len(v) * v.sum())


def test_gini_known_vectors():
  np.testing.assert_allclose(sens.gini(jnp.ones(7)), 0.0, atol=1e-7)
  np.testing.assert_allclose(sens.gini(jnp.array([0.0, 0.0, 0.0, 1.0])), 0.75, atol=1e-7)
  np.testing.assert_allclose(sens.gini(jnp.array([1.0, 2.0, 3.0, 4.0])), 0.25, atol=1e-7)
  v = np.asarray(jax.random.exponential(jax.random.PRNGKey(0), (50,)))
  np.testing.assert_allclose(sens.gini(v), _pairwise_gini(v), rtol=1e-5)
  mask = np.arange(50) % 3 != 0
  np.testing.assert_allclose(sens.gini(v, mask), _pairwise_gini(v[mask]), rtol=1e-5)
  with pytest.raises(ValueError, match="values must be >= 0"):
    sens.gini(jnp.array([1.0, -1.0]))
  with pytest.raises(ValueError, match="values must have rank 1"):
    sens.gini(jnp.ones((2, 2)))


def _problem():
  k = jax.random.split(jax.random.PRNGKey(0), 6)
  params = mlp_init(k[0], 5, 3, 4)
  params = jax.tree_util.tree_map(lambda p: 2.0 * p + 0.1, params)  # away from init
  past_x = jax.random.normal(k[1], (2, 3, 5))
  past_y = jax.random.randint(k[2], (2, 3), 0, 3)
  cur_x = jax.random.normal(k[3], (4, 5))
  cur_y = jnp.array([0, 1, 1, 2])
  loss_fn = lambda p, x, y: -jnp.take_along_axis(
      jax.nn.log_softmax(mlp_apply(p, x)), y[:, None], -1)[:, 0]
  return loss_fn, params, past_x, past_y, cur_x, cur_y


def test_sensitivity_matches_finite_differences():
  with jax.enable_x64(True):
    loss_fn, params, past_x, past_y, cur_x, cur_y = _problem()
    params = jax.tree_util.tree_map(lambda p: p.astype(jnp.float64), params)
    past_x, cur_x = past_x.astype(jnp.float64), cur_x.astype(jnp.float64)
    lr = 0.5
    out = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, lr, num_classes=3)

    def class_losses(xs):  # independent reference: two explicit SGD steps
      p = params
      for k in range(2):
        g = jax.grad(lambda q: jnp.mean(loss_fn(q, xs[k], past_y[k])))(p)
        p = jax.tree_util.tree_map(lambda a, b: a - lr * b, p, g)
      losses = loss_fn(p, cur_x, cur_y) / cur_y.shape[0]
      per_class = jnp.stack([jnp.sum(jnp.where(cur_y == i, losses, 0.0)) for i in range(3)])
      return jnp.concatenate([jnp.sum(losses)[None], per_class])  # [L_t, L_t(y=0..2)]

    eps = 1e-6
    basis = jnp.eye(past_x.size, dtype=jnp.float64).reshape((-1,) + past_x.shape)
    central = jax.jit(jax.vmap(lambda e: (class_losses(past_x + eps * e)
                                          - class_losses(past_x - eps * e)) / (2 * eps)))
    fd = np.asarray(central(basis)).T.reshape((4,) + past_x.shape)  # [term, K, B, D]
    want = np.abs(fd).sum(-1)
    np.testing.assert_allclose(np.asarray(out.total), want[0], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(np.asarray(out.per_class), want[1:], rtol=1e-5, atol=1e-9)
    assert np.count_nonzero(np.asarray(out.total)) >= 4  # not a vacuous comparison


def test_total_counts_labels_beyond_the_class_matrix():
  # Unique-class data: labels 0..N-1 with a C = 2 class matrix. `total` is the sensitivity
  # of the whole L_t, so it must not depend on C; it once dropped the labels >= C.
  loss_fn, params, past_x, past_y, cur_x, cur_y = _problem()
  full = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, 0.5)
  for c in (1, 2, 3, 5):
    out = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, 0.5,
                                num_classes=c)
    np.testing.assert_allclose(np.asarray(out.total), np.asarray(full.total), rtol=1e-5)
    assert out.per_class.shape == (c,) + past_y.shape
  # the class rows are unchanged by C: class 1's row with C = 2 equals it with C = 3
  two = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, 0.5, num_classes=2)
  three = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, 0.5,
                                num_classes=3)
  np.testing.assert_allclose(np.asarray(two.per_class), np.asarray(three.per_class[:2]),
                             rtol=1e-5)


def test_skipped_steps_have_zero_sensitivity():
  loss_fn, params, past_x, past_y, cur_x, cur_y = _problem()
  out = sens.loss_sensitivity(loss_fn, params, past_x, past_y, cur_x, cur_y, 0.1,
                              valid=jnp.array([False, True]))
  np.testing.assert_array_equal(np.asarray(out.total[0]), 0.0)
  assert np.all(np.asarray(out.total[1]) > 0) and out.per_class is None
  with pytest.raises(ValueError, match="past_y must have shape"):
    sens.loss_sensitivity(loss_fn, params, past_x, past_y[0], cur_x, cur_y, 0.1)
  with pytest.raises(ValueError, match="learning_rate must be a positive scalar"):
    sens.sgd_unroll(loss_fn, params, past_x, past_y, -0.1)


def test_sensitivity_task_accumulates_the_unrolled_gradients():
  n, d, b = 20, 5, 4
  k = jax.random.split(jax.random.PRNGKey(1), 2)
  data = {"inputs": jax.random.normal(k[0], (1, n, d)),
          "labels": jax.random.randint(k[1], (1, n), 0, 3)}
  task = sens.make_sensitivity_task(num_examples=n, input_dim=d, max_classes=3, width=4,
                                    batch_size=b, learning_rate=0.1, class_matrix_size=3)
  hp = sens.SensitivityHParams(dataset=jnp.int32(0), num_classes=jnp.int32(3))
  step = jax.jit(task.step)
  s0 = task.init(jax.random.PRNGKey(2), hp, data)
  s1, _, _ = step(s0, 0, jax.random.PRNGKey(3), hp, data)
  assert float(jnp.sum(s1.count)) == 0.0  # nothing before the first update
  s2, _, _ = step(s1, 1, jax.random.PRNGKey(3), hp, data)
  idx0, idx1 = s2.past_index[0], np.asarray(s2.past_index[0])
  loss_fn = lambda p, x, y: sens.masked_cross_entropy(mlp_apply(p, x), y, 3)
  x, y = data["inputs"][0], data["labels"][0]
  cur = np.asarray(s2.past_index[-1])
  want = sens.loss_sensitivity(loss_fn, s0.params, x[s1.past_index], y[s1.past_index],
                               x[cur], y[cur], 0.1, num_classes=3)
  np.testing.assert_allclose(np.asarray(s2.sum_g)[np.asarray(s1.past_index[0])],
                             np.asarray(want.total[0]), rtol=1e-5)
  assert float(jnp.sum(s2.count)) == b
  np.testing.assert_allclose(float(jnp.sum(s2.class_sum)), float(jnp.sum(want.per_class)),
                             rtol=1e-5)
  metrics = task.evaluate(s2, hp, data)
  assert 0.0 <= float(metrics["gini"]) < 1.0
