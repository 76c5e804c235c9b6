"""The negative ELBO (Eqs. 7.2, 11.25): KL term, unbiased gradients, vmap == loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import bhn

KEY = jax.random.PRNGKey(0)


def test_mc_kl_matches_closed_form_gaussian_kl():
  h = bhn.make_hypernet("gaussian", 3)
  loc, scale, lam = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.3, 1.5, 0.8]), 2.0
  params = h.init(KEY, loc=loc, scale=scale)
  theta, log_q = jax.jit(h.sample_and_log_prob, static_argnums=2)(params, KEY, (40000,))
  terms = log_q - bhn.log_prior(theta, lam)
  mc, se = float(terms.mean()), float(terms.std() / np.sqrt(terms.size))
  exact = float(bhn.gaussian_kl(loc, scale, lam))
  assert abs(mc - exact) < 4 * se, (mc, exact, se)
  # The closed form itself: KL(N(m, s^2) || N(0, 1/lam)) per dimension.
  by_hand = sum(0.5 * (lam * (s ** 2 + m ** 2) - 1 - np.log(lam * s ** 2))
                for m, s in zip(np.asarray(loc), np.asarray(scale)))
  np.testing.assert_allclose(exact, by_hand, rtol=1e-5)


def _linear_model():
  """y = theta x: a PrimaryNet with one random weight and no point parameters."""
  return bhn.PrimaryNet(
      init=lambda key, x: ({}, jnp.zeros(1)),
      features=lambda params, x: x,
      head=lambda params, theta, h, key=None, dropout_rate=0.0: h * theta,
      num_random=1, input_shape=(1,), num_outputs=1)


def test_elbo_gradient_is_unbiased_in_a_conjugate_case():
  """Bayesian linear regression with q = N(mu, s^2): the expected negative ELBO is
  closed-form, E_q (y - theta x)^2 = (y - mu x)^2 + s^2 x^2."""
  net, sigma, lam = _linear_model(), 0.5, 1.5
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  y = 0.7 * x + 0.1 * jnp.cos(7 * x)
  n = 8
  h = bhn.make_hypernet("gaussian", 1)
  params = h.init(KEY, loc=0.3, scale=0.4)
  lik = bhn.gaussian_likelihood(sigma)

  def exact(p):
    mu, s = p["affine"]["shift"][0], jnp.exp(p["affine"]["log_scale"][0])
    sq = (y[:, 0] - mu * x[:, 0]) ** 2 + s ** 2 * x[:, 0] ** 2
    nll = jnp.mean(sq / (2 * sigma ** 2) + jnp.log(sigma) + 0.5 * jnp.log(2 * jnp.pi))
    return nll + bhn.gaussian_kl(p["affine"]["shift"], jnp.exp(p["affine"]["log_scale"]), lam) / n

  def estimate(p, key):
    return bhn.negative_elbo(key, p, {}, x, y, primary=net, hypernet=h, likelihood=lik,
                             num_train=n, prior_precision=lam, num_samples=1)[0]

  keys = jax.random.split(jax.random.PRNGKey(1), 20000)
  grads = jax.jit(jax.vmap(jax.grad(estimate), (None, 0)))(params, keys)
  want = jax.grad(exact)(params)
  for leaf in ("shift", "log_scale"):
    g = np.asarray(grads["affine"][leaf][:, 0])
    se = g.std() / np.sqrt(g.size)
    assert abs(g.mean() - float(want["affine"][leaf][0])) < 4 * se, (leaf, g.mean(), want, se)
  # And the loss itself is unbiased.
  losses = jax.jit(jax.vmap(estimate, (None, 0)))(params, keys)
  assert abs(float(losses.mean() - exact(params))) < 4 * float(losses.std()) / np.sqrt(keys.shape[0])


def _small_problem(name="realnvp", num_layers=1):
  net = bhn.weightnorm_mlp(4, (6,), 3)
  h = bhn.make_hypernet(name, net.num_random, num_layers=num_layers, hidden_units=8,
                        key=jax.random.PRNGKey(2))
  x = jax.random.normal(KEY, (10, 4))
  y = jnp.arange(10) % 3
  net_params, theta0 = net.init(jax.random.PRNGKey(3), x)
  leaves, tree = jax.tree_util.tree_flatten(h.init(KEY, loc=theta0, scale=0.3))
  ks = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  hyper = jax.tree_util.tree_unflatten(
      tree, [l + 0.2 * jax.random.normal(k, l.shape) for l, k in zip(leaves, ks)])
  return net, h, net_params, hyper, x, y


@pytest.mark.parametrize("noise", bhn.NOISE_SHARING)
def test_vmapped_samples_equal_looped_samples(noise):
  net, h, net_params, hyper, x, y = _small_problem()
  lik = bhn.categorical_likelihood()

  def loss(hp, np_, vectorize):
    return bhn.negative_elbo(jax.random.PRNGKey(5), hp, np_, x, y, primary=net, hypernet=h,
                             likelihood=lik, num_train=100, kl_weight=0.3, num_samples=3,
                             noise=noise, vectorize=vectorize)[0]

  (lv, gv) = jax.jit(jax.value_and_grad(lambda a, b: loss(a, b, True), (0, 1)))(hyper, net_params)
  (ll, gl) = jax.jit(jax.value_and_grad(lambda a, b: loss(a, b, False), (0, 1)))(hyper, net_params)
  np.testing.assert_allclose(lv, ll, rtol=1e-5)
  for a, b in zip(jax.tree_util.tree_leaves(gv), jax.tree_util.tree_leaves(gl)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_first_layer_product_is_computed_once_for_all_samples():
  """In the vmapped loss the only matmul with the raw inputs x [B, I] has no sample axis."""
  net, h, net_params, hyper, x, y = _small_problem("gaussian", 0)
  h = bhn.make_hypernet("gaussian", net.num_random)
  hyper = h.init(KEY, loc=1.0, scale=0.1)
  lik = bhn.categorical_likelihood()
  fn = lambda hp, np_: bhn.negative_elbo(KEY, hp, np_, x, y, primary=net, hypernet=h,
                                         likelihood=lik, num_train=100, num_samples=7)[0]
  jaxpr = jax.make_jaxpr(jax.value_and_grad(fn, (0, 1)))(hyper, net_params)
  shapes = []

  def walk(jp):
    for eqn in jp.eqns:
      if eqn.primitive.name == "dot_general":
        shapes.append([tuple(v.aval.shape) for v in eqn.invars])
      for sub in jax.core.jaxprs_in_params(eqn.params):
        walk(sub)

  walk(jaxpr.jaxpr)
  with_x = [s for s in shapes if (10, 4) in s or (7, 10, 4) in s]
  assert with_x and all((7, 10, 4) not in s for s in shapes), shapes
  assert [s for s in shapes if (10, 4) in s and (4, 6) in s], shapes  # x @ u, once


def test_kl_annealing_schedule():
  w = bhn.kl_annealing(jnp.arange(12), 10)
  np.testing.assert_allclose(w[:6], np.minimum(1, 0.001 + np.arange(6) / 5), rtol=1e-6)
  assert float(w[5]) == 1.0 and float(w[11]) == 1.0


def test_clipped_likelihood_bounds_the_loss():
  lik = bhn.categorical_likelihood()
  logits = jnp.array([[100.0, -100.0, 0.0]])
  np.testing.assert_allclose(lik.log_prob(logits, jnp.array([1])), np.log(1e-3), rtol=1e-6)
  np.testing.assert_allclose(lik.log_prob(logits, jnp.array([0])), np.log(0.999), rtol=1e-4)


def test_bad_inputs_raise_before_tracing():
  net, h, net_params, hyper, x, y = _small_problem("gaussian", 0)
  h = bhn.make_hypernet("gaussian", net.num_random)
  hyper = h.init(KEY)
  lik = bhn.categorical_likelihood()
  kw = dict(primary=net, hypernet=h, likelihood=lik, num_train=100)
  with pytest.raises(ValueError, match="num_samples"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y, num_samples=0, **kw)
  with pytest.raises(ValueError, match="prior_precision"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y, prior_precision=0.0, **kw)
  with pytest.raises(ValueError, match="noise"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y, noise="layer", **kw)
  with pytest.raises(ValueError, match="y must"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y[:3], **kw)
  with pytest.raises(TypeError, match="y must"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y.astype(jnp.float32), **kw)
  with pytest.raises(ValueError, match="x must"):
    bhn.negative_elbo(KEY, hyper, net_params, x[:, :3], y, **kw)
  with pytest.raises(ValueError, match="num_train"):
    bhn.negative_elbo(KEY, hyper, net_params, x, y, **{**kw, "num_train": 0})
  other = bhn.make_hypernet("gaussian", net.num_random + 1)
  with pytest.raises(ValueError, match="hypernet generates"):
    bhn.bhn(net, other, lik)
  with pytest.raises(ValueError, match="noise_std"):
    bhn.gaussian_likelihood(0.0)
  with pytest.raises(ValueError, match="num_epochs"):
    bhn.kl_annealing(1, 0)
