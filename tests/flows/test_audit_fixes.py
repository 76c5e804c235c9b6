"""Regression tests for the chapter-9 flow audit: bounded inverses on flattened maps,
half-precision inputs to the sequential direction, and argument validation.

Each test fails on the code before the fix (noted per test) and asserts mathematics
where there is some: round trips, equal results, finite derivatives.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import flows
from jaxthesis.flows import bisection

# XLA's CPU backend at optimization level 0 compiles about twice as fast, same results.
_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})

# Points where the thesis's bounded DDSF (pseudo-parameters ~ N(0, 1)) has flattened to
# float32 resolution on the left: f(x) equals f(-4^24), the expanded bracket's end.
FAR = np.concatenate([-np.linspace(5.0, 60.0, 12), np.linspace(5.0, 60.0, 12)]).astype(np.float32)
NEAR = np.linspace(-3.0, 3.0, 13).astype(np.float32)


def _bounded_round_trip(name, seed, x):
  transformer = flows.make_transformer(name, surjective=False)
  params_key, pseudo_key = jax.random.split(jax.random.PRNGKey(seed))
  params = transformer.init(params_key)
  pseudo = jax.random.normal(pseudo_key, x.shape + (transformer.num_pseudo_params,))

  @_jit
  def run(params, pseudo, x):
    y, _ = transformer.forward_and_log_det(params, pseudo, x)
    x_back, inverted = transformer.inverse_and_flag(params, pseudo, y)
    y_back, log_slope = transformer.forward_and_log_det(
        params, pseudo, jnp.where(inverted, x_back, 0.0))
    # d x / d y summed over the points: finite wherever the inverse is (0 elsewhere).
    dx_dy = jax.grad(lambda y: jnp.sum(jnp.where(
        inverted, transformer.inverse(params, pseudo, y), 0.0)))(y)
    return y, x_back, inverted, y_back, log_slope, dx_dy

  return run(params, pseudo, jnp.asarray(x))


@pytest.mark.parametrize("name", ["ddsf", "ddsf_cwn"])
@pytest.mark.parametrize("seed", [0, 2])
def test_bounded_ddsf_never_returns_a_far_away_inverse(name, seed):
  """Before the fix ddsf_cwn gave x = -2.81e14 with inverted=True (and dx/dy = inf) for
  x = -50 (y = -4.264, seed 0) and x = -50 / -60: the bracket end -4^24 maps to the
  target exactly, so `fn(lower) <= target` held and bisection returned `lower`."""
  y, x_back, inverted, y_back, log_slope, dx_dy = map(np.asarray, _bounded_round_trip(
      name, seed, FAR))
  # NaN is the flag: exactly where inverted is False.
  np.testing.assert_array_equal(np.isnan(x_back), ~inverted)
  # Where inverted, x_back is a preimage of y (to float32 resolution of the flat map) at
  # a finite slope, near the point that was mapped: no bracket end.
  np.testing.assert_allclose(y_back[inverted], y[inverted], rtol=0, atol=1e-5)
  assert np.all(np.isfinite(log_slope[inverted]))
  assert np.all(log_slope[inverted] > np.log(np.finfo(np.float32).tiny))
  assert np.all(np.abs(x_back[inverted]) < 100.0), x_back
  assert np.all(np.isfinite(dx_dy))
  if name == "ddsf_cwn":  # the audit's reproduction: x = -50 (and seed 0: y = -4.264)
    at = int(np.flatnonzero(FAR == -50.0)[0])
    assert not inverted[at] and np.isnan(x_back[at])
    if seed == 0:
      np.testing.assert_allclose(y[at], -4.264, atol=1e-3)


@pytest.mark.parametrize("name", ["ddsf", "ddsf_cwn", "dsf"])
def test_bounded_inverse_unchanged_on_well_conditioned_points(name):
  for seed in (0, 2):
    if name == "dsf":
      transformer = flows.make_transformer("dsf", surjective=False)
      pseudo = jax.random.normal(jax.random.PRNGKey(seed), NEAR.shape + (48,))
      y, _ = transformer.forward_and_log_det({}, pseudo, NEAR)
      x_back, inverted = transformer.inverse_and_flag({}, pseudo, y)
    else:
      _, x_back, inverted, *_ = _bounded_round_trip(name, seed, NEAR)
    assert np.all(np.asarray(inverted))
    np.testing.assert_allclose(x_back, NEAR, rtol=1e-4, atol=1e-4)


def test_inverse_at_the_bracket_growth_points_is_still_found():
  """Targets f(+-1), f(+-4) sit exactly on bracket ends that `expand_bracket` tries, where
  the eager and compiled maps can differ in the last bit (a strict `fn(lower) < target`
  lost x = -1 and x = 1 this way); both eager and jitted, they stay inverted."""
  x = jnp.array([-4.0, -1.0, 1.0, 4.0, 0.0])
  transformer = flows.make_transformer("ddsf", surjective=False)
  for seed in (0, 2):
    params_key, pseudo_key = jax.random.split(jax.random.PRNGKey(seed))
    params = transformer.init(params_key)
    pseudo = jax.random.normal(pseudo_key, x.shape + (transformer.num_pseudo_params,))
    for forward, inverse in ((transformer.forward_and_log_det, transformer.inverse_and_flag),
                             (_jit(transformer.forward_and_log_det),
                              _jit(transformer.inverse_and_flag))):
      y, _ = forward(params, pseudo, x)
      x_back, inverted = inverse(params, pseudo, y)
      assert np.all(np.asarray(inverted)), (seed, inverted)
      np.testing.assert_allclose(x_back, x, atol=1e-4)


def test_solve_increasing_on_a_map_flat_at_the_lower_end():
  # clip(x, -1, 1) is flat below -1: the bracket [-10, 10] holds a root of -1 (-10 is
  # one), but so is every x below -1, and bisection returns the bracket end.
  flat = lambda x: jnp.clip(x, -1.0, 1.0)
  log_slope = lambda x: jnp.where(jnp.abs(x) < 1.0, 0.0, -jnp.inf)
  solution = flows.solve_increasing(flat, jnp.array([-1.0, 0.5]), -10.0, 10.0, 40)
  np.testing.assert_array_equal(solution.bracketed, [True, True])
  np.testing.assert_allclose(solution.root, [-10.0, 0.5], atol=1e-5)
  # The slope there is zero: the root is unflagged; the other one is kept as it was.
  out = bisection.unflag_flat_roots(solution, log_slope(solution.root))
  np.testing.assert_array_equal(out.bracketed, [False, True])
  np.testing.assert_array_equal(out.root, solution.root)


def test_unflag_flat_roots():
  solution = bisection.Solution(jnp.zeros(5), jnp.array([True, True, True, True, False]))
  log_slope = jnp.array([0.0, -80.0, -200.0, jnp.nan, 0.0])
  out = bisection.unflag_flat_roots(solution, log_slope)
  np.testing.assert_array_equal(out.bracketed, [True, True, False, False, False])
  np.testing.assert_array_equal(out.root, solution.root)
  with pytest.raises(ValueError, match="log_slope"):
    bisection.unflag_flat_roots(solution, jnp.zeros(3))
  with pytest.raises(TypeError, match="log_slope"):
    bisection.unflag_flat_roots(solution, jnp.zeros(5, jnp.int32))
  with pytest.raises(TypeError, match="solution"):
    bisection.unflag_flat_roots((jnp.zeros(5), jnp.ones(5, bool)), log_slope)


@pytest.mark.parametrize("transformer", ["affine", "iaf_gate", "dsf"])
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_sequential_direction_promotes_half_precision_as_the_parallel_one(transformer, dtype):
  """Before the fix affine / iaf_gate failed in tracing ("scan body function carry input
  and carry output must have equal types") and dsf bisected in the half dtype."""
  kwargs = {"hidden_units": 4} if transformer == "dsf" else None
  flow = flows.autoregressive_flow(3, transformer, hidden_sizes=(8,), transformer_kwargs=kwargs,
                                   output_init_scale=0.5)
  bijector = flow.bijector(flow.init(jax.random.PRNGKey(0)))
  y = jnp.array([[0.3, -0.5, 1.2], [1.0, 0.25, -2.0]], dtype)
  y32 = y.astype(jnp.float32)
  x, log_det = bijector.forward_and_log_det(y)  # maf: forward is the sequential solve
  x32, log_det32 = bijector.forward_and_log_det(y32)
  _, parallel_log_det = bijector.inverse_and_log_det(y)
  assert x.dtype == log_det.dtype == parallel_log_det.dtype == jnp.float32
  np.testing.assert_array_equal(x, x32)
  np.testing.assert_array_equal(log_det, log_det32)
  y_back, _ = bijector.inverse_and_log_det(x)
  np.testing.assert_allclose(y_back, y32, atol=1e-4)


def test_transformers_accept_python_scalars():
  """Before the fix dsf / ddsf `forward_and_log_det(params, pseudo, 0.5)` raised
  "'TypedFloat' object is not subscriptable"."""
  for name in flows.TRANSFORMERS:
    for surjective in ((True, False) if "sf" in name else (True,)):
      transformer = flows.make_transformer(name, **({"surjective": surjective}
                                                    if "sf" in name else {}))
      params = transformer.init(jax.random.PRNGKey(0))
      pseudo = 0.1 * jnp.ones(transformer.num_pseudo_params)
      y, log_det = transformer.forward_and_log_det(params, pseudo, 0.5)
      y_ref, log_det_ref = transformer.forward_and_log_det(params, pseudo, jnp.float32(0.5))
      np.testing.assert_allclose([y, log_det], [y_ref, log_det_ref], rtol=1e-6)
      y_np, _ = transformer.forward_and_log_det(params, np.asarray(pseudo), 0.5)
      np.testing.assert_allclose(y_np, y_ref, rtol=1e-6)
      np.testing.assert_allclose(transformer.inverse(params, pseudo, float(y_ref)), 0.5,
                                 atol=1e-5)
      x, inverted = transformer.inverse_and_flag(params, pseudo, float(y_ref))
      assert bool(inverted) and abs(float(x) - 0.5) < 1e-5


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_dims=0), "num_dims"), (dict(num_dims=True), "num_dims"),
    (dict(num_params=0), "num_params"), (dict(num_params=-1), "num_params"),
    (dict(num_params=True), "num_params"), (dict(hidden_sizes=(-3,)), "hidden_sizes"),
    (dict(hidden_sizes=(True,)), "hidden_sizes"), (dict(hidden_sizes=(2.0,)), "hidden_sizes"),
    (dict(hidden_sizes=8), "hidden_sizes"), (dict(activation="bogus"), "activation"),
    (dict(output_init_scale=-0.1), "output_init_scale"),
    (dict(output_init_scale=float("nan")), "output_init_scale"),
    (dict(output_init_scale=True), "output_init_scale"),
])
def test_made_rejects_bad_settings_at_construction(kwargs, match):
  """Before the fix: ZeroDivisionError / slice errors at init, or no error at all."""
  with pytest.raises(ValueError, match=match):
    flows.MADE(**{"num_dims": 3, "num_params": 2, "hidden_sizes": (8,), **kwargs})


def test_made_accepts_good_settings():
  for kwargs in [dict(num_dims=np.int64(3), num_params=np.int32(2)), dict(hidden_sizes=()),
                 dict(hidden_sizes=[4, 4]), dict(output_init_scale=0)]:
    made = flows.MADE(**{"num_dims": 3, "num_params": 2, "hidden_sizes": (8,), **kwargs})
    params = made.init(jax.random.PRNGKey(0), jnp.zeros(3))
    assert made.apply(params, jnp.ones(3)).shape == (3, 2)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(activation="bogus"), ValueError, "activation"),
    (dict(output_init_scale=-1.0), ValueError, "output_init_scale"),
    (dict(output_init_scale=float("nan")), ValueError, "output_init_scale"),
    (dict(final_affine=1), TypeError, "final_affine"),
    (dict(final_affine="yes"), TypeError, "final_affine"),
    (dict(num_dims=True), ValueError, "num_dims"),
    (dict(hidden_sizes=(True,)), ValueError, "hidden_sizes"),
    (dict(num_layers=True), ValueError, "num_layers"),
    (dict(context_size=True), ValueError, "context_size"),
])
def test_autoregressive_flow_rejects_bad_settings_at_construction(kwargs, error, match):
  with pytest.raises(error, match=match):
    flows.autoregressive_flow(**{"num_dims": 2, "transformer": "affine", **kwargs})


def test_permute_rejects_empty_and_bool_permutations():
  for bad in ([], (), [True, False]):
    with pytest.raises(ValueError, match="permutation"):
      flows.Permute(bad)
  assert flows.Permute([1, 0]).forward(jnp.array([1.0, 2.0])).tolist() == [2.0, 1.0]


def test_autoregressive_bijector_rejects_bool_num_dims():
  transformer = flows.make_transformer("affine")
  with pytest.raises(ValueError, match="num_dims"):
    flows.AutoregressiveBijector(lambda p, x, c: x, {}, transformer, {}, True)


@pytest.mark.parametrize("direction", ["maf", "iaf"])
def test_context_batch_must_broadcast_against_the_points(direction):
  """Before the fix x [5, 2] with context [3, 3] failed inside MADE with an XLA-style
  broadcasting error that did not name `context`."""
  flow = flows.autoregressive_flow(2, "affine", hidden_sizes=(8,), context_size=3,
                                   direction=direction, num_layers=2)
  params = flow.init(jax.random.PRNGKey(0))
  x = jnp.zeros((5, 2))
  bijector = flow.bijector(params, jnp.zeros((3, 3)))
  for method in (bijector.forward_and_log_det, bijector.inverse_and_log_det):
    with pytest.raises(ValueError, match="context"):
      method(x)
  with pytest.raises(ValueError, match="context"):
    flow.distribution(params, jnp.zeros((3, 3))).log_prob(x)
  # Broadcastable contexts still work, and a batch of contexts equals one at a time.
  context = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  log_prob = flow.distribution(params, context).log_prob(x)
  single = flow.distribution(params, context[1]).log_prob(x[1])
  np.testing.assert_allclose(log_prob[1], single, rtol=1e-5, atol=1e-5)
  assert flow.distribution(params, context[0]).log_prob(x).shape == (5,)
  with pytest.raises(ValueError, match="context"):
    flows.AutoregressiveBijector(lambda p, x, c: x, {}, flows.make_transformer("affine"), {},
                                 2, context=jnp.float32(1.0))
