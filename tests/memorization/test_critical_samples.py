"""LASS (Alg. 1), the FGSM-only search and the critical sample ratio (3.4.1)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.memorization import critical_samples as cs
from jaxthesis.memorization.models import mlp_apply, mlp_init


def _linear_problem(num_points=64, dim=20, radius=0.3, seed=0):
  """Binary linear logits [0, w·x + b] and points at known margins s = w·x + b.

  The L∞ box of radius r around x reaches s' = s ± r‖w‖₁ and nothing beyond, so x is
  critical iff |s| < r‖w‖₁.
  """
  kw, kx, ks = jax.random.split(jax.random.PRNGKey(seed), 3)
  w = jax.random.normal(kw, (dim,))
  b = 0.3
  reach = radius * jnp.sum(jnp.abs(w))
  x0 = jax.random.normal(kx, (num_points, dim))
  half = num_points // 2
  frac = jnp.concatenate([jnp.linspace(0.05, 0.8, half), jnp.linspace(1.05, 3.0, half)])
  sign = jnp.where(jnp.arange(num_points) % 2 == 0, 1.0, -1.0)
  target = sign * frac * reach
  s0 = x0 @ w + b
  x = x0 + ((target - s0) / jnp.sum(w * w))[:, None] * w
  crossing = np.asarray(frac) < 1.0
  logits_fn = lambda z: jnp.stack([jnp.zeros(z.shape[0]), z @ w + b], axis=-1)
  return logits_fn, x, crossing, w, b, float(reach)


def test_linear_classifier_closed_form():
  logits_fn, x, crossing, w, b, reach = _linear_problem()
  out = cs.lass(logits_fn, x, jax.random.PRNGKey(1), data_range=None)
  critical = np.asarray(out.critical)
  np.testing.assert_array_equal(critical, crossing)       # found iff the box crosses
  s_x, s_hat = np.asarray(x @ w + b), np.asarray(out.points @ w + b)
  assert np.all(np.sign(s_hat[critical]) != np.sign(s_x[critical]))
  np.testing.assert_array_less(np.abs(np.asarray(out.points - x)), 0.3 + 1e-6)
  # FGSM with a step of r lands on the box corner that minimises the margin, which for a
  # binary linear model is the exact answer.
  fgsm = cs.fgsm_search(logits_fn, x, data_range=None)
  np.testing.assert_array_equal(np.asarray(fgsm.critical), crossing)
  np.testing.assert_allclose(np.abs(np.asarray(fgsm.points @ w + b) - s_x), reach, rtol=1e-4)


def _random_mlp(seed=0, dim=12, width=16, classes=4):
  params = mlp_init(jax.random.PRNGKey(seed), dim, classes, width)
  params = jax.tree_util.tree_map(lambda p: 3.0 * p, params)  # moderate scale, not init
  return lambda z: mlp_apply(params, z)


def test_iterates_stay_in_box_and_data_range():
  logits_fn = _random_mlp()
  x = jax.random.uniform(jax.random.PRNGKey(2), (40, 12))
  x = jnp.where(x < 0.2, 0.0, jnp.where(x > 0.8, 1.0, x))  # many pixels on the range edges
  radius_px = 40.0
  r = radius_px / 255.0

  @jax.jit
  def intermediate(x):  # iterates: the search stopped after 1, 2 and 8 iterations
    return jnp.stack([cs.lass(logits_fn, x, jax.random.PRNGKey(3), alpha=20.0, beta=30.0,
                              radius=radius_px, max_iterations=i).points for i in (1, 2, 8)])

  p = np.asarray(intermediate(x))
  assert np.all(np.abs(p - np.asarray(x)[None]) <= r + 1e-6)
  assert p.min() >= 0.0 and p.max() <= 1.0
  assert np.abs(p - np.asarray(x)[None]).max() > 0.9 * r  # the box is actually reached


def test_box_holds_for_points_outside_the_data_range():
  # randX noise and normalized data leave [0, 1]: there the box [x - r, x + r] and the data
  # range need not meet. The box must win (Eq. 3.1's constraint); clipping into the empty
  # intersection once moved such a point to the range's edge, 0.5 away, and flagged it.
  logits_fn = lambda z: jnp.stack([z[:, 0], jnp.full(z.shape[:1], 1.2)], axis=-1)
  x = jnp.array([[1.5, 0.5], [-0.4, 0.5]])  # class 0 (1.5 > 1.2) by a margin of 0.3 >> r
  r = cs.RADIUS / cs.PIXEL_RANGE
  for out in (cs.lass(logits_fn, x, jax.random.PRNGKey(0)), cs.fgsm_search(logits_fn, x)):
    assert np.abs(np.asarray(out.points - x)).max() <= r + 1e-6
  assert not bool(cs.lass(logits_fn, x[:1], jax.random.PRNGKey(0)).critical[0])
  # points inside the range are clipped into the intersection as before
  inside = jnp.array([[0.9995, 0.0002]])
  p = np.asarray(cs.lass(lambda z: jnp.stack([z[:, 0], 2.0 - z[:, 0]], -1), inside,
                         jax.random.PRNGKey(0), alpha=255.0, radius=1.0).points)
  assert p.max() <= 1.0 and p.min() >= 0.0


def _iterated_fgsm(logits_fn, x, alpha, radius, iterations):
  """Reference: per-sample Python loop of x̃ ← clip(x̃ + α sign ∇ℓ(x̃, k)), stop when flipped."""
  x = np.asarray(x)
  k = np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))
  points, critical, found = x.copy(), np.zeros(len(x), bool), np.zeros(len(x), int)
  grad = jax.jit(jax.grad(lambda z, c: -jax.nn.log_softmax(logits_fn(z[None]))[0, c]))
  predict = jax.jit(lambda z: jnp.argmax(logits_fn(z[None]), -1)[0])
  for b in range(len(x)):
    z = x[b].copy()
    for i in range(iterations):
      z = np.clip(z + alpha * np.sign(np.asarray(grad(jnp.asarray(z), k[b]))), x[b] - radius,
                  x[b] + radius)
      if int(predict(jnp.asarray(z))) != k[b]:
        critical[b], found[b] = True, i + 1
        break
    points[b] = z
  return points, critical, found


def test_beta_zero_is_iterated_fgsm():
  logits_fn = _random_mlp(seed=1)
  x = jax.random.normal(jax.random.PRNGKey(4), (12, 12))
  out = cs.lass(logits_fn, x, jax.random.PRNGKey(5), alpha=0.05, beta=0.0, radius=0.4,
                max_iterations=15, data_range=None)
  points, critical, found = _iterated_fgsm(logits_fn, x, 0.05, 0.4, 15)
  assert 0 < critical.sum() < len(critical)  # the check covers both outcomes
  np.testing.assert_array_equal(np.asarray(out.critical), critical)
  np.testing.assert_array_equal(np.asarray(out.found_at), found)
  np.testing.assert_allclose(np.asarray(out.points), points, atol=1e-5)


def test_early_exit_equals_running_to_the_limit():
  logits_fn, x, crossing, *_ = _linear_problem(num_points=32)

  @jax.jit
  def both(x):
    kw = dict(alpha=0.1, beta=0.1, radius=0.3, max_iterations=60, data_range=None)
    return (cs.lass(logits_fn, x, jax.random.PRNGKey(7), **kw),
            cs.lass(logits_fn, x, jax.random.PRNGKey(7), early_exit=False, **kw))

  # all points (some never critical: runs to the limit) / only crossing ones (exits early)
  for points, all_critical in ((x, False), (x[np.flatnonzero(crossing)], True)):
    early, full = both(points)
    for a, b in zip(early[:2] + early[3:], full[:2] + full[3:]):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert int(full.iterations) == 60
    assert bool(np.asarray(early.critical).all()) == all_critical
    if all_critical:
      assert int(early.iterations) == int(np.asarray(early.found_at).max()) < 60
    else:
      assert int(early.iterations) == 60


def test_lass_finds_at_least_as_many_as_fgsm_and_csr():
  logits_fn = _random_mlp(seed=3)
  x = jax.random.uniform(jax.random.PRNGKey(8), (200, 12))
  kw = dict(radius=25.0)
  lass_csr = float(cs.critical_sample_ratio(logits_fn, x, jax.random.PRNGKey(9), **kw))
  fgsm = cs.fgsm_search(logits_fn, x, **kw)
  fgsm_csr = float(np.mean(np.asarray(fgsm.critical)))
  assert 0.0 < fgsm_csr <= lass_csr < 1.0


def test_jit_vmap_over_models_matches_each_model():
  params = jax.vmap(lambda k: mlp_init(k, 6, 3, 8))(jax.random.split(jax.random.PRNGKey(0), 3))
  params = jax.tree_util.tree_map(lambda p: 3.0 * p, params)
  x = jax.random.normal(jax.random.PRNGKey(1), (10, 6))
  run = lambda p: cs.lass(lambda z: mlp_apply(p, z), x, jax.random.PRNGKey(2), radius=0.5,
                          max_iterations=20, data_range=None).critical
  batched = np.asarray(jax.jit(jax.vmap(run))(params))
  one = jax.jit(run)
  for r in range(3):
    np.testing.assert_array_equal(batched[r], np.asarray(one(jax.tree_util.tree_map(
        lambda a: a[r], params))))


@pytest.mark.parametrize("kwargs, match", [
    (dict(radius=0.0), "radius must be"), (dict(radius=-1.0), "radius must be"),
    (dict(alpha=-0.1), "alpha must be"), (dict(beta=float("inf")), "beta must be"),
    (dict(max_iterations=0), "max_iterations"), (dict(data_range=(1.0, 0.0)), "data_range"),
    (dict(pixel_range=0.0), "pixel_range")])
def test_bad_arguments_raise_before_tracing(kwargs, match):
  calls = []
  logits_fn = lambda z: calls.append(1) or jnp.zeros((z.shape[0], 2))
  with pytest.raises(ValueError, match=match):
    cs.lass(logits_fn, jnp.zeros((3, 4)), jax.random.PRNGKey(0), **kwargs)
  assert not calls  # nothing was traced
  with pytest.raises(TypeError, match="x must be a floating"):
    cs.lass(logits_fn, jnp.zeros((3, 4), jnp.int32), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="x must be a batch"):
    cs.lass(logits_fn, jnp.zeros(4), jax.random.PRNGKey(0))
