"""The energy (Fig. 9.1) and sine (Fig. 9.8) studies: targets, losses, posteriors, configs."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.naf import _common as nc
from jaxthesis.experiments.naf import energy as naf_energy
from jaxthesis.experiments.naf import sine as naf_sine

# ------------------------------------------------------------------- confined energies


def test_confine_leaves_the_square_alone_and_adds_the_wall_outside():
  raw = lambda z: z[..., 1] ** 2
  confined = nc.confine(raw, limit=4.0, width=0.2)
  inside = jnp.array([[-4.0, 0.3], [0.0, -1.0], [3.9, 2.0]])
  np.testing.assert_allclose(confined(inside), raw(inside), rtol=0, atol=1e-6)
  outside = jnp.array([[4.5, 1.0], [-5.0, 0.0]])
  np.testing.assert_allclose(confined(outside),
                             raw(outside) + 0.5 * (np.array([0.5, 1.0]) / 0.2) ** 2, rtol=1e-6)
  with pytest.raises(ValueError, match="width"):
    nc.confine(raw, width=0.0)
  with pytest.raises(ValueError, match="limit"):
    nc.confine(raw, limit=-1.0)


def test_confined_u2_has_its_closed_form_normalizer():
  # For every z1, exp(-U2) is a Gaussian in z2 of std 0.4 (mass 0.4 sqrt(2 pi)); the wall
  # adds two half-Gaussians of std 0.2 to the length 8 of [-4, 4] along z1.
  exact = math.log(0.4 * math.sqrt(2 * math.pi) * (8 + 0.2 * math.sqrt(2 * math.pi)))
  assert abs(nc.log_normalizer(nc.ENERGIES["u2"]) - exact) < 1e-4


@pytest.mark.parametrize("name", ["u1", "u2", "u3", "u4"])
def test_energies_are_normalizable(name):
  # A proper target: log Z does not grow when the integration box does (unconfined U2-U4
  # would gain log(8 / 6) here).
  small = nc.log_normalizer(nc.ENERGIES[name], limit=6.0, num=600)
  large = nc.log_normalizer(nc.ENERGIES[name], limit=8.0, num=800)
  assert abs(small - large) < 1e-3


# ---------------------------------------------------------------------------- energy


def test_reverse_kl_loss_is_tempered_linearly_in_beta():
  flow = nc.build_flow("dsf", 2, "iaf", 8)
  params = flow.init(jax.random.PRNGKey(0))
  loss = nc.reverse_kl_loss(flow, nc.ENERGIES["u1"], 64)
  key = jax.random.PRNGKey(1)
  at = [float(loss(params, key, None, beta)) for beta in (0.0, 0.5, 1.0)]
  assert at[1] == pytest.approx(0.5 * (at[0] + at[2]), rel=1e-5)
  assert at[2] == pytest.approx(float(loss(params, key, None)), rel=1e-6)


@pytest.mark.parametrize("field,value", [("anneal_fraction", 1.5), ("initial_beta", 0.0),
                                         ("lr_decay_fraction", -0.5), ("num_steps", 0),
                                         ("energies", ("u5",)), ("models", ())])
def test_energy_config_is_validated(field, value):
  with pytest.raises(_config.UsageError, match=f"config.{field}") as error:
    naf_energy.get_config(quick=True, **{field: value})
  assert error.value.field == field


# ------------------------------------------------------------------------------ sine


def test_sine_posterior_starts_at_the_prior():
  # With the base N(0, 1.702^2) and the identity DSF, f = 2 sigmoid(x) is within the
  # probit approximation (max CDF error ~0.01) of U(0, 2).
  flow, distribution = naf_sine.posterior_flow(8, naf_sine.PRIOR_MATCHING_SCALE)
  params = flow.init(jax.random.PRNGKey(0))
  f = np.sort(np.asarray(distribution(params).sample(seed=jax.random.PRNGKey(1),
                                                     sample_shape=(20000,)))[:, 0])
  assert 0 < f.min() and f.max() < 2
  ks = np.max(np.abs(np.arange(1, f.size + 1) / f.size - f / 2))
  assert ks < 0.025


def test_sine_posterior_density_integrates_to_one():
  # log q includes the log-determinant of f = 2 sigmoid(.) on top of the DSF's.
  flow, distribution = naf_sine.posterior_flow(8, 1.3)
  params = jax.tree_util.tree_map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(2), p.shape),
      flow.init(jax.random.PRNGKey(0)))
  grid = np.linspace(1e-4, 2 - 1e-4, 20001, dtype=np.float32)
  log_q = distribution(params).log_prob(jnp.asarray(grid)[:, None])
  assert abs(float(jnp.sum(jnp.exp(log_q)) * (grid[1] - grid[0])) - 1) < 5e-3


def test_sine_config_is_validated():
  with pytest.raises(_config.UsageError, match="config.base_scale"):
    naf_sine.get_config(quick=True, base_scale=-1.0)


def test_sine_default_training_finds_all_four_modes():
  # The command's default training (Fig. 9.8): every mode holds at least half its true
  # mass within +-0.15, and the ELBO is within 0.3 nats of log p(Y).
  metrics = naf_sine.run(naf_sine.get_config(num_samples=4000), progress=False)["metrics"]
  for mode, mass in metrics["mode_mass"].items():
    assert mass["approx"] > 0.5 * mass["true"], (mode, mass)
  assert metrics["modes_found"] == 4
  assert 0 <= metrics["kl_estimate"] < 0.3
