"""The learning-rate and optimizer handling at the penalty switch (`train.make_domain_task`)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.rex import train

M, N, D = 2, 16, 5


def _sample_train(key, data):
  x = jax.random.normal(key, (M, N, D))
  y = (x[..., 0] > 0).astype(jnp.float32)
  return x, y, jnp.ones((M, N))


def _sample_eval(key, data):
  x, y, _ = _sample_train(key, data)
  return {"test": (x[0], y[0])}


def _step_sizes(scale, anneal=3, steps=6):
  """max |Δθ| of every step of MM-REx with Adam reset at the anneal step."""
  task = train.make_domain_task("mmrex", hidden=4, input_dim=D, num_domains=M,
                                sample_train=_sample_train, sample_eval=_sample_eval,
                                population=True, reset_optimizer_at_anneal=True,
                                post_anneal_lr_scale=scale)
  hp = jax.tree_util.tree_map(lambda a: a[0], train.domain_hparams(
      1, learning_rate=1e-2, l2_weight=0.0, penalty_weight=100.0, penalty_anneal_iters=anneal))
  state = task.init(jax.random.PRNGKey(0), hp, None)
  sizes, lrs = [], []
  step = jax.jit(task.step)
  for t in range(steps):
    new, _, metrics = step(state, jnp.int32(t), jax.random.PRNGKey(t + 1), hp, None)
    delta = jax.tree_util.tree_map(lambda a, b: jnp.max(jnp.abs(a - b)), new.params, state.params)
    sizes.append(float(max(jax.tree_util.tree_leaves(delta))))
    lrs.append(float(new.opt_state.hyperparams["learning_rate"]))
    state = new
  return np.array(sizes), np.array(lrs)


def test_learning_rate_is_scaled_from_the_anneal_step_on():
  sizes, lrs = _step_sizes(0.1)
  np.testing.assert_allclose(lrs, [1e-2] * 3 + [1e-3] * 3, rtol=1e-6)
  base, base_lrs = _step_sizes(1.0)
  np.testing.assert_allclose(base_lrs, 1e-2, rtol=1e-6)
  # Before the switch the two runs are the same run.
  np.testing.assert_allclose(sizes[:3], base[:3], rtol=1e-6)
  # Adam's first step after the reset moves the largest coordinate by ≈ the learning rate
  # (|m̂/√v̂| = 1 there), so the scaled run's step is a tenth of the unscaled one's.
  np.testing.assert_allclose(base[3], 1e-2, rtol=1e-3)
  np.testing.assert_allclose(sizes[3], 1e-3, rtol=1e-3)


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), np.ones(2)])
def test_bad_post_anneal_lr_scale(scale):
  with pytest.raises(ValueError, match="post_anneal_lr_scale"):
    train.make_domain_task("mmrex", hidden=4, input_dim=D, num_domains=M,
                           sample_train=_sample_train, sample_eval=_sample_eval,
                           population=True, post_anneal_lr_scale=scale)
