"""The masked-width MLP and width buckets (`jaxthesis.nn`): a padded network is the narrow one."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxthesis import nn

D_IN, LIMIT = 6, 16


def test_masked_init_is_width_consistent():
  key = jax.random.PRNGKey(2)
  wide = nn.masked_mlp_init(key, D_IN, 16, 5, width_limit=LIMIT)
  narrow = nn.masked_mlp_init(key, D_IN, 5, 5, width_limit=LIMIT)
  slices = [(slice(None), slice(0, 5)), (slice(0, 5), slice(0, 5)), (slice(0, 5), slice(None))]
  for (w_wide, b_wide), (w_narrow, _), sl in zip(wide, narrow, slices):
    np.testing.assert_array_equal(w_wide[sl], w_narrow)
    assert float(jnp.abs(w_wide).sum() - jnp.abs(w_wide[sl]).sum()) == 0.0  # padding is zero
    np.testing.assert_array_equal(b_wide, 0.0)
  # Xavier-uniform scale of the true widths: |W1| <= √(6 / (d + h)).
  assert float(jnp.abs(narrow[0][0]).max()) <= np.sqrt(6 / (D_IN + 5)) + 1e-6


def test_padded_network_trains_like_the_narrow_one():
  """Masked units get zero gradient, so under Adam + L2 the padded net is the narrow one."""
  key, data_key = jax.random.split(jax.random.PRNGKey(3))
  x = jax.random.normal(data_key, (20, D_IN))
  y = (x[:, 0] > 0).astype(jnp.float32)
  opt = optax.adam(5e-2)

  def train(width):
    params = nn.masked_mlp_init(key, D_IN, width, 5, width_limit=LIMIT)

    def loss(p):
      logits = nn.masked_mlp_apply(p, x, 5)
      l2 = 1e-2 * sum(jnp.sum(q ** 2) for q in jax.tree_util.tree_leaves(p))
      return jnp.mean(jnp.logaddexp(0.0, logits) - y * logits) + l2

    def body(_, carry):
      p, s = carry
      updates, s = opt.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, updates), s

    params, _ = jax.lax.fori_loop(0, 10, body, (params, opt.init(params)))
    return params, nn.masked_mlp_apply(params, x, 5)

  wide, wide_logits = jax.jit(lambda: train(16))()
  narrow, narrow_logits = jax.jit(lambda: train(5))()
  np.testing.assert_allclose(wide_logits, narrow_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(wide[1][0][:5, :5], narrow[1][0], rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(wide[1][0][5:], 0.0)
  np.testing.assert_array_equal(wide[0][1][5:], 0.0)


def test_buckets_cover_every_width_with_bounded_waste():
  hidden = np.arange(1, 5000, dtype=np.int32)
  width = nn.bucket_width(hidden, per_octave=2)
  assert np.all(width >= hidden)
  assert np.all(width <= np.ceil(np.sqrt(2) * hidden) + 1)
  groups = nn.group_by_bucket(np.array([128, 129, 181, 200, 4096], np.int32))
  assert sorted(np.concatenate(list(groups.values()))) == [0, 1, 2, 3, 4]
  assert list(groups) == [128, 182, 256, 4096]
  with pytest.raises(ValueError, match="hidden must hold positive ints"):
    nn.bucket_width(np.array([0]))


def test_masked_mlp_is_the_narrow_network_at_moderate_scale():
  """Away from initialization too: random (moderate-scale) weights in the first h units
  and garbage in the padding give the logits of the h-unit network computed densely."""
  keys = jax.random.split(jax.random.PRNGKey(7), 7)
  h, width = 5, 12
  x = 2.0 * jax.random.normal(keys[0], (9, D_IN))
  params = nn.masked_mlp_init(keys[1], D_IN, width, h, width_limit=LIMIT)
  params = [(2.0 * jax.random.normal(k1, w.shape), jax.random.normal(k2, b.shape))
            for (w, b), k1, k2 in zip(params, keys[2:5], keys[4:7])]
  (w1, b1), (w2, b2), (w3, b3) = params
  dense = jax.nn.relu(x @ w1[:, :h] + b1[:h])
  dense = jax.nn.relu(dense @ w2[:h, :h] + b2[:h])
  want = (dense @ w3[:h] + b3)[:, 0]
  np.testing.assert_allclose(nn.masked_mlp_apply(params, x, h), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call,error,match", [
    (lambda p, x: nn.masked_mlp_apply(p, x[:, :3], 5), ValueError, "x must have last dimension"),
    (lambda p, x: nn.masked_mlp_apply(p, x.astype(jnp.int32), 5), TypeError, "x must be a floating"),
    (lambda p, x: nn.masked_mlp_apply(p, x, 9), ValueError, r"hidden must lie in \[1, width=8\]"),
    (lambda p, x: nn.masked_mlp_apply(p, x, 2.5), TypeError, "hidden must be an integer"),
    (lambda p, x: nn.masked_mlp_init(jax.random.PRNGKey(0), D_IN, 32, 5, width_limit=LIMIT),
     ValueError, "width 32 exceeds width_limit 16"),
    (lambda p, x: nn.masked_mlp_init(jax.random.PRNGKey(0), 0, 8, 5, width_limit=LIMIT),
     ValueError, "input_dim must be a positive int"),
    (lambda p, x: nn.bucket_width(np.array([4]), per_octave=0), ValueError, "per_octave"),
])
def test_bad_arguments_are_named(call, error, match):
  params = nn.masked_mlp_init(jax.random.PRNGKey(0), D_IN, 8, 5, width_limit=LIMIT)
  with pytest.raises(error, match=match):
    call(params, jnp.ones((2, D_IN)))


def test_nn_keeps_the_flax_mlp_and_l2_norm():
  params = nn.MLP(hidden=(4, 4)).init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))
  leaves = jax.tree_util.tree_leaves(params)
  np.testing.assert_allclose(nn.squared_norm(params), sum(float((p ** 2).sum()) for p in leaves),
                             rtol=1e-6)
