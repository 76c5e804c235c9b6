"""Chapter-3 study configs reject bad values naming the field; derived settings are right."""
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.memorization import capacity, csr, difficulty, regularizers, sensitivity


@pytest.mark.parametrize("module, overrides, field", [
    (difficulty, dict(num_scored=5000), "num_scored"),
    (difficulty, dict(learning_rate=0.0), "learning_rate"),
    (csr, dict(noise_levels=(0.0, 0.5)), "noise_levels"),
    (csr, dict(noise_levels=(1.5,)), "noise_levels"),
    (csr, dict(radius=0.0), "radius"),
    (capacity, dict(widths=(0, 8)), "widths"),
    (capacity, dict(data_sizes=(10**6,)), "data_sizes"),
    (regularizers, dict(methods=("dropconnect",)), "methods"),
    (regularizers, dict(dropout=(1.0,)), "dropout"),
    (sensitivity, dict(width=0), "width"),
    (sensitivity, dict(data="disk"), "data"),
])
def test_bad_config_values_name_the_field(module, overrides, field):
  with pytest.raises(_config.UsageError, match=f"config.{field}") as info:
    module.get_config(True, **overrides)
  assert info.value.field == field


def test_study_settings():
  c = csr.get_config(noise_levels=(0.2, 0.6))
  assert csr.settings(c) == [("real", 0.0), ("randX", 0.2), ("randX", 0.6), ("randY", 0.2),
                             ("randY", 0.6)]
  r = regularizers.get_config(methods=("weight_decay", "dropout+adversarial"),
                              weight_decay=(0.1,), adversarial_dropout=(0.2, 0.5))
  assert regularizers.settings(r) == [
      ("none", 0.0, {}), ("weight_decay", 0.1, {"weight_decay": 0.1}),
      ("dropout+adversarial", 0.2, {"dropout": 0.2, "adversarial": 0.5}),
      ("dropout+adversarial", 0.5, {"dropout": 0.5, "adversarial": 0.5})]
  grid = capacity._grid(capacity.get_config(True))
  assert len(grid) == 2 * 2 + 2 * 2 and grid[0] == ("width", 0, 2, 200)


def test_difficulty_metrics_follow_from_the_per_example_rates():
  config = difficulty.get_config(True, data="builtin", num_train=64, num_scored=32, restarts=3,
                                 width=8)
  results = difficulty.run(config, progress=False)
  arrays, m = results["arrays"], results["metrics"]
  for kind in ("real", "randX", "randY"):
    rate = arrays[kind]
    assert rate.shape == (32,) and np.all(np.diff(rate) >= 0)           # sorted curve
    assert np.all(np.isclose(rate * 3, np.round(rate * 3)))              # k/3 for 3 runs
    p = 1 - rate.mean()
    np.testing.assert_allclose(m[kind]["dispersion_ratio"], rate.var() / (p * (1 - p) / 3),
                               rtol=1e-6)
  b = arrays["binomial_randX"] * 3
  assert np.all(np.isclose(b, np.round(b))) and b.min() >= 0 and b.max() <= 3
