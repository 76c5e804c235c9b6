"""Tabular density-estimation datasets: the MAF-preprocessed UCI and BSDS300 files, and a
built-in stand-in (Table 9.II of the thesis).

POWER, GAS, HEPMASS, MINIBOONE and BSDS300 are read from the files that Papamakarios et al.
(2017) distribute, preprocessed and split as they do, from a folder laid out as
`TABULAR_LAYOUT`. Those files cannot be downloaded everywhere, so `"standin"` is a clearly
labelled stand-in that installed packages ship: scikit-learn's Wisconsin breast-cancer table
(569 x 30, continuous), standardized and split the MAF way. Its numbers are not comparable
with Table 9.II.

A missing file (or h5py for BSDS300) raises `DataSourceError` naming what was looked for.
"""
from __future__ import annotations

import collections
import os
from typing import NamedTuple, Optional

import numpy as np

from jaxthesis.data.sources import DataDependencyError, DataNotFoundError

TABULAR_DATASETS = ("standin", "power", "gas", "hepmass", "miniboone", "bsds300")
TABULAR_LAYOUT = ("power/data.npy, gas/ethylene_CO.pickle, hepmass/1000_train.csv + "
                  "1000_test.csv, miniboone/data.npy, BSDS300/BSDS300.hdf5")


class TabularSplits(NamedTuple):
  """A preprocessed tabular dataset: float32 arrays [N, D] per split."""
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  name: str
  note: str


# ------------------------------------------------------------------------------ loaders


def _holdout(data: np.ndarray, fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
  """The MAF split: the last `int(fraction N)` rows are held out."""
  n_out = int(fraction * data.shape[0])
  return data[:data.shape[0] - n_out], data[data.shape[0] - n_out:]


def _three_way(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Last 10% test; of the rest, last 10% validation."""
  rest, test = _holdout(data)
  train, valid = _holdout(rest)
  return train, valid, test


def _standardize(train, valid, test, reference: np.ndarray, ddof: int = 0):
  mu, sd = reference.mean(0), reference.std(0, ddof=ddof)
  return tuple(((x - mu) / sd).astype(np.float32) for x in (train, valid, test))


def _require(path: str, dataset: str) -> str:
  if not os.path.exists(path):
    raise DataNotFoundError(f"{dataset}: expected the MAF-preprocessed file {path} (the layout "
                            f"under the data folder: {TABULAR_LAYOUT})")
  return path


def load_power(data_dir: str) -> TabularSplits:
  """POWER: drop the date/time columns 1 and 3, add MAF's uniform dequantization noise.

  Rows are shuffled with `RandomState(42)` and the noise drawn from the same stream,
  matching the published splits. Standardized with train + validation statistics.
  """
  data = np.load(_require(os.path.join(data_dir, "power", "data.npy"), "power"))
  rng = np.random.RandomState(42)  # the published preprocessing's stream
  rng.shuffle(data)
  n = data.shape[0]
  data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
  # MAF draws the voltage noise (column 1) before the global-active-power noise (column 0).
  voltage_noise = 0.01 * rng.rand(n, 1)
  gap_noise = 0.001 * rng.rand(n, 1)
  noise = np.hstack([gap_noise, voltage_noise, rng.rand(n, 3), np.zeros((n, 1))])
  train, valid, test = _three_way(data + noise)
  return TabularSplits(*_standardize(train, valid, test, np.vstack([train, valid])),
                       "power", "UCI household power (MAF preprocessing)")


def load_gas(data_dir: str) -> TabularSplits:
  """GAS: the ethylene/CO sensor table without Meth, Eth, Time; columns correlated above
  0.98 with another are dropped one by one; standardized over all rows (pandas, ddof=1)."""
  import pandas as pd
  frame = pd.read_pickle(_require(os.path.join(data_dir, "gas", "ethylene_CO.pickle"), "gas"))
  frame = frame.drop(columns=["Meth", "Eth", "Time"])

  def correlated_counts(f):
    return (f.corr() > 0.98).to_numpy().sum(axis=1)

  counts = correlated_counts(frame)
  while np.any(counts > 1):
    frame = frame.drop(columns=frame.columns[int(np.flatnonzero(counts > 1)[0])])
    counts = correlated_counts(frame)
  frame = (frame - frame.mean()) / frame.std()
  train, valid, test = _three_way(frame.to_numpy())
  return TabularSplits(train.astype(np.float32), valid.astype(np.float32),
                       test.astype(np.float32), "gas", "UCI gas sensors (MAF preprocessing)")


def load_hepmass(data_dir: str) -> TabularSplits:
  """HEPMASS: signal rows (label 1) only, label dropped; the distributed test file has one
  trailing extra column, dropped; standardized with train statistics (ddof=1); features
  whose smallest value recurs more than 5 times (the near-discrete ones) removed; the last
  10% of train is validation."""
  import pandas as pd
  root = os.path.join(data_dir, "hepmass")
  train = pd.read_csv(_require(os.path.join(root, "1000_train.csv"), "hepmass"), index_col=False)
  test = pd.read_csv(_require(os.path.join(root, "1000_test.csv"), "hepmass"), index_col=False)
  train = train[train.iloc[:, 0] == 1].iloc[:, 1:].to_numpy(np.float64)
  test = test[test.iloc[:, 0] == 1].iloc[:, 1:].to_numpy(np.float64)
  if test.shape[1] == train.shape[1] + 1:
    test = test[:, :-1]
  if test.shape[1] != train.shape[1]:
    raise ValueError(f"hepmass: train has {train.shape[1]} features, test {test.shape[1]}")
  mu, sd = train.mean(0), train.std(0, ddof=1)
  train, test = (train - mu) / sd, (test - mu) / sd
  keep = [j for j in range(train.shape[1])
          if collections.Counter(train[:, j])[train[:, j].min()] <= 5]
  train, test = train[:, keep], test[:, keep]
  train, valid = _holdout(train)
  return TabularSplits(train.astype(np.float32), valid.astype(np.float32),
                       test.astype(np.float32), "hepmass", "UCI HEPMASS (MAF preprocessing)")


def load_miniboone(data_dir: str) -> TabularSplits:
  """MINIBOONE: the MAF-cleaned array, split in order, standardized with train + valid."""
  data = np.load(_require(os.path.join(data_dir, "miniboone", "data.npy"), "miniboone"))
  train, valid, test = _three_way(data)
  return TabularSplits(*_standardize(train, valid, test, np.vstack([train, valid])),
                       "miniboone", "UCI MiniBooNE (MAF preprocessing)")


def load_bsds300(data_dir: str) -> TabularSplits:
  """BSDS300: 8x8 patches minus one pixel, splits stored in the HDF5 file (needs h5py)."""
  path = _require(os.path.join(data_dir, "BSDS300", "BSDS300.hdf5"), "bsds300")
  try:
    import h5py
  except ImportError:
    raise DataDependencyError("bsds300 needs h5py to read BSDS300.hdf5: pip install h5py") from None
  with h5py.File(path, "r") as f:
    train, valid, test = (np.asarray(f[k], np.float32) for k in ("train", "validation", "test"))
  return TabularSplits(train, valid, test, "bsds300", "BSDS300 patches (MAF preprocessing)")


def load_standin() -> TabularSplits:
  """The built-in stand-in: scikit-learn's breast-cancer table, standardized, MAF split.

  Rows are shuffled with a fixed permutation (the file is sorted by nothing in particular,
  but a fixed shuffle keeps the split independent of that), then split 80/10/10 as MAF
  does and standardized with train + validation statistics.
  """
  from sklearn.datasets import load_breast_cancer
  data = load_breast_cancer().data.astype(np.float64)
  data = data[np.random.RandomState(0).permutation(data.shape[0])]
  train, valid, test = _three_way(data)
  return TabularSplits(*_standardize(train, valid, test, np.vstack([train, valid])),
                       "standin", "STAND-IN: scikit-learn breast-cancer table (569 x 30), "
                                  "standardized; not a Table 9.II dataset")


LOADERS = {"power": load_power, "gas": load_gas, "hepmass": load_hepmass,
           "miniboone": load_miniboone, "bsds300": load_bsds300}


def load_tabular(dataset: str, data_dir: Optional[str] = None) -> TabularSplits:
  """Loads one of `TABULAR_DATASETS` as float32 train / validation / test splits.

  Args:
    dataset: "standin" (built in) or a MAF dataset name.
    data_dir: the folder holding the MAF files (`TABULAR_LAYOUT`); required for every
      dataset but "standin", ignored for it.

  Returns:
    `TabularSplits`.

  Raises:
    ValueError: an unknown `dataset`, or no `data_dir` for a MAF dataset.
    DataSourceError: a file (or h5py) is missing.
  """
  if dataset not in TABULAR_DATASETS:
    raise ValueError(f"dataset must be one of {', '.join(TABULAR_DATASETS)}, got {dataset!r}")
  if dataset == "standin":
    return load_standin()
  if data_dir is None:
    raise ValueError(f"dataset {dataset!r} needs data_dir (a folder with {TABULAR_LAYOUT})")
  if not os.path.isdir(data_dir):
    raise DataNotFoundError(f"data_dir {data_dir!r} is not a directory (expected a folder with "
                            f"{TABULAR_LAYOUT})")
  return LOADERS[dataset](data_dir)
