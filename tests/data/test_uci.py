"""jaxthesis.data.uci: the MAF-format tabular loaders on small synthetic files written in
their formats, and the built-in stand-in."""
import os

import numpy as np
import pandas as pd
import pytest

from jaxthesis.data import DataDependencyError, DataNotFoundError, load_tabular


def _assert_standardized(*parts, ddof=0):
  data = np.vstack(parts).astype(np.float64)
  np.testing.assert_allclose(data.mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(data.std(0, ddof=ddof), 1.0, atol=1e-5)


def test_power_drops_time_columns_adds_noise_and_splits(tmp_path):
  rng = np.random.default_rng(0)
  data = rng.normal(size=(200, 8))
  data[:, [1, 3]] = np.nan            # the date/time columns: must be dropped
  data[:, 7] = rng.integers(0, 2, 200)  # gets zero noise: stays two-valued
  os.makedirs(tmp_path / "power")
  np.save(tmp_path / "power" / "data.npy", data)
  s = load_tabular("power", str(tmp_path))
  # 10% test, then 10% of the rest validation (MAF splits).
  assert (s.train.shape, s.valid.shape, s.test.shape) == ((162, 6), (18, 6), (20, 6))
  assert all(np.isfinite(x).all() for x in s[:3])
  _assert_standardized(s.train, s.valid)
  assert len(np.unique(np.vstack(s[:3])[:, 5])) == 2
  # The noisy columns are no longer two-valued, and the shuffle + noise are reproducible.
  again = load_tabular("power", str(tmp_path))
  np.testing.assert_array_equal(again.test, s.test)


def test_gas_removes_correlated_columns(tmp_path):
  rng = np.random.default_rng(1)
  n = 100
  frame = pd.DataFrame({"Time": np.arange(n), "Meth": rng.normal(size=n),
                        "Eth": rng.normal(size=n)})
  for j in range(5):
    frame[f"s{j}"] = rng.normal(size=n)
  frame["s5"] = 2.0 * frame["s1"] + 1.0  # correlated with s1: the first of the pair goes
  os.makedirs(tmp_path / "gas")
  frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
  s = load_tabular("gas", str(tmp_path))
  assert (s.train.shape, s.valid.shape, s.test.shape) == ((81, 5), (9, 5), (10, 5))
  _assert_standardized(s.train, s.valid, s.test, ddof=1)
  expected_s0 = (frame["s0"] - frame["s0"].mean()) / frame["s0"].std()
  np.testing.assert_allclose(s.train[:, 0], expected_s0[:81], rtol=1e-5)
  standardized_s5 = ((frame["s5"] - frame["s5"].mean()) / frame["s5"].std()).to_numpy()
  np.testing.assert_allclose(s.train[:, -1], standardized_s5[:81], rtol=1e-5)


def test_hepmass_keeps_signal_drops_discrete_features(tmp_path):
  rng = np.random.default_rng(2)

  def table(n, extra_column):
    cols = {"# label": rng.integers(0, 2, n).astype(float)}
    for j in range(4):
      cols[f"f{j}"] = rng.normal(size=n)
    cols["f4"] = rng.integers(0, 3, n).astype(float)  # near-discrete: removed
    cols["mass"] = rng.normal(size=n)
    if extra_column:  # the distributed test file carries one trailing extra column
      cols["extra"] = rng.normal(size=n)
    return pd.DataFrame(cols)

  train, test = table(300, False), table(80, True)
  os.makedirs(tmp_path / "hepmass")
  train.to_csv(tmp_path / "hepmass" / "1000_train.csv", index=False)
  test.to_csv(tmp_path / "hepmass" / "1000_test.csv", index=False)
  s = load_tabular("hepmass", str(tmp_path))
  signal = int((train["# label"] == 1).sum())
  assert s.train.shape[1] == s.test.shape[1] == 5  # f0-f3 and mass
  assert s.train.shape[0] + s.valid.shape[0] == signal
  assert s.valid.shape[0] == int(0.1 * signal)
  assert s.test.shape[0] == int((test["# label"] == 1).sum())
  _assert_standardized(s.train, s.valid, ddof=1)
  signal_test = test[test["# label"] == 1]
  mu, sd = train[train["# label"] == 1]["f0"].mean(), train[train["# label"] == 1]["f0"].std()
  np.testing.assert_allclose(s.test[:, 0], (signal_test["f0"] - mu) / sd, rtol=1e-5)


def test_miniboone_and_standin_splits(tmp_path):
  os.makedirs(tmp_path / "miniboone")
  np.save(tmp_path / "miniboone" / "data.npy",
          np.random.default_rng(3).normal(3.0, 2.0, size=(100, 4)))
  s = load_tabular("miniboone", str(tmp_path))
  assert (s.train.shape, s.valid.shape, s.test.shape) == ((81, 4), (9, 4), (10, 4))
  _assert_standardized(s.train, s.valid)
  standin = load_tabular("standin")
  assert standin.train.shape[1] == 30 and "STAND-IN" in standin.note
  assert sum(x.shape[0] for x in standin[:3]) == 569
  _assert_standardized(standin.train, standin.valid)


def test_missing_files_and_h5py_are_named(tmp_path):
  with pytest.raises(DataNotFoundError, match="power/data.npy"):  # a FileNotFoundError
    load_tabular("power", str(tmp_path))
  with pytest.raises(DataNotFoundError, match="not a directory"):
    load_tabular("power", str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="data_dir"):
    load_tabular("gas")
  with pytest.raises(ValueError, match="dataset must be one of"):
    load_tabular("cifar", str(tmp_path))
  try:
    import h5py  # noqa: F401
  except ImportError:
    os.makedirs(tmp_path / "BSDS300")
    (tmp_path / "BSDS300" / "BSDS300.hdf5").write_bytes(b"")
    with pytest.raises(DataDependencyError, match="pip install h5py"):  # an ImportError
      load_tabular("bsds300", str(tmp_path))


def test_bsds300_reads_the_three_splits(tmp_path):
  h5py = pytest.importorskip("h5py")
  os.makedirs(tmp_path / "BSDS300")
  rng = np.random.default_rng(5)
  parts = {"train": rng.normal(size=(20, 63)), "validation": rng.normal(size=(5, 63)),
           "test": rng.normal(size=(6, 63))}
  with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
    for k, v in parts.items():
      f[k] = v
  s = load_tabular("bsds300", str(tmp_path))
  for got, want in zip(s[:3], parts.values()):
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)

