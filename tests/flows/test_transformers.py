"""Per-transformer properties beyond the registry-wide contract (chapter 9, eqs. 9.5-9.10).

The contract every registered transformer must pass (log-dets, round trips both ways,
surjectivity, normalization, finiteness at |x| = 1e4) is `test_transformer_contract.py`;
here: identity at zero, monotonicity, tracing once, and the DSF / DDSF closed forms of the
thesis's bounded map (`surjective=False`) and of its linear tail.

Compilation dominates the cost, so each transformer's jitted maps are built once
(`_compiled`), shared by the tests that feed them the same [D] shapes, and compiled at XLA
optimization level 0 (about twice as fast to compile, same float32 results).
"""
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import flows

# Registry entries with small widths so the suite stays fast; every registry name appears.
CASES = {
    "affine": {},
    "iaf_gate": {},
    "dsf": {"hidden_units": 4},
    "ddsf": {"hidden_units": 4, "num_layers": 2},
    "ddsf_cwn": {"hidden_units": 4, "num_layers": 3},
}
assert set(CASES) == set(flows.TRANSFORMERS)

D = 5


_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})


def _setup(name, seed=0, scale=1.0):
  t = flows.make_transformer(name, **CASES[name])
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  params = t.init(k1)
  pseudo = scale * jax.random.normal(k2, (D, t.num_pseudo_params))
  return t, params, pseudo


@functools.lru_cache(maxsize=None)
def _compiled(name):
  """Jitted `(params, pseudo, x)` maps of one transformer, shared across tests."""
  t = flows.make_transformer(name, **CASES[name])
  return dict(
      forward=_jit(t.forward_and_log_det),
      forward_rows=_jit(jax.vmap(t.forward_and_log_det, in_axes=(None, None, 0))))


@pytest.fixture(params=sorted(CASES))
def name(request):
  return request.param


def test_identity_at_zero_pseudo_parameters(name):
  t, params, _ = _setup(name)
  # Exact for the affine maps; for the sigmoidal ones up to the squeeze, which moves y by
  # about delta * exp(|x|) per layer (delta = 1e-6).
  x = jnp.linspace(-4.0, 4.0, D)
  y, log_det = _compiled(name)["forward"](params, jnp.zeros((D, t.num_pseudo_params)), x)
  if t.identity_at_zero:
    np.testing.assert_allclose(y, x, atol=1e-4)
    np.testing.assert_allclose(log_det, 0.0, atol=1e-4)
  else:  # the IAF gate: y = sigma_0 x, sigma_0 = min_gate + (1 - min_gate) sigmoid(gate_bias)
    sigma_0 = 1e-3 + (1 - 1e-3) * jax.nn.sigmoid(3.0)
    np.testing.assert_allclose(y, sigma_0 * x, rtol=1e-6)
    np.testing.assert_allclose(log_det, jnp.log(sigma_0), rtol=1e-6)


def test_monotone_in_x_for_random_pseudo_parameters(name):
  t, params, pseudo = _setup(name, seed=3, scale=2.0)
  x = jnp.linspace(-30.0, 30.0, 2001)
  y, log_det = _compiled(name)["forward_rows"](params, pseudo, x[:, None] * jnp.ones(D))
  assert jnp.all(jnp.isfinite(log_det))
  assert jnp.all(jnp.diff(y, axis=0) >= 0.0)
  # Strictly increasing wherever the predicted step exp(log dy/dx) dx exceeds float32
  # resolution of y (in the saturated tails steps round to zero, never below it).
  step = jnp.exp(log_det[:-1]) * (x[1] - x[0])
  resolvable = step > 1e-5 * (1.0 + jnp.abs(y[:-1]))
  assert resolvable.mean() > 0.2
  assert jnp.all(jnp.where(resolvable, jnp.diff(y, axis=0) > 0.0, True))


def test_inverse_jits_once(name):
  t, params, pseudo = _setup(name)
  chex.clear_trace_counter()
  inverse = _jit(chex.assert_max_traces(t.inverse, n=1))
  y = jnp.linspace(-3.0, 3.0, D)
  inverse(params, pseudo, y)
  inverse(params, pseudo, y + 1.0)


def test_dsf_bracket_is_exact():
  """The DSF inverse brackets the root between min_j and max_j of (logit p - b_j) / a_j."""
  t = flows.dsf_transformer(hidden_units=8, surjective=False, num_bisection_steps=60)
  pseudo = 3.0 * jax.random.normal(jax.random.PRNGKey(7), (64, t.num_pseudo_params))
  y = jnp.linspace(-13.9, 13.9, 64)
  x = _jit(t.inverse)({}, pseudo, y)
  np.testing.assert_allclose(_jit(t.forward_and_log_det)({}, pseudo, x)[0], y, atol=1e-4)


def _dsf_by_the_formula(pseudo, x, d, delta=1e-6, min_slope=1e-3):
  """Eq. 9.8 written plainly in log space, for autodiff to check the DSF's own JVP."""
  a = jax.nn.softplus(pseudo[..., :d] + np.log(np.expm1(1.0 - min_slope))) + min_slope
  b, log_w = pseudo[..., d:2 * d], jax.nn.log_softmax(pseudo[..., 2 * d:], axis=-1)
  z = a * x[..., None] + b
  log_keep, log_half = np.log1p(-delta), np.log(delta / 2)
  log_p = jnp.logaddexp(log_keep + jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(z), -1),
                        log_half)
  log_q = jnp.logaddexp(log_keep + jax.nn.logsumexp(log_w + jax.nn.log_sigmoid(-z), -1),
                        log_half)
  log_dp = jax.nn.logsumexp(
      log_w + jnp.log(a) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z), -1)
  return log_p - log_q, log_keep - log_p - log_q + log_dp


# Saturated units included: at x = +-40 (y near +-12) the DSF's derivatives divide by a
# q' or p' of about 1e-5.
DSF_POINTS = jnp.array([-40.0, -6.0, -0.5, 0.2, 3.0, 40.0])


def _assert_jacobians_match(ours, ref, pseudo, x, rtol, atol):
  """`jacfwd` and `jacrev` of `ours` and `ref` in (pseudo, x) agree leaf by leaf."""
  for jac in (jax.jacfwd, jax.jacrev):
    got = jax.jit(jac(ours, argnums=(0, 1)))(pseudo, x)
    want = jax.jit(jac(ref, argnums=(0, 1)))(pseudo, x)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def test_dsf_closed_form_derivatives_match_autodiff_of_the_formula():
  """The DSF differentiates itself in closed form (a custom JVP); in float64 its forward-
  and reverse-mode derivatives equal autodiff of eq. 9.8, and `check_grads` agrees up to
  second order."""
  d = 4
  t = flows.dsf_transformer(hidden_units=d, surjective=False)
  with jax.enable_x64(True):
    pseudo = 2.0 * jax.random.normal(jax.random.PRNGKey(5), (6, 3 * d), jnp.float64)
    x = DSF_POINTS.astype(jnp.float64)
    ours = lambda p, v: t.forward_and_log_det({}, p, v)
    ref = lambda p, v: _dsf_by_the_formula(p, v, d)
    _assert_jacobians_match(ours, ref, pseudo, x, rtol=1e-9, atol=1e-12)
    jax.test_util.check_grads(ours, (pseudo[:2], x[:2]), order=2, modes=["fwd", "rev"])


def _tailed_dsf_by_the_formula(pseudo, x, d, init=1e-2, floor=1e-3):
  """The surjective DSF written plainly: `(1 - eps) S(x) + eps x` with S eq. 9.8 on the
  first 3d pseudo-parameters and eps from the last (the tail's t)."""
  s, log_s = _dsf_by_the_formula(pseudo[..., :-1], x, d)
  t0 = np.log((init - floor) / (1 - floor)) - np.log1p(-(init - floor) / (1 - floor))
  eps = floor + (1 - floor) * jax.nn.sigmoid(pseudo[..., -1] + t0)
  return (1 - eps) * s + eps * x, jnp.log((1 - eps) * jnp.exp(log_s) + eps)


def test_surjective_dsf_closed_form_derivatives_match_autodiff_of_the_formula():
  """With the linear tail folded into the closed-form JVP, its derivatives in all 3d + 1
  pseudo-parameters and in x equal autodiff of the plainly written tailed map, both
  modes, in float64, at moderate scale and where units saturate."""
  d = 4
  t = flows.dsf_transformer(hidden_units=d)
  with jax.enable_x64(True):
    pseudo = 2.0 * jax.random.normal(jax.random.PRNGKey(6), (6, 3 * d + 1), jnp.float64)
    x = DSF_POINTS.astype(jnp.float64)
    ours = lambda p, v: t.forward_and_log_det({}, p, v)
    ref = lambda p, v: _tailed_dsf_by_the_formula(p, v, d)
    np.testing.assert_allclose(jax.jit(ours)(pseudo, x), jax.jit(ref)(pseudo, x),
                               rtol=1e-9, atol=1e-12)
    _assert_jacobians_match(ours, ref, pseudo, x, rtol=1e-8, atol=1e-11)


def test_dsf_float32_derivatives_hold_where_units_saturate():
  """Float32 derivatives of y and of log dy/dx in the pseudo-parameters against the
  float64 formula, per point relative to its largest entry, over points reaching
  |y| = 14 (q' or p' near 1e-6): there the derivatives divide by q' (or p'), and forming
  s_j - p from two numbers near 1 would lose them."""
  d = 4
  t = flows.dsf_transformer(hidden_units=d, surjective=False)
  pseudo = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (64, 3 * d))
  x = 5.0 * jax.random.normal(jax.random.PRNGKey(1), (64,))
  jacobians = lambda fn: jax.jit(jax.vmap(jax.jacrev(fn)))
  got = jacobians(lambda p, v: t.forward_and_log_det({}, p, v))(pseudo, x)
  with jax.enable_x64(True):
    want = jacobians(lambda p, v: _dsf_by_the_formula(p, v, d))(pseudo.astype(jnp.float64),
                                                               x.astype(jnp.float64))
  assert float(jnp.abs(_jit(t.forward_and_log_det)({}, pseudo, x)[0]).max()) > 14.0
  for g, w in zip(got, want):  # d y / d pseudo, d log_det / d pseudo: [64, 3d] each
    g, w = np.asarray(g, np.float64), np.asarray(w)
    scale = np.abs(w).max(axis=-1, keepdims=True)
    np.testing.assert_allclose(g / scale, w / scale, atol=1e-4)


def test_dsf_with_one_unit_is_affine_in_logit_space():
  t = flows.dsf_transformer(hidden_units=1, delta=1e-6, surjective=False)
  pseudo = jnp.array([[0.0, 0.7, 0.0]])  # a = 1, b = 0.7
  y, log_det = _jit(t.forward_and_log_det)({}, pseudo, jnp.array([0.3]))
  np.testing.assert_allclose(y, [1.0], atol=1e-5)
  np.testing.assert_allclose(log_det, [0.0], atol=1e-5)


def test_ddsf_with_one_layer_equals_dsf():
  dsf = flows.dsf_transformer(hidden_units=3)
  ddsf = flows.ddsf_transformer(hidden_units=3, num_layers=1)
  raw = jax.random.normal(jax.random.PRNGKey(2), (4, ddsf.num_pseudo_params))
  # DDSF layout: a [3], b [3], u [3 x 1], w [1 x 3], tail [1]; u is a softmax over 1 input.
  # DSF layout: a [3], b [3], w [3], tail [1].
  dsf_pseudo = jnp.concatenate([raw[:, :6], raw[:, 9:]], axis=-1)
  x = jnp.array([-2.0, -0.1, 0.5, 3.0])
  np.testing.assert_allclose(_jit(ddsf.forward_and_log_det)({}, raw, x),
                             _jit(dsf.forward_and_log_det)({}, dsf_pseudo, x),
                             rtol=1e-5, atol=1e-6)


def _ddsf_by_the_formula(params, pseudo, x, d, num_layers, cwn, delta=1e-6,
                         min_slope=1e-3):
  """Eqs. 9.9-9.10 written plainly in log space: every contraction of the derivative is a
  log-sum-exp over [..., n_out, d] or [..., d, n_in] (the DDSF's former, slower form)."""
  widths = [1] + [d] * (num_layers - 1) + [1]
  log_keep, log_half = np.log1p(-delta), np.log(delta / 2)
  h, log_dh, start = x[..., None], jnp.zeros_like(x)[..., None], 0
  for l in range(num_layers):
    n_in, n_out = widths[l], widths[l + 1]
    rest_size = (n_in + d) if cwn else d * (n_in + n_out)
    layer = pseudo[..., start:start + 2 * d + rest_size]
    start += 2 * d + rest_size
    a = jax.nn.softplus(layer[..., :d] + np.log(np.expm1(1.0 - min_slope))) + min_slope
    b, rest = layer[..., d:2 * d], layer[..., 2 * d:]
    if cwn:
      u_logits = params["u"][l] + rest[..., None, :n_in]
      w_logits = params["w"][l] + rest[..., None, n_in:]
    else:
      u_logits = rest[..., :d * n_in].reshape(rest.shape[:-1] + (d, n_in))
      w_logits = rest[..., d * n_in:].reshape(rest.shape[:-1] + (n_out, d))
    log_u, log_w = jax.nn.log_softmax(u_logits, -1), jax.nn.log_softmax(w_logits, -1)
    pre = a * jnp.sum(jnp.exp(log_u) * h[..., None, :], -1) + b
    log_sig, log_sig_neg = jax.nn.log_sigmoid(pre), jax.nn.log_sigmoid(-pre)
    log_p = jnp.logaddexp(
        log_keep + jax.nn.logsumexp(log_w + log_sig[..., None, :], -1), log_half)
    log_q = jnp.logaddexp(
        log_keep + jax.nn.logsumexp(log_w + log_sig_neg[..., None, :], -1), log_half)
    log_dpre = jnp.log(a) + jax.nn.logsumexp(log_u + log_dh[..., None, :], -1)
    log_dsig = log_sig + log_sig_neg + log_dpre
    log_dh = (log_keep - log_p - log_q
              + jax.nn.logsumexp(log_w + log_dsig[..., None, :], -1))
    h = log_p - log_q
  return h[..., 0], log_dh[..., 0]


@pytest.mark.parametrize("cwn,num_layers", [(False, 2), (True, 3)])
def test_ddsf_linear_space_form_matches_log_space_formula(cwn, num_layers):
  """The DDSF contracts its derivative vector in linear space, shifted per layer by the
  largest unit term; in float64 it equals the log-sum-exp form of eqs. 9.9-9.10, values
  and first derivatives (forward and reverse mode), on random points and at |x| = 1e4."""
  d = 4
  t = flows.ddsf_transformer(hidden_units=d, num_layers=num_layers,
                             conditional_weight_norm=cwn, surjective=False)
  with jax.enable_x64(True):
    params = jax.tree.map(lambda v: v.astype(jnp.float64), t.init(jax.random.PRNGKey(0)))
    pseudo = 2.0 * jax.random.normal(jax.random.PRNGKey(8), (8, t.num_pseudo_params),
                                     jnp.float64)
    x = jnp.array([-1e4, -300.0, -7.0, -0.3, 0.4, 6.0, 300.0, 1e4], jnp.float64)
    ours = lambda p, v: t.forward_and_log_det(params, p, v)
    ref = lambda p, v: _ddsf_by_the_formula(params, p, v, d, num_layers, cwn)
    np.testing.assert_allclose(jax.jit(ours)(pseudo, x), jax.jit(ref)(pseudo, x),
                               rtol=1e-10, atol=1e-10)
    _assert_jacobians_match(ours, ref, pseudo, x, rtol=1e-8, atol=1e-10)
    if cwn:  # the learned logit matrices too
      grad = lambda fn: jax.jit(jax.grad(lambda q: jnp.sum(jnp.stack(fn(q)))))
      got = grad(lambda q: t.forward_and_log_det(q, pseudo, x))(params)
      want = grad(lambda q: _ddsf_by_the_formula(q, pseudo, x, d, num_layers, cwn))(params)
      for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w, rtol=1e-8, atol=1e-10)


def test_cwn_emits_order_d_pseudo_parameters():
  d = 16
  full = flows.ddsf_transformer(hidden_units=d, num_layers=2)
  cwn = flows.ddsf_transformer(hidden_units=d, num_layers=2, conditional_weight_norm=True)
  assert cwn.num_pseudo_params <= 8 * d < full.num_pseudo_params
  params = cwn.init(jax.random.PRNGKey(0))
  assert params["u"][1].shape == (d, d) and params["w"][0].shape == (d, d)


def test_registry_and_argument_validation():
  with pytest.raises(ValueError, match="transformer name"):
    flows.make_transformer("spline")
  with pytest.raises(ValueError, match="hidden_units"):
    flows.dsf_transformer(hidden_units=0)
  with pytest.raises(ValueError, match="delta"):
    flows.ddsf_transformer(delta=2.0)
  t = flows.dsf_transformer(hidden_units=2)
  with pytest.raises(ValueError, match="pseudo"):
    flows.transformers.check_transformer_inputs(t, jnp.zeros((3, 5)), jnp.zeros(3))
  with pytest.raises(TypeError, match="x must be a floating"):
    flows.transformers.check_transformer_inputs(t, jnp.zeros((3, 6)), jnp.zeros(3, jnp.int32))


def test_linear_tail_is_the_stated_mixture_of_the_thesis_map():
  """Surjective DSF = (1 - eps) S(x) + eps x with S the thesis's DSF (surjective=False),
  eps = 1e-3 + (1 - 1e-3) sigmoid(t + t0) and eps = tail_slope_init at t = 0; and
  log dy/dx = log((1 - eps) S'(x) + eps)."""
  d = 3
  tailed, thesis = flows.dsf_transformer(hidden_units=d), flows.dsf_transformer(
      hidden_units=d, surjective=False)
  pseudo = 1.5 * jax.random.normal(jax.random.PRNGKey(11), (6, 3 * d + 1))
  pseudo = pseudo.at[0, -1].set(0.0).at[1, -1].set(-200.0)  # eps = 1e-2, and eps -> 1e-3
  x = jnp.array([0.7, -30.0, 2.0, -1.0, 50.0, 1e4])
  y, log_det = _jit(tailed.forward_and_log_det)({}, pseudo, x)
  s, log_s = _jit(thesis.forward_and_log_det)({}, pseudo[:, :-1], x)
  t0 = np.log((1e-2 - 1e-3) / (1 - 1e-3)) - np.log1p(-(1e-2 - 1e-3) / (1 - 1e-3))
  eps = 1e-3 + (1 - 1e-3) * jax.nn.sigmoid(pseudo[:, -1] + t0)
  np.testing.assert_allclose(eps[0], 1e-2, rtol=1e-6)
  np.testing.assert_allclose(y, (1 - eps) * s + eps * x, rtol=1e-6, atol=1e-5)
  np.testing.assert_allclose(log_det, jnp.log((1 - eps) * jnp.exp(log_s) + eps), rtol=1e-5,
                             atol=1e-6)
  assert float(log_det[1]) >= np.log(1e-3) - 1e-6  # saturated S: dy/dx -> eps >= 1e-3


@pytest.mark.parametrize("name", ["dsf", "ddsf"])
def test_bounded_form_flags_points_outside_its_image_with_nan(name):
  """surjective=False keeps the thesis's bounded image: targets outside it give NaN and
  inverted=False (never the end of a runaway bracket), targets inside invert."""
  t = flows.make_transformer(name, hidden_units=4, surjective=False)
  pseudo = 1.5 * jax.random.normal(jax.random.PRNGKey(12), (4, t.num_pseudo_params))
  x, inverted = _jit(t.inverse_and_flag)({}, pseudo, jnp.array([-20.0, 20.0, 1e4, 0.0]))
  assert not bool(inverted[:3].any()) and bool(jnp.isnan(x[:3]).all())
  y0 = _jit(t.forward_and_log_det)({}, pseudo, jnp.zeros(4))[0]
  x, inverted = _jit(t.inverse_and_flag)({}, pseudo, y0)
  assert bool(inverted.all())
  np.testing.assert_allclose(x, 0.0, atol=1e-4)


def test_bisection_solves_flags_and_checks_its_arguments():
  solution = flows.solve_increasing(jnp.tanh, jnp.array([0.5, -0.9, 2.0]), -10.0, 10.0,
                                    flows.steps_to_resolution(20.0, jnp.float32))
  np.testing.assert_allclose(solution.root[:2], np.arctanh([0.5, -0.9]), atol=1e-6)
  np.testing.assert_array_equal(solution.bracketed, [True, True, False])
  assert flows.steps_to_resolution(2 * 14.5 / 1e-3, jnp.float32) == 39
  with pytest.raises(TypeError, match="fn must be callable"):
    flows.bisect_increasing("tanh", jnp.zeros(2), -1.0, 1.0, 3)
  with pytest.raises(TypeError, match="fn must be callable"):
    flows.expand_bracket(None, jnp.zeros(2), 3)
  with pytest.raises(ValueError, match="lower must broadcast against target"):
    flows.solve_increasing(jnp.tanh, jnp.zeros(2), jnp.zeros(3), 1.0, 3)
  with pytest.raises(TypeError, match="target must be a floating"):
    flows.solve_increasing(jnp.tanh, jnp.zeros(2, jnp.int32), -1.0, 1.0, 3)
  with pytest.raises(ValueError, match="num_steps"):
    flows.bisect_increasing(jnp.tanh, jnp.zeros(2), -1.0, 1.0, 0)


@pytest.mark.parametrize("name", ["dsf", "ddsf"])
def test_inverse_second_derivatives_match_finite_differences(name):
  # The inverse is found by bisection; its derivatives come from the implicit-function rule.
  # Differentiated twice, the rule once differentiated through the bisection instead
  # (d²x/dy² 14.9 where finite differences give 0.10), at pseudo-parameters of scale 1.5.
  with jax.enable_x64(True):
    t = flows.make_transformer(name, **CASES[name])
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), t.init(jax.random.PRNGKey(0)))
    pseudo = 1.5 * jax.random.normal(jax.random.PRNGKey(1), (t.num_pseudo_params,), jnp.float64)
    inv = lambda q, y: t.inverse(params, q, y)
    y0, eps = jnp.float64(0.7), 1e-5
    dy = jax.grad(inv, argnums=1)
    d2y = jax.grad(dy, argnums=1)(pseudo, y0)
    fd = (dy(pseudo, y0 + eps) - dy(pseudo, y0 - eps)) / (2 * eps)
    np.testing.assert_allclose(float(d2y), float(fd), rtol=1e-5, atol=1e-9)
    # the mixed derivative d/dpseudo (dx/dy)
    mixed = jax.grad(dy, argnums=0)(pseudo, y0)
    e = jnp.zeros_like(pseudo).at[0].set(eps)
    fd_mixed = (dy(pseudo + e, y0) - dy(pseudo - e, y0)) / (2 * eps)
    np.testing.assert_allclose(float(mixed[0]), float(fd_mixed), rtol=1e-5, atol=1e-9)
    assert abs(float(fd)) > 1e-3  # not a vacuous comparison
