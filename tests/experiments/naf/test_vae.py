"""`jaxthesis naf vae`: the posterior densities (Eq. 9.1), the bounds, and a quick run."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.naf import vae as naf_vae

# XLA's CPU backend at optimization level 0 compiles about twice as fast, same results.
_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})

CONFIG = dataclasses.replace(naf_vae.get_config(quick=True), latent_dim=3, hidden=16,
                             context_dim=4, flow_hidden=8, dsf_units=3, flow_layers=1)


@pytest.mark.parametrize("posterior", ["iaf_dsf", "gaussian"])
def test_posterior_log_density_is_change_of_variables(posterior):
  """log q(z|x) = log N(eps) - log|det dz/deps| for the reparameterization z(eps)."""
  vae = naf_vae.make_vae(posterior, CONFIG)
  params = vae.init(jax.random.PRNGKey(0))
  x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (1, naf_vae.NUM_PIXELS)).astype(
      jnp.float32)
  eps = jax.random.normal(jax.random.PRNGKey(2), (3, 1, CONFIG.latent_dim))
  z, log_q = _jit(vae.posterior_transform)(params, x, eps)
  # z for one image as a function of its noise [L] -> [L].
  jac = _jit(jax.vmap(jax.jacfwd(
      lambda e: vae.posterior_transform(params, x, e[None])[0][0])))(eps[:, 0])
  _, log_det = np.linalg.slogdet(np.asarray(jac, np.float64))
  expected = jax.scipy.stats.norm.logpdf(eps[:, 0]).sum(-1) - log_det
  np.testing.assert_allclose(log_q[:, 0], expected, rtol=1e-4, atol=1e-4)
  assert z.shape == eps.shape


def test_importance_weighted_bound_is_tighter_than_elbo():
  vae = naf_vae.make_vae("iaf_affine", CONFIG)
  params = vae.init(jax.random.PRNGKey(0))
  x = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, (5, naf_vae.NUM_PIXELS)).astype(
      jnp.float32)
  elbo, log_px = _jit(lambda p, k: naf_vae.elbo_and_log_likelihood(vae, p, x, k, 64))(
      params, jax.random.PRNGKey(3))
  assert elbo.shape == log_px.shape == (5,)
  assert jnp.all(log_px >= elbo)
  # log p(x, z) = log p(x | z) + log N(z; 0, I) <= log N(0; 0, I) at z = 0.
  lj = vae.log_joint(params, x, jnp.zeros((1, 5, CONFIG.latent_dim)))
  assert lj.shape == (1, 5)
  assert jnp.all(lj < -0.5 * CONFIG.latent_dim * math.log(2 * math.pi))


def _fake_digits(monkeypatch, num_train=300, num_test=50):
  """Random grey digits instead of the built-in ones (loading those takes seconds)."""
  import jaxthesis.data
  from jaxthesis.data.sources import ImageSplit
  rng = np.random.default_rng(0)
  fake = {split: ImageSplit(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
                            np.zeros(n, np.int64))
          for split, n in (("train", num_train), ("test", num_test))}
  monkeypatch.setattr(jaxthesis.data, "load_mnist", lambda split, *a, **k: fake[split])


def test_too_many_validation_digits_names_the_field(monkeypatch):
  _fake_digits(monkeypatch)
  with pytest.raises(_config.UsageError, match="config.num_valid"):
    naf_vae.run(naf_vae.get_config(True, num_valid=300), progress=False)
