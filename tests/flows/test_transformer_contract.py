"""The contract every registered transformer passes, in both directions (chapter 9, eqs. 9.5-9.10).

Over the whole `flows.TRANSFORMERS` registry, with the defaults (every transformer a
bijection of R) and pseudo-parameters drawn at moderate scale (N(0, 1.5^2), not the
near-zero start of training):

* log dy/dx against `slogdet(jacfwd)` of the forward map, and of the inverse map
  (differentiated by the implicit-function theorem);
* round trips both ways on [-5, 5]^D;
* surjectivity: T(T^{-1}(y)) = y on a grid of y out to +-20, every point inverted;
* normalization: 1-D densities and a 2-D flow's densities, both ways (N(T(x)) T'(x) and
  N(T^{-1}(y)) / T'(T^{-1}(y))), integrate to 1 +- 1e-3 by quadrature on an asinh-spaced
  grid over +-2e4, which needs no inverse to place its points;
* finiteness at |x| = 1e4, of values, log-dets and gradients, both ways, also through a
  2-D flow;
* derivatives of the inverse against central finite differences (float64);
* inputs checked before tracing, naming the argument (issue 14).

Compilation dominates the cost: each transformer's jitted maps are built once
(`_compiled`), every test feeds them the same shapes, at XLA optimization level 0.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

from jaxthesis import flows

# Small widths so the suite stays fast; the last test asserts every registry entry is here.
CASES = {
    "affine": {},
    "iaf_gate": {},
    "dsf": {"hidden_units": 4},
    "ddsf": {"hidden_units": 4, "num_layers": 2},
    "ddsf_cwn": {"hidden_units": 4, "num_layers": 3},
}
NAMES = sorted(CASES)
D = 5
ROWS = 4001            # every vmapped call uses [ROWS, D] points, so each compiles once
PSEUDO_SCALE = 1.5
EXTREME = jnp.array([-1e4, -1e3, 0.3, 1e3, 1e4])

_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})


def _asinh_grid(limit, num):
  """Quadrature nodes x = sinh(u) for u uniform on +-asinh(limit), and weights dx/du du."""
  u = np.linspace(-np.arcsinh(limit), np.arcsinh(limit), num)
  weights = np.cosh(u) * (u[1] - u[0])
  weights[[0, -1]] *= 0.5  # trapezoid
  return jnp.asarray(np.sinh(u), jnp.float32), jnp.asarray(weights, jnp.float32)


def _transformer(name, **overrides):
  return flows.make_transformer(name, **{**CASES[name], **overrides})


def _draw(name, seed):
  t = _transformer(name)
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return t, t.init(k1), PSEUDO_SCALE * jax.random.normal(k2, (D, t.num_pseudo_params))


@functools.lru_cache(maxsize=None)
def _compiled(name):
  """Jitted maps of one transformer over [D] points and [ROWS, D] rows of points."""
  t = _transformer(name)
  rows = lambda fn: _jit(jax.vmap(fn, in_axes=(None, None, 0)))
  value = lambda params, pseudo, x: t.forward_and_log_det(params, pseudo, x)[0]

  def forward_loss(params, pseudo, x):  # a maximum-likelihood term through T
    y, log_det = t.forward_and_log_det(params, pseudo, x)
    return jnp.sum(log_det - 0.5 * y ** 2)

  def inverse_loss(params, pseudo, y):  # a sampling term through T^{-1}: x and its log-det
    x = t.inverse(params, pseudo, y)
    return jnp.sum(0.1 * x - t.forward_and_log_det(params, pseudo, x)[1])

  return dict(
      forward=_jit(t.forward_and_log_det),
      inverse_and_flag=_jit(t.inverse_and_flag),
      forward_jacobian=_jit(jax.jacfwd(value, argnums=2)),
      inverse_jacobian=_jit(jax.jacfwd(t.inverse, argnums=2)),
      forward_grads=_jit(jax.grad(forward_loss, argnums=(1, 2))),
      inverse_grads=_jit(jax.grad(inverse_loss, argnums=(1, 2))),
      forward_rows=rows(t.forward_and_log_det),
      inverse_rows=rows(t.inverse_and_flag))


@pytest.fixture(params=NAMES)
def name(request):
  return request.param


@pytest.mark.parametrize("seed", [0, 1])
def test_log_dets_match_slogdet_of_jacobians_both_ways(name, seed):
  t, params, pseudo = _draw(name, seed)
  fns = _compiled(name)
  x = 2.0 * jax.random.normal(jax.random.PRNGKey(seed + 10), (D,))
  y, log_det = fns["forward"](params, pseudo, x)
  sign, expected = np.linalg.slogdet(np.asarray(fns["forward_jacobian"](params, pseudo, x),
                                                np.float64))
  assert sign == 1.0
  np.testing.assert_allclose(log_det.sum(), expected, rtol=1e-4, atol=1e-4)
  # The inverse's Jacobian by forward-mode autodiff through the solve: log|det| = -sum
  # log dy/dx at the solved point, and elementwise 1 / tau'(x).
  jac = np.asarray(fns["inverse_jacobian"](params, pseudo, y), np.float64)
  sign, expected = np.linalg.slogdet(jac)
  assert sign == 1.0
  np.testing.assert_allclose(-log_det.sum(), expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(np.log(np.diag(jac)), -log_det, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(jac - np.diag(np.diag(jac)), 0.0, atol=0)


@pytest.mark.parametrize("seed", [2, 3])
def test_round_trips_both_ways_on_box(name, seed):
  """x -> T -> T^{-1} and y -> T^{-1} -> T on [-5, 5]^D, to float32 resolution of y.

  An error of r in y moves T^{-1}(y) by r / tau'(x), so the x-round trip is checked in
  y units: |x' - x| tau'(x) <= 2e-6 (1 + |y|), about 16 float32 spacings of y.
  """
  t, params, pseudo = _draw(name, seed)
  fns = _compiled(name)
  grid = jnp.linspace(-5.0, 5.0, ROWS)[:, None] * jnp.ones(D)
  y, log_det = fns["forward_rows"](params, pseudo, grid)
  x_back, inverted = fns["inverse_rows"](params, pseudo, y)
  assert bool(inverted.all())
  np.testing.assert_array_less(jnp.abs(x_back - grid) * jnp.exp(log_det),
                               2e-6 * (1.0 + jnp.abs(y)))
  x, inverted = fns["inverse_rows"](params, pseudo, grid)
  assert bool(inverted.all())
  y_back, _ = fns["forward_rows"](params, pseudo, x)
  np.testing.assert_array_less(jnp.abs(y_back - grid), 2e-6 * (1.0 + jnp.abs(grid)))


def test_onto_the_real_line(name):
  """T(T^{-1}(y)) = y for y out to +-20 (beyond the +-14.5 the bounded maps reach)."""
  t, params, pseudo = _draw(name, 4)
  fns = _compiled(name)
  targets = jnp.linspace(-20.0, 20.0, ROWS)[:, None] * jnp.ones(D)
  x, inverted = fns["inverse_rows"](params, pseudo, targets)
  assert bool(inverted.all()) and bool(jnp.isfinite(x).all())
  y, log_det = fns["forward_rows"](params, pseudo, x)
  np.testing.assert_array_less(jnp.abs(y - targets), 2e-6 * (1.0 + jnp.abs(targets)))
  assert t.surjective
  # dy/dx is bounded below (by the tail slope's floor for the sigmoidal transformers).
  assert float(log_det.min()) >= np.log(1e-3) - 1e-4


def test_one_dimensional_densities_integrate_to_one_both_ways(name):
  """int N(T(x)) T'(x) dx = 1 and int N(T^{-1}(y)) / T'(T^{-1}(y)) dy = 1, per dimension."""
  t, params, pseudo = _draw(name, 5)
  fns = _compiled(name)
  nodes, weights = _asinh_grid(2e4, ROWS)
  points = nodes[:, None] * jnp.ones(D)
  y, log_det = fns["forward_rows"](params, pseudo, points)
  mass_forward = jnp.sum(weights[:, None] * jnp.exp(norm.logpdf(y) + log_det), axis=0)
  x, inverted = fns["inverse_rows"](params, pseudo, points)
  assert bool(inverted.all())
  _, log_det_at_x = fns["forward_rows"](params, pseudo, x)
  mass_inverse = jnp.sum(weights[:, None] * jnp.exp(norm.logpdf(x) - log_det_at_x), axis=0)
  np.testing.assert_allclose(mass_forward, 1.0, atol=1e-3)
  np.testing.assert_allclose(mass_inverse, 1.0, atol=1e-3)


def test_finite_at_large_inputs_both_ways_with_finite_gradients(name):
  t, params, pseudo = _draw(name, 6)
  fns = _compiled(name)
  y, log_det = fns["forward"](params, pseudo, EXTREME)
  assert bool(jnp.isfinite(y).all() and jnp.isfinite(log_det).all())
  # Where the Jacobian is representable in float32, it agrees with autodiff.
  direct = jnp.log(jnp.diag(fns["forward_jacobian"](params, pseudo, EXTREME)))
  ok = jnp.isfinite(direct) & (direct > -80)
  np.testing.assert_allclose(log_det[ok], direct[ok], rtol=1e-3, atol=1e-3)
  x, inverted = fns["inverse_and_flag"](params, pseudo, EXTREME)
  assert bool(inverted.all() and jnp.isfinite(x).all())
  back, log_det_at_x = fns["forward"](params, pseudo, x)
  assert bool(jnp.isfinite(log_det_at_x).all())
  np.testing.assert_allclose(back, EXTREME, rtol=2e-6)
  for grads in (fns["forward_grads"](params, pseudo, EXTREME),
                fns["inverse_grads"](params, pseudo, EXTREME)):
    assert all(bool(jnp.isfinite(g).all()) for g in grads)


# ---------------------------------------------------------------- a 2-D flow per transformer


@functools.lru_cache(maxsize=None)
def _flow_2d(name):
  """A one-layer 2-D MAF-direction flow at moderate scale and its jitted maps.

  Its `inverse` is the parallel T and its `forward` the sequential T^{-1}, so it gives the
  two densities x -> N(T(x)) |det dT/dx| (the MAF's) and y -> N(T^{-1}(y)) |det dT^{-1}/dy|
  (the IAF's with the same conditioner and transformer).
  """
  flow = flows.autoregressive_flow(2, _transformer(name), hidden_sizes=(8,),
                                   output_init_scale=1.0, direction="maf")
  params = flow.init(jax.random.PRNGKey(7))
  base = lambda v: norm.logpdf(v).sum(-1)

  def density(params, points, sequential):
    bijector = flow.bijector(params)
    step = bijector.forward_and_log_det if sequential else bijector.inverse_and_log_det
    z, log_det = step(points)
    return jnp.exp(base(z) + log_det)

  def both_ways(params, points):
    bijector = flow.bijector(params)
    return bijector.inverse_and_log_det(points), bijector.forward_and_log_det(points)

  def losses(params, points):
    (z, log_det), (x, log_det_inverse) = both_ways(params, points)
    return (jnp.sum(log_det) - 0.5 * jnp.sum(z ** 2) + 0.1 * jnp.sum(x)
            + jnp.sum(log_det_inverse))

  return params, dict(density=_jit(density, static_argnums=2), both_ways=_jit(both_ways),
                      grads=_jit(jax.grad(losses, argnums=(0, 1))))


@pytest.mark.parametrize("sequential,num_nodes", [(False, 401), (True, 201)])
def test_two_dimensional_densities_integrate_to_one(name, sequential, num_nodes):
  """Both densities of a 2-D flow integrate to one over +-2e4 (asinh-spaced nodes).

  The grid must reach far: where the bounded map S saturates, the linear tail carries the
  rest of the base mass out to x ~ (z - (1 - eps) sup S) / eps (a few per cent of it lay
  beyond |x| = 200 for the DDSF); the sequential density gets a coarser grid (cost).
  """
  params, fns = _flow_2d(name)
  nodes, weights = _asinh_grid(2e4, num_nodes)
  points = jnp.stack(jnp.meshgrid(nodes, nodes, indexing="ij"), -1).reshape(-1, 2)
  cell = (weights[:, None] * weights[None, :]).reshape(-1)
  density = fns["density"](params, points, sequential)
  assert bool(jnp.isfinite(density).all())
  np.testing.assert_allclose(float(jnp.sum(cell * density)), 1.0, atol=1e-3)


def test_two_dimensional_flow_finite_at_large_inputs_both_ways(name):
  """The IAF gate's sequential map went to -inf at [-1e4, -1e4] (issue 11)."""
  params, fns = _flow_2d(name)
  points = jnp.array([[-1e4, -1e4], [1e4, -1e4], [-1e4, 1e4], [1e4, 1e4]])
  (z, log_det), (x, log_det_inverse) = fns["both_ways"](params, points)
  for value in (z, log_det, x, log_det_inverse):
    assert bool(jnp.isfinite(value).all()), value
  grads = fns["grads"](params, points)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))


# ------------------------------------------------------ derivatives of the inverse (float64)


def test_inverse_derivatives_match_central_finite_differences(name):
  """d T^{-1}(pseudo, y) along a random direction of (params, pseudo, y): forward-mode and
  reverse-mode (implicit-function theorem) against central differences, in float64 (the
  bisection runs to float64 resolution there)."""
  t = _transformer(name)
  with jax.enable_x64(True):
    keys = jax.random.split(jax.random.PRNGKey(8), 5)
    params = jax.tree.map(lambda v: v.astype(jnp.float64), t.init(keys[0]))
    pseudo = PSEUDO_SCALE * jax.random.normal(keys[1], (D, t.num_pseudo_params), jnp.float64)
    y = jnp.array([-12.0, -3.0, 0.4, 2.5, 16.0])
    direction = (jax.tree.map(lambda v: jax.random.normal(keys[2], v.shape, v.dtype), params),
                 jax.random.normal(keys[3], pseudo.shape, jnp.float64),
                 jax.random.normal(keys[4], y.shape, jnp.float64))
    weights = jnp.linspace(0.5, 1.5, D)
    h = 1e-6

    @_jit
    def derivatives(primals, tangents):
      fn = lambda *args: t.inverse(*args)
      _, forward_mode = jax.jvp(fn, primals, tangents)
      _, pullback = jax.vjp(fn, *primals)
      cotangent = pullback(weights)  # reverse mode, contracted with the direction below
      reverse_mode = sum(jnp.vdot(c, v) for c, v in zip(jax.tree.leaves(cotangent),
                                                        jax.tree.leaves(tangents)))
      shifted = lambda s: fn(*jax.tree.map(lambda p, v: p + s * v, primals, tangents))
      central = (shifted(h) - shifted(-h)) / (2 * h)
      return forward_mode, reverse_mode, central

    forward_mode, reverse_mode, central = derivatives((params, pseudo, y), direction)
  np.testing.assert_allclose(forward_mode, central, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(reverse_mode, jnp.vdot(weights, central), rtol=1e-6)


# ------------------------------------------------------------------- input checks (issue 14)


def test_public_functions_check_pseudo_and_points_before_tracing(name):
  t, params, pseudo = _draw(name, 9)
  k = t.num_pseudo_params
  x = jnp.zeros(D)
  calls = {"x": t.forward_and_log_det, "y": t.inverse}
  for arg, fn in list(calls.items()) + [("y", t.inverse_and_flag)]:
    with pytest.raises(ValueError, match=rf"pseudo must have shape {arg}\.shape \+ \({k},\)"):
      fn(params, pseudo[:, :-1], x)
    with pytest.raises(ValueError, match=rf"pseudo.shape\[:-1\] must equal {arg}.shape"):
      fn(params, pseudo[:3], x)
    with pytest.raises(TypeError, match=rf"{arg} must be a floating-point array"):
      fn(params, pseudo, jnp.zeros(D, jnp.int32))
    with pytest.raises(TypeError, match="pseudo must be a floating-point array"):
      fn(params, pseudo.astype(jnp.int32), x)
  # The check runs in Python: a jitted call fails at trace time with the same message.
  with pytest.raises(ValueError, match="pseudo must have shape"):
    jax.jit(t.forward_and_log_det)(params, pseudo[:, :-1], x)


def test_affine_with_wrong_last_dimension_is_rejected():
  """It used to read the wrong column silently (issue 14)."""
  t = flows.affine_transformer()
  with pytest.raises(ValueError, match=r"pseudo must have shape x\.shape \+ \(2,\)"):
    t.forward_and_log_det({}, jnp.zeros((4, 3)), jnp.zeros(4))


def test_ddsf_cwn_checks_its_params():
  t = _transformer("ddsf_cwn")
  pseudo = jnp.zeros((D, t.num_pseudo_params))
  with pytest.raises(ValueError, match="params must be the pytree returned by"):
    t.forward_and_log_det({}, pseudo, jnp.zeros(D))
  params = t.init(jax.random.PRNGKey(0))
  params["u"] = params["u"][:1]
  with pytest.raises(ValueError, match="params must be the pytree returned by"):
    t.inverse(params, pseudo, jnp.zeros(D))


def test_builders_reject_bad_options():
  with pytest.raises(TypeError, match="surjective must be a bool"):
    flows.dsf_transformer(surjective="yes")
  with pytest.raises(ValueError, match="min_tail_slope must be below tail_slope_init"):
    flows.ddsf_transformer(tail_slope_init=1e-3, min_tail_slope=1e-2)
  with pytest.raises(ValueError, match="tail_slope_init must be a number in"):
    flows.dsf_transformer(tail_slope_init=1.5)
  with pytest.raises(ValueError, match="num_bisection_steps"):
    flows.ddsf_transformer(num_bisection_steps=0)
  with pytest.raises(ValueError, match="min_gate"):
    flows.iaf_gate_transformer(min_gate=1.0)


def test_suite_covers_every_registered_transformer():
  assert set(CASES) == set(flows.TRANSFORMERS)
  for name in flows.TRANSFORMERS:  # and the defaults are the surjective forms
    assert _transformer(name).surjective, name
