"""`jaxthesis naf uci`: density estimation on the MAF tabular benchmarks (Table 9.II).

MAF-affine (5 stacked layers) vs MAF-DDSF (5 stacked layers) trained by maximum likelihood
on POWER, GAS, HEPMASS, MINIBOONE or BSDS300, preprocessed and split as in Papamakarios
et al. (2017), whose files (`power/data.npy`, `gas/ethylene_CO.pickle`,
`hepmass/1000_{train,test}.csv`, `miniboone/data.npy`, `BSDS300/BSDS300.hdf5`) are read from
`--data-dir`. The reported number is the average test log-likelihood (nats) at the
evaluation with the best validation log-likelihood (early stopping, as MAF does), over
vmapped seeds.

Those files cannot be downloaded here, so the default dataset is a clearly labelled
stand-in: scikit-learn's bundled Wisconsin breast-cancer table (569 x 30, continuous),
standardized and split the MAF way. Its numbers are not comparable with Table 9.II; the
qualitative expectation (DDSF >= affine in test log-likelihood) is.

Differences from MAF's protocol: no batch normalization between layers; fixed numbers of
steps with periodic evaluation instead of patience-based stopping.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import NamedTuple, Optional

import numpy as np

from jaxthesis.experiments import _common as common
from jaxthesis.experiments.naf import _common as nc

DATASETS = ("standin", "power", "gas", "hepmass", "miniboone", "bsds300")

# Table 9.II, test log-likelihood (nats), 5 trials.
THESIS_TEST_LL = {
    "power": {"affine": 0.14, "ddsf": 0.62},
    "gas": {"affine": 9.07, "ddsf": 11.91},
    "hepmass": {"affine": -17.70, "ddsf": -15.09},
    "miniboone": {"affine": -11.75, "ddsf": -8.86},
    "bsds300": {"affine": 155.69, "ddsf": 157.73},
}

# The two rows of Table 9.II reproduced: 5 stacked MADE layers, reversed orderings.
UCI_MODELS = {
    "affine": dict(transformer="affine"),
    "ddsf": dict(transformer="ddsf", transformer_kwargs={"hidden_units": 16, "num_layers": 2}),
}


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
    raise FileNotFoundError(f"{dataset}: expected the MAF-preprocessed file {path}; see "
                            f"`jaxthesis naf uci --help` for the layout under --data-dir")
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
  noise = np.hstack([0.001 * rng.rand(n, 1), 0.01 * rng.rand(n, 1), rng.rand(n, 3),
                     np.zeros((n, 1))])
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
    raise ImportError("bsds300 needs h5py to read BSDS300.hdf5: pip install h5py") from None
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
  """Loads one of `DATASETS`; the MAF datasets need `data_dir`."""
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
  if dataset == "standin":
    return load_standin()
  if data_dir is None:
    raise ValueError(f"dataset {dataset!r} needs data_dir (the folder holding {dataset}/)")
  return LOADERS[dataset](data_dir)


# ------------------------------------------------------------------------- experiment


@dataclasses.dataclass(frozen=True)
class UCIConfig:
  dataset: str = "standin"
  data_dir: Optional[str] = None
  models: tuple[str, ...] = ("affine", "ddsf")
  num_layers: int = 5
  hidden: int = 100
  num_steps: int = 20000
  batch_size: int = 100
  learning_rate: float = 1e-3
  num_seeds: int = 5
  num_evals: int = 40
  eval_chunk: int = 1024
  max_eval_points: Optional[int] = None
  seed: int = 0


def get_config(quick: bool = False) -> UCIConfig:
  if quick:
    return UCIConfig(num_layers=2, hidden=16, num_steps=60, num_seeds=1, num_evals=3,
                     max_eval_points=256, eval_chunk=256)
  return UCIConfig()


def chunked_mean(fn, data, chunk: int):
  """Mean over rows of `fn(rows [chunk, D]) -> [chunk]`, one chunk at a time (lax.map),
  so a large test set never materializes every row's intermediates at once."""
  import jax
  import jax.numpy as jnp
  n = data.shape[0]
  chunk = min(chunk, n)
  num = -(-n // chunk)
  padded = jnp.concatenate([data, jnp.zeros((num * chunk - n,) + data.shape[1:], data.dtype)])
  mask = jnp.arange(num * chunk) < n
  values = jax.lax.map(fn, padded.reshape((num, chunk) + data.shape[1:])).reshape(-1)
  return jnp.where(mask, values, 0.0).sum() / n


def run(config: UCIConfig, out_dir: str, progress: bool = True) -> dict:
  import jax
  import jax.numpy as jnp

  from jaxthesis import engine, flows

  if config.dataset not in DATASETS:
    raise ValueError(f"config.dataset must be one of {', '.join(DATASETS)}, "
                     f"got {config.dataset!r}")
  for model in config.models:
    if model not in UCI_MODELS:
      raise ValueError(f"config.models: unknown {model!r}; choose from {', '.join(UCI_MODELS)}")
  splits = load_tabular(config.dataset, config.data_dir)
  cap = slice(None, config.max_eval_points)
  data = {"train": jnp.asarray(splits.train), "valid": jnp.asarray(splits.valid[cap]),
          "test": jnp.asarray(splits.test[cap])}
  num_dims = splits.train.shape[1]
  metrics = {"dataset": splits.name, "data_note": splits.note, "num_dims": num_dims,
             "num_train": int(splits.train.shape[0]), "num_valid": int(splits.valid.shape[0]),
             "num_test": int(splits.test.shape[0])}
  curves = {}
  eval_every = max(1, config.num_steps // config.num_evals)
  for model in config.models:
    flow = flows.autoregressive_flow(
        num_dims, hidden_sizes=(config.hidden, config.hidden), num_layers=config.num_layers,
        direction="maf", permutation="reverse", output_init_scale=0.1, **UCI_MODELS[model])

    def loss_fn(params, key, data, flow=flow):
      rows = jax.random.randint(key, (config.batch_size,), 0, data["train"].shape[0])
      return -flow.distribution(params).log_prob(data["train"][rows]).mean()

    def evaluate(params, data, flow=flow):
      log_prob = flow.distribution(params).log_prob
      return {"valid_ll": chunked_mean(log_prob, data["valid"], config.eval_chunk),
              "test_ll": chunked_mean(log_prob, data["test"], config.eval_chunk)}

    task = nc.flow_task(flow, loss_fn, config.learning_rate, evaluate)
    runner = engine.Runner(task, config.num_steps, progress=progress,
                              description=f"uci {splits.name} {model}", eval_every=eval_every)
    keys = jax.random.split(jax.random.PRNGKey(config.seed), config.num_seeds)
    result = runner.run(keys, None, data)
    valid, test = result.history.evals["valid_ll"], result.history.evals["test_ll"]
    # Early stopping: per seed, the test LL at the evaluation with the best validation LL.
    best = np.nanargmax(np.where(np.isfinite(valid), valid, -np.inf), axis=1)
    chosen = test[np.arange(test.shape[0]), best]
    mean, std = common.mean_std(chosen)
    metrics[model] = {"test_ll": mean, "test_ll_std": std, "test_ll_per_seed": chosen,
                      "valid_ll_best": np.nanmax(valid, axis=1),
                      "best_eval_step": result.history.eval_steps[best],
                      "final_train_nll": float(np.nanmean(
                          result.history.losses["loss"][:, -50:]))}
    curves[model] = (result.history.eval_steps, valid)

  plt = nc.matplotlib()
  fig, ax = plt.subplots(figsize=(5, 3.4))
  for model, (steps, valid) in curves.items():
    ax.plot(steps, np.nanmean(valid, 0), marker=".", label=f"MAF-{model} ({config.num_layers})")
  ax.set_xlabel("step")
  ax.set_ylabel("validation log-likelihood (nats)")
  ax.set_title(splits.name if splits.name != "standin" else "stand-in (breast cancer)",
               fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, "uci_curves.png"), dpi=110)
  plt.close(fig)
  return metrics


TABLE_HEADERS = ("dataset", "model", "test LL (nats)", "thesis (Table 9.II)")


def table_rows(metrics: dict, config: UCIConfig) -> list[list[str]]:
  rows = []
  for model in config.models:
    m = metrics[model]
    thesis = THESIS_TEST_LL.get(config.dataset, {}).get(model)
    rows.append([metrics["dataset"], f"MAF-{model} ({config.num_layers})",
                 common.pm(m["test_ll"], m["test_ll_std"], 2),
                 f"{thesis:.2f}" if thesis is not None else "n/a (stand-in)"])
  return rows


def data_label(config: UCIConfig) -> str:
  """The results.json `data` entry."""
  if config.dataset == "standin":
    return ("STAND-IN: scikit-learn breast-cancer table (569 x 30), standardized, MAF split; "
            "not a Table 9.II dataset")
  return f"{config.dataset} (MAF preprocessing) from {config.data_dir}"
