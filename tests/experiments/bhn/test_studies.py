"""bhn studies: config validation, method specs, offline OOD sets, the Fig. 7.2 model.

(The registry's contract test quick-runs every study and redraws its plots.)"""
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.bhn import (_common, _ood, adversarial, anomaly, mnist, multimodal,
                                       toy_regression)


@pytest.mark.parametrize("module, field, value", [
    (toy_regression, "models", ("bayes",)),
    (toy_regression, "likelihood_noise", 0.0),
    (toy_regression, "hypernet", "glow"),
    (multimodal, "hypernets", ("mle",)),
    (multimodal, "hypernets", ("realnvp",)),
    (mnist, "methods", ("iaf:x",)),
    (mnist, "num_trials", 0),
    (mnist, "prior_precision", 0.0),
    (anomaly, "ood_sets", ("notmnist",)),
    (anomaly, "heldout_classes", (10,)),
    (adversarial, "epsilons", (-0.1,)),
    (adversarial, "attack_samples", 0),
])
def test_bad_config_names_the_field(module, field, value):
  with pytest.raises(_config.UsageError, match=f"config.{field}"):
    module.get_config(True, **{field: value})


def test_quick_configs_record_what_runs():
  for module in (toy_regression, multimodal, mnist, anomaly, adversarial):
    quick, full = module.get_config(True), module.get_config(False)
    assert quick != full and quick.seed == full.seed == 0
  assert mnist.get_config(False).hidden == 800 and mnist.get_config(False).num_trials == 10


def test_method_specs():
  assert _common.parse_spec("realnvp:8") == ("realnvp", 8)
  assert _common.parse_spec("mc-dropout") == ("mc-dropout", 0)
  for bad in ("gaussian:2", "realnvp", "glow:2", "iaf:-1"):
    with pytest.raises(ValueError, match="method spec"):
      _common.parse_spec(bad)


@pytest.mark.parametrize("name", _ood.OOD_SETS)
def test_ood_sets_are_images_in_the_unit_interval(name):
  images = _ood.load(name, 30, seed=0)
  assert images.shape == (30, 784) and images.dtype == np.float32
  assert images.min() >= 0 and images.max() <= 1 and images.std() > 0.05
  np.testing.assert_array_equal(images, _ood.load(name, 30, seed=0))  # same seed, same set
  with pytest.raises(ValueError, match="name"):
    _ood.load("notmnist", 3, 0)


def test_product_net_is_symmetric_in_the_two_modes():
  import jax.numpy as jnp
  net = multimodal.product_net()
  x = jnp.linspace(-1, 1, 5)[:, None]
  np.testing.assert_allclose(net.apply({}, jnp.array([1.0, 1.0]), x),
                             net.apply({}, jnp.array([-1.0, -1.0]), x))
  np.testing.assert_allclose(net.apply({}, jnp.array([2.0, 0.5]), x), x)


def test_toy_data_follows_fig_7_1():
  import jax
  x, y = toy_regression.make_data(jax.random.PRNGKey(0), 200, 0.0)
  x, y = np.asarray(x), np.asarray(y)
  assert x.min() >= 0 and x.max() <= 0.5
  np.testing.assert_allclose(y, x + 0.3 * np.sin(2 * np.pi * x) + 0.3 * np.sin(4 * np.pi * x),
                             atol=1e-5)


def test_pearson_p_values_match_scipy():
  from scipy import stats
  from jaxthesis.experiments.bhn import correlations
  rng = np.random.default_rng(0)
  z = rng.normal(size=(50, 3))
  z[:, 2] += 0.5 * z[:, 0]
  p = correlations.pearson_p_values(z)
  want = [stats.pearsonr(z[:, i], z[:, j])[1] for i, j in ((0, 1), (0, 2), (1, 2))]
  np.testing.assert_allclose(p, want, rtol=1e-6)
