"""Autoregressive bijectors and stacks (eqs. 9.1, 9.4 of the thesis) through distrax.

Compilation dominates the cost of these tests, so each stack is built once per module
(`_stack`) with its jitted maps, every check feeds them the same [3, 4] batch shape, and
Jacobians are taken inside one jitted function.
"""
import functools

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxthesis import flows

KEY = jax.random.PRNGKey(0)
# XLA's CPU backend at optimization level 0 compiles about twice as fast, same results.
_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
STACKS = {
    "maf-affine": dict(transformer="affine", num_layers=3, direction="maf", final_affine=True),
    "maf-dsf": dict(transformer="dsf", transformer_kwargs={"hidden_units": 4}, num_layers=2,
                    direction="maf"),
    "iaf-dsf": dict(transformer="dsf", transformer_kwargs={"hidden_units": 4}, num_layers=2,
                    direction="iaf", permutation="random", key=jax.random.PRNGKey(5)),
    "iaf-ddsf": dict(transformer="ddsf_cwn", transformer_kwargs={"hidden_units": 4},
                     num_layers=1, direction="iaf", ordering="reversed"),
}


def _flow(name, d=4, scale=0.5, **overrides):
  flow = flows.autoregressive_flow(d, hidden_sizes=(16,), output_init_scale=scale,
                                   **{**STACKS[name], **overrides})
  params = flow.init(KEY)
  if "affine" in params:  # make the final affine non-trivial
    params["affine"] = {"shift": jnp.arange(d) * 0.1, "log_scale": jnp.linspace(-0.3, 0.3, d)}
  return flow, params


def _parallel(bijector, direction):
  """The parallel (differentiable) map of the stack and its log-det."""
  return bijector.inverse_and_log_det if direction == "maf" else bijector.forward_and_log_det


def _map_log_det_and_jacobian(step):
  """One jitted function: `points [N, D] -> (step(points), log-dets [N], Jacobians [N, D, D])`."""
  @_jit
  def fn(points):
    out, log_det = step(points)
    jac = jax.vmap(jax.jacfwd(lambda p: step(p[None])[0][0]))(points)
    return out, log_det, jac
  return fn


def _slogdet64(jac):
  return np.linalg.slogdet(np.asarray(jac, np.float64))


@functools.lru_cache(maxsize=None)
def _stack(name):
  """The stack, its layers in application order and their jitted maps, built once."""
  flow, params = _flow(name)
  bijector = flow.bijector(params)
  layers = bijector.bijectors if isinstance(bijector, distrax.Chain) else [bijector]
  layers = layers if flow.direction == "maf" else layers[::-1]  # in application order
  parallel = _map_log_det_and_jacobian(_parallel(bijector, flow.direction))
  return dict(
      flow=flow, bijector=bijector, parallel=parallel,
      layers=([parallel] if len(layers) == 1 else
              [_map_log_det_and_jacobian(_parallel(l, flow.direction)) for l in layers]),
      forward=_jit(bijector.forward_and_log_det),
      inverse=_jit(bijector.inverse_and_log_det))


@pytest.mark.parametrize("name", sorted(STACKS))
def test_stack_log_det_matches_slogdet(name):
  x = 1.5 * jax.random.normal(jax.random.PRNGKey(1), (3, 4))
  _, log_det, jac = _stack(name)["parallel"](x)
  sign, expected = _slogdet64(jac)
  assert np.all(sign == 1.0)
  np.testing.assert_allclose(log_det, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(STACKS))
def test_stack_log_det_at_extreme_inputs(name):
  """|x| up to 1e4: finite, and each layer's log-det matches slogdet of its Jacobian.

  Per layer, because the whole stack's Jacobian at such points has entries spanning many
  orders of magnitude and its determinant cancels catastrophically even in float64.
  """
  stack = _stack(name)
  points = jnp.array([[1e4, -1e4, 30.0, -2.0], [-300.0, 1e3, -1e4, 1e4],
                      [-1e4, 25.0, 1e4, -30.0]])
  _, total, _ = stack["parallel"](points)
  assert jnp.all(jnp.isfinite(total))
  h, summed = points, jnp.zeros(3)
  for layer in stack["layers"]:
    out, log_det, jac = layer(h)
    assert jnp.all(jnp.isfinite(out)) and jnp.all(jnp.isfinite(log_det))
    _, expected = _slogdet64(jac)
    ok = np.isfinite(expected) & (expected > -60)
    np.testing.assert_allclose(log_det[ok], expected[ok], rtol=1e-3, atol=1e-3)
    h, summed = out, summed + log_det
  np.testing.assert_allclose(summed, total, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(STACKS))
def test_round_trip_through_sequential_direction(name):
  stack = _stack(name)
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(2), (3, 4))
  y, fwd_log_det = stack["forward"](x)
  x_again, inv_log_det = stack["inverse"](y)
  np.testing.assert_allclose(x_again, x, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(inv_log_det, -fwd_log_det, atol=1e-4, rtol=1e-4)


def test_maf_samples_are_finite_and_map_back_to_their_base_draws():
  """MAF direction, default (surjective) DDSF at moderate scale: every base draw, out to
  |z| = 8, has a finite sample whose parallel inverse returns it. With the thesis's bounded
  DDSF (`surjective=False`) draws outside the image give NaN, never a far finite value
  (issue 11 saw ~2.8e14 for 1 in 8 draws)."""
  z = jnp.concatenate([jax.random.normal(jax.random.PRNGKey(6), (30, 2)),
                       jnp.array([[8.0, -8.0]])])
  for surjective in (True, False):
    transformer = flows.ddsf_transformer(hidden_units=4, num_layers=2, surjective=surjective)
    flow = flows.autoregressive_flow(2, transformer, hidden_sizes=(8,), output_init_scale=1.0)
    b = flow.bijector(flow.init(KEY))  # MAF: forward (sampling) is the bisection direction
    x, log_det = _jit(b.forward_and_log_det)(z)
    finite = np.isfinite(np.asarray(x)).all(-1)
    if surjective:
      assert finite.all() and np.isfinite(np.asarray(log_det)).all()
    else:
      assert not finite.all()  # [8, -8] at least lies outside the bounded image
      assert np.all(np.isnan(np.asarray(log_det))[~finite])
      assert np.abs(np.asarray(x)[finite]).max() < 1e4
    z_back, inv_log_det = _jit(b.inverse_and_log_det)(jnp.where(finite[:, None], x, 0.0))
    np.testing.assert_allclose(z_back[finite], z[finite], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(inv_log_det[finite], -log_det[finite], atol=1e-3)


def test_stacked_ddsf_iaf_inverse_is_exact_on_box():
  """Two DDSF layers, reversed ordering, IAF direction: T(T^{-1}(y)) = y on [-5, 5]^2
  (it failed at 6 of 8 points before the linear tail, issue 11)."""
  flow = flows.autoregressive_flow(2, "ddsf", transformer_kwargs={"hidden_units": 4},
                                   num_layers=2, hidden_sizes=(8,), direction="iaf",
                                   ordering="reversed", output_init_scale=1.0)
  b = flow.bijector(flow.init(KEY))
  grid = jnp.linspace(-5.0, 5.0, 5)
  y = jnp.stack(jnp.meshgrid(grid, grid), -1).reshape(-1, 2)
  x = _jit(b.inverse)(y)
  np.testing.assert_allclose(_jit(b.forward)(x), y, atol=1e-4)


def test_gradients_flow_through_maf_sampling():
  """d/dparams of a loss on MAF samples (sequential solve + its log-det) against central
  finite differences along a random direction, in float64."""
  with jax.enable_x64(True):
    flow = flows.autoregressive_flow(3, "dsf", transformer_kwargs={"hidden_units": 3},
                                     hidden_sizes=(8,), output_init_scale=0.5)
    params = jax.tree.map(lambda v: v.astype(jnp.float64), flow.init(KEY))
    z = jax.random.normal(jax.random.PRNGKey(9), (4, 3), jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(10), len(jax.tree.leaves(params)))
    direction = jax.tree.unflatten(jax.tree.structure(params), [
        jax.random.normal(k, v.shape, v.dtype) for k, v in zip(keys, jax.tree.leaves(params))])

    def loss(params):
      x, log_det = flow.bijector(params).forward_and_log_det(z)
      return jnp.sum(jnp.sin(x)) + jnp.sum(log_det)

    @_jit
    def both(params):
      grad = jax.grad(loss)(params)
      along = sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(grad),
                                                 jax.tree.leaves(direction)))
      h = 1e-6
      shift = lambda s: jax.tree.map(lambda p, v: p + s * v, params, direction)
      return along, (loss(shift(h)) - loss(shift(-h))) / (2 * h)

    along, central = both(params)
  assert abs(float(along)) > 1e-3
  np.testing.assert_allclose(along, central, rtol=1e-6)


@pytest.mark.parametrize("name", ["maf-dsf", "iaf-ddsf"])
def test_identity_at_init(name):
  flow, exact = _flow(name, scale=0.0, permutation="none")
  # The default start is near the identity; same structure, so one compiled map serves.
  _, near = _flow(name, scale=1e-2, permutation="none")
  forward = _jit(lambda params, x: flow.bijector(params).forward_and_log_det(x))
  x = jax.random.normal(jax.random.PRNGKey(3), (5, 4))
  y, log_det = forward(exact, x)
  np.testing.assert_allclose(y, x, atol=1e-4)
  np.testing.assert_allclose(log_det, 0.0, atol=1e-4)
  np.testing.assert_allclose(forward(near, x)[0], x, atol=0.1)


def test_transformed_log_prob_equals_manual_change_of_variables():
  flow, params = _flow("maf-affine", d=3)
  x = jax.random.normal(jax.random.PRNGKey(4), (7, 3))
  transformer = flows.affine_transformer()
  made = flows.MADE(num_dims=3, num_params=2, hidden_sizes=(16,), output_init_scale=0.5)

  @_jit
  def manual_and_distrax(params, x):
    # Manual eq. 9.1: walk data -> noise through the layers, summing log|dT/dx|.
    h = (x - params["affine"]["shift"]) * jnp.exp(-params["affine"]["log_scale"])
    total = -params["affine"]["log_scale"].sum() * jnp.ones(7)
    for i in reversed(range(3)):
      layer = params["layers"][i]
      y, log_dy = transformer.forward_and_log_det({}, made.apply(layer["made"], h), h)
      h, total = y, total + log_dy.sum(-1)
      if i > 0:
        h = h[..., ::-1]
    base = jax.scipy.stats.norm.logpdf(h).sum(-1)
    dist = flow.distribution(params)
    # sample_and_log_prob agrees with log_prob at the samples (sequential direction).
    samples, log_prob = dist.sample_and_log_prob(seed=KEY, sample_shape=(5,))
    return base + total, dist.log_prob(x), log_prob, dist.log_prob(samples)

  manual, log_prob_x, sampled, rescored = manual_and_distrax(params, x)
  np.testing.assert_allclose(log_prob_x, manual, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(sampled, rescored, rtol=1e-4, atol=1e-4)


def test_context_conditions_the_flow_and_log_prob_jits_once():
  flow = flows.autoregressive_flow(2, "dsf", transformer_kwargs={"hidden_units": 3},
                                   hidden_sizes=(8,), context_size=3, output_init_scale=0.5)
  params = flow.init(KEY)
  x = jnp.ones((4, 2))
  c = jax.random.normal(KEY, (4, 3))
  chex.clear_trace_counter()

  @_jit
  @chex.assert_max_traces(n=1)
  def log_prob(params, x, c):
    return flow.distribution(params, c).log_prob(x)

  lp = log_prob(params, x, c)
  log_prob(params, x + 1.0, c)
  assert lp.shape == (4,) and len(set(np.asarray(lp).round(5))) == 4
  with pytest.raises(ValueError, match="context"):
    flow.bijector(params)
  with pytest.raises(ValueError, match=r"context must have shape \[..., 3\]"):
    flow.bijector(params, jnp.ones((4, 2)))


def test_argument_validation():
  with pytest.raises(ValueError, match="direction"):
    flows.autoregressive_flow(2, direction="sideways")
  with pytest.raises(ValueError, match="transformer name"):
    flows.autoregressive_flow(2, "spline")
  with pytest.raises(ValueError, match="key"):
    flows.autoregressive_flow(2, permutation="random", num_layers=2)
  with pytest.raises(ValueError, match="permutation"):
    flows.Permute([0, 0])
  flow, params = _flow("maf-dsf")
  with pytest.raises(ValueError, match=r"y must have shape \[..., 4\]"):
    flow.bijector(params).inverse(jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="floating"):
    flow.bijector(params).inverse(jnp.ones((2, 4), jnp.int32))
  # Errors name the argument the caller passed, whichever map runs (issue 14): MAF forward
  # runs the sequential T^{-1}, IAF inverse too.
  with pytest.raises(ValueError, match=r"x must have shape \[..., 4\]"):
    flow.bijector(params).forward(jnp.ones((2, 3)))
  flow, params = _flow("iaf-dsf")
  with pytest.raises(ValueError, match=r"y must have shape \[..., 4\]"):
    flow.bijector(params).inverse(jnp.ones((2, 3)))
  with pytest.raises(ValueError, match=r"x must have shape \[..., 4\]"):
    flow.bijector(params).forward(jnp.ones((2, 3)))
  with pytest.raises(TypeError, match="y must be a floating"):
    flow.bijector(params).inverse_and_log_det(jnp.ones((2, 4), jnp.int32))


def test_trained_2d_flow_density_integrates_to_one():
  """Fit a 2x2 Gaussian grid by maximum likelihood, then integrate exp(log_prob) on a grid."""
  flow = flows.autoregressive_flow(2, "dsf", transformer_kwargs={"hidden_units": 8},
                                   hidden_sizes=(32, 32), num_layers=1, output_init_scale=0.1)
  centers = jnp.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])
  optimizer = optax.adam(1e-2)

  def loss(params, key):
    k1, k2 = jax.random.split(key)
    x = centers[jax.random.randint(k1, (256,), 0, 4)] + 0.5 * jax.random.normal(k2, (256, 2))
    return -flow.distribution(params).log_prob(x).mean()

  @_jit
  def train(params):
    def step(carry, key):
      params, opt_state = carry
      value, grads = jax.value_and_grad(loss)(params, key)
      updates, opt_state = optimizer.update(grads, opt_state)
      return (optax.apply_updates(params, updates), opt_state), value
    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                       jax.random.split(KEY, 300))
    return params, losses

  params, losses = train(flow.init(KEY))
  assert losses[-20:].mean() < losses[:20].mean() - 0.5  # it learned something
  grid = jnp.linspace(-7.0, 7.0, 281)
  xx = jnp.stack(jnp.meshgrid(grid, grid), -1).reshape(-1, 2)
  density = jnp.exp(_jit(flow.distribution(params).log_prob)(xx))
  mass = float(density.sum() * (grid[1] - grid[0]) ** 2)
  assert abs(mass - 1.0) < 0.02, mass
