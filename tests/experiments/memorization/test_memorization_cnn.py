"""The csr and regularizers studies with the thesis's small CNN and with CIFAR-10 (TFDS)."""
import argparse

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxthesis.experiments import _config
from jaxthesis.experiments.memorization import _common as mc
from jaxthesis.experiments.memorization import csr, regularizers

TINY_CSR = dict(data="builtin", model="cnn", cnn_channels=3, noise_levels=(0.8,), num_train=20,
                num_test=10, batch_size=10, epochs=1, eval_every=1, csr_points=5,
                lass_iterations=2)


def test_cnn_gets_images_and_the_thesis_optimizer():
  c = csr.get_config(True, **TINY_CSR)
  x, y, vx, vy, _ = mc.load_study_data(c, 20, 10)
  v, _, _, _, _ = mc.load_study_data(csr.get_config(True, data="builtin"), 20, 10)
  assert x.shape == (20, 28, 28, 1) and vx.shape == (10, 28, 28, 1)
  np.testing.assert_array_equal(x.reshape(20, -1), v)   # same pixels as the MLP's vectors
  assert 0.0 <= x.min() and x.max() <= 1.0
  # Thesis 3.2: MLP plain SGD; CNN momentum 0.9, lr halved every 15 epochs; overrides win.
  assert mc.optimizer_settings(c) == {"momentum": 0.9, "lr_halving_epochs": 15}
  assert mc.optimizer_settings(csr.get_config()) == {"momentum": 0.0, "lr_halving_epochs": None}
  assert mc.optimizer_settings(csr.get_config(model="cnn", momentum=0.5, lr_halving_epochs=0)) \
      == {"momentum": 0.5, "lr_halving_epochs": None}
  assert csr.get_config(model="cnn").cnn_channels == 200           # the thesis's size
  assert regularizers.get_config(True, model="cnn").cnn_channels == 8  # smoke size


def test_csr_with_the_cnn_on_builtin_mnist():
  results = csr.run(csr.get_config(True, **TINY_CSR), progress=False)
  a, m = results["arrays"], results["metrics"]
  assert results["model"].startswith("small CNN, 3 channels")
  assert "momentum 0.9, halved every 15 epochs" in results["model"]
  assert "config.width=16 is not used" in results["model"]
  assert results["runs"] == ["real_0", "randX_0.8", "randY_0.8"]
  assert a["val_csr"].shape == a["train_acc"].shape == (3, len(a["eval_steps"]))
  # CSR is a fraction of 5 points; accuracies are fractions of 10 / 20 examples.
  np.testing.assert_allclose(a["val_csr"] * 5, np.round(a["val_csr"] * 5), atol=1e-4)
  np.testing.assert_allclose(a["val_acc"] * 10, np.round(a["val_acc"] * 10), atol=1e-4)
  np.testing.assert_allclose(a["train_acc"] * 20, np.round(a["train_acc"] * 20), atol=1e-4)
  assert m["real_0"]["final_csr"] == pytest.approx(a["val_csr"][0, -1])
  assert "small CNN" in csr.table(results)


def test_regularizers_with_the_cnn_on_builtin_mnist():
  config = regularizers.get_config(
      True, data="builtin", model="cnn", cnn_channels=3, methods=("dropout", "dropout+adversarial"),
      num_train=20, num_test=10, batch_size=10, epochs=1, eval_every=1, adversarial_iterations=1)
  results = regularizers.run(config, progress=False)
  m, a = results["metrics"], results["arrays"]
  assert [r[0] for r in results["runs"]] == ["none", "dropout", "dropout+adversarial"]
  assert a["randY_train_acc"].shape == (3, len(a["eval_steps"]))
  for i, (method, _) in enumerate(results["runs"]):
    entry = m[method][0]
    assert entry["randY_final_train_acc"] == pytest.approx(a["randY_train_acc"][i, -1])
    assert entry["real_best_val_acc"] == pytest.approx(a["real_val_acc"][i].max())
  assert "small CNN, 3 channels" in regularizers.table(results)


def test_csr_on_mocked_tfds_cifar10():
  config = csr.get_config(True, **{**TINY_CSR, "data": "tfds", "dataset": "cifar10"})
  with tfds.testing.mock_data(num_examples=20):
    x, y, vx, _, description = mc.load_study_data(config, 20, 10)
    results = csr.run(config, progress=False)
  assert x.shape == (20, 32, 32, 3) and vx.shape == (10, 32, 32, 3)
  assert np.all((y >= 0) & (y < 10))
  assert description.startswith("cifar10 from TFDS") and results["data"] == description
  assert np.all((results["arrays"]["val_csr"] >= 0) & (results["arrays"]["val_csr"] <= 1))


@pytest.mark.parametrize("data", ["tfds", "auto"])
def test_unprepared_cifar10_is_a_usage_error_naming_the_dataset(tmp_path, data):
  config = csr.get_config(True, **{**TINY_CSR, "data": data, "dataset": "cifar10",
                                   "data_dir": str(tmp_path)})
  with pytest.raises(_config.UsageError, match=r"config.dataset='cifar10'.*tfds build cifar10") \
      as info:
    csr.run(config, progress=False)
  assert info.value.field == "dataset"


@pytest.mark.parametrize("module", [csr, regularizers])
@pytest.mark.parametrize("overrides, field", [
    (dict(model="resnet"), "model"), (dict(dataset="svhn"), "dataset"),
    (dict(dataset="cifar10", data="builtin"), "dataset"), (dict(cnn_channels=0), "cnn_channels"),
    (dict(momentum=1.0), "momentum"), (dict(lr_halving_epochs=-1), "lr_halving_epochs"),
    (dict(lr_halving_epochs=1.5), "lr_halving_epochs"),
])
def test_bad_model_fields_name_the_field(module, overrides, field):
  with pytest.raises(_config.UsageError, match=f"config.{field}") as info:
    module.get_config(True, **{"model": "cnn", **overrides})
  assert info.value.field == field


@pytest.mark.parametrize("module", [csr, regularizers])
def test_cli_flags_set_the_model_fields(module):
  parser = argparse.ArgumentParser()
  module.add_arguments(parser)
  args = parser.parse_args(["--model", "cnn", "--dataset", "cifar10", "--cnn-channels", "200",
                            "--momentum", "0.9", "--lr-halving-epochs", "15"])
  assert (args.model, args.dataset, args.cnn_channels, args.momentum,
          args.lr_halving_epochs) == ("cnn", "cifar10", 200, 0.9, 15)
  assert parser.parse_args([]).model is None   # unset: the Config's default (mlp)
