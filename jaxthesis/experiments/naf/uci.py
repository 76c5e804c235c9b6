"""`jaxthesis naf uci`: density estimation on the MAF tabular benchmarks (Table 9.II).

MAF-affine (5 stacked layers) vs MAF-DDSF (5 stacked layers) trained by maximum likelihood
on POWER, GAS, HEPMASS, MINIBOONE or BSDS300, preprocessed and split as in Papamakarios
et al. (2017) (`jaxthesis.data.load_tabular`, the files read from `--data-dir`). The
reported number is the average test log-likelihood (nats) at the evaluation with the best
validation log-likelihood (early stopping, as MAF does), over vmapped seeds.

Those files cannot be downloaded here, so the default dataset is a clearly labelled
stand-in: scikit-learn's bundled Wisconsin breast-cancer table (569 x 30, continuous),
standardized and split the MAF way. Its numbers are not comparable with Table 9.II; the
qualitative expectation (DDSF >= affine in test log-likelihood) is.

Differences from MAF's protocol: no batch normalization between layers; fixed numbers of
steps with periodic evaluation instead of patience-based stopping. `run` returns the test
log-likelihoods and the validation curves; `plot` redraws the curves from the saved files.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.data.uci import TABULAR_DATASETS, TABULAR_LAYOUT
from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.naf import _common as nc

# Table 9.II, test log-likelihood (nats), mean and 2 standard deviations over 5 trials.
THESIS_TEST_LL = {
    "power": {"affine": (0.14, 0.01), "ddsf": (0.62, 0.01)},
    "gas": {"affine": (9.07, 0.02), "ddsf": (11.91, 0.13)},
    "hepmass": {"affine": (-17.70, 0.02), "ddsf": (-15.09, 0.40)},
    "miniboone": {"affine": (-11.75, 0.44), "ddsf": (-8.86, 0.15)},
    "bsds300": {"affine": (155.69, 0.28), "ddsf": (157.73, 0.04)},
}
REFERENCE = {
    "source": "Table 9.II",
    "expected": "MAF-DDSF(5) test log-likelihood above MAF-affine(5) on every dataset "
                "(the stand-in is not a Table 9.II dataset: only the ordering compares)",
    "test_ll": {d: {m: {"mean": v[0], "two_std": v[1]} for m, v in models.items()}
                for d, models in THESIS_TEST_LL.items()},
}

# The two rows of Table 9.II reproduced: 5 stacked MADE layers, reversed orderings.
UCI_MODELS = {
    "affine": dict(transformer="affine"),
    "ddsf": dict(transformer="ddsf", transformer_kwargs={"hidden_units": 16, "num_layers": 2}),
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis naf uci` run."""
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
  max_eval_points: Optional[int] = None   # cap on the validation/test rows (None: all)
  surjective: bool = True                 # False: the thesis's bounded DDSF
  seed: int = 0

  def __post_init__(self):
    _config.one_of(self, "dataset", TABULAR_DATASETS)
    if self.dataset != "standin" and self.data_dir is None:
      raise _config.UsageError(f"config.data_dir is required for dataset {self.dataset} "
                               f"(a folder with {TABULAR_LAYOUT})", "data_dir")
    _config.directory(self, "data_dir")
    _config.names(self, "models", tuple(UCI_MODELS))
    nc.check_training_fields(self, "num_layers", "hidden", "num_steps", "batch_size",
                             "learning_rate", "num_seeds", "num_evals", "eval_chunk", "seed")
    if self.max_eval_points is not None:
      _config.integer(self, "max_eval_points", 1)
    nc.check_form(self)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Table 9.II's flows (5 layers, 20,000 steps, 5 seeds); `quick`: 2 small layers, 60
  steps, one seed, 256 evaluation rows."""
  base = (Config(num_layers=2, hidden=16, num_steps=60, num_seeds=1, num_evals=3,
                 max_eval_points=256, eval_chunk=256) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  nc.add_training_arguments(p, seeds=True)
  p.add_argument("--dataset", choices=TABULAR_DATASETS, default=None,
                 help="standin (default): a labelled stand-in, scikit-learn's bundled "
                      "breast-cancer table, standardized; the others read the "
                      "MAF-preprocessed files under --data-dir")
  p.add_argument("--data-dir", default=None,
                 help=f"folder holding the MAF files: {TABULAR_LAYOUT}")
  nc.add_models_argument(p, tuple(UCI_MODELS))
  nc.add_form_argument(p)
  p.add_argument("--layers", dest="num_layers", type=_cli.positive_int("--layers"),
                 default=None, metavar="LAYERS", help="stacked MADE layers per flow (Table 9.II: 5)")


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


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every model over all seeds with early stopping; returns the results."""
  import jax
  import jax.numpy as jnp

  from jaxthesis import flows
  from jaxthesis.data import load_tabular

  clock = _results.Stopwatch()
  splits = load_tabular(config.dataset, config.data_dir)
  cap = slice(None, config.max_eval_points)
  data = {"train": jnp.asarray(splits.train), "valid": jnp.asarray(splits.valid[cap]),
          "test": jnp.asarray(splits.test[cap])}
  num_dims = splits.train.shape[1]
  metrics = {"dataset": splits.name, "data_note": splits.note, "num_dims": num_dims,
             "num_train": int(splits.train.shape[0]), "num_valid": int(splits.valid.shape[0]),
             "num_test": int(splits.test.shape[0])}
  arrays = {}
  eval_every = max(1, config.num_steps // config.num_evals)
  for model in config.models:
    flow = flows.autoregressive_flow(
        num_dims, hidden_sizes=(config.hidden, config.hidden), num_layers=config.num_layers,
        direction="maf", permutation="reverse", output_init_scale=0.1,
        **nc.with_form(UCI_MODELS[model], config.surjective))

    def loss_fn(params, key, data, flow=flow):
      rows = jax.random.randint(key, (config.batch_size,), 0, data["train"].shape[0])
      return -flow.distribution(params).log_prob(data["train"][rows]).mean()

    def evaluate(params, data, flow=flow):
      log_prob = flow.distribution(params).log_prob
      return {"valid_ll": chunked_mean(log_prob, data["valid"], config.eval_chunk),
              "test_ll": chunked_mean(log_prob, data["test"], config.eval_chunk)}

    task = nc.flow_task(flow, loss_fn, config.learning_rate, evaluate)
    result = nc.run_seeds(task, config.num_steps, config.seed, config.num_seeds, data,
                          progress, f"uci {splits.name} {model}", eval_every=eval_every,
                          **nc.checkpoint_args(checkpoint_dir, model, config, ("models",)))
    valid, test = result.history.evals["valid_ll"], result.history.evals["test_ll"]
    # Early stopping: per seed, the test LL at the evaluation with the best validation LL.
    best = np.nanargmax(np.where(np.isfinite(valid), valid, -np.inf), axis=1)
    chosen = test[np.arange(test.shape[0]), best]
    mean, std = _results.mean_std(chosen)
    metrics[model] = {"test_ll": mean, "test_ll_std": std, "test_ll_per_seed": chosen,
                      "valid_ll_best": np.nanmax(valid, axis=1),
                      "best_eval_step": result.history.eval_steps[best],
                      "final_train_nll": float(np.nanmean(
                          result.history.losses["loss"][:, -50:]))}
    arrays[f"{model}/eval_steps"] = result.history.eval_steps
    arrays[f"{model}/valid_ll"] = valid
    arrays[f"{model}/test_ll"] = test
  return nc.results("uci", config, metrics, REFERENCE, clock, arrays,
                    data=data_label(config))


save = _results.save


def table(results: dict[str, Any]) -> str:
  config, metrics, rows = results["config"], results["metrics"], []
  for model in config["models"]:
    m = metrics[model]
    thesis = THESIS_TEST_LL.get(config["dataset"], {}).get(model)
    rows.append([metrics["dataset"], f"MAF-{model} ({config['num_layers']})",
                 _results.pm(m["test_ll"], m["test_ll_std"], 2),
                 f"{thesis[0]:.2f}" if thesis is not None else "n/a (stand-in)"])
  return nc.titled_table("Density estimation, test log-likelihood (nats)", REFERENCE["source"],
                         ("dataset", "model", "test LL (nats)",
                          f"thesis ({REFERENCE['source']})"), rows)


def plot(out: str) -> list[str]:
  """Validation log-likelihood against step, mean over seeds, from the saved files."""
  results, arrays = _results.load(out)
  config, name = results["config"], results["metrics"]["dataset"]
  plt = _plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.4))
  for model in config["models"]:
    ax.plot(arrays[f"{model}/eval_steps"], np.nanmean(arrays[f"{model}/valid_ll"], 0),
            marker=".", label=f"MAF-{model} ({config['num_layers']})")
  ax.set_xlabel("step")
  ax.set_ylabel("validation log-likelihood (nats)")
  ax.set_title(name if name != "standin" else "stand-in (breast cancer)", fontsize=9)
  ax.legend(fontsize=8)
  return [_plots.savefig(fig, out, "uci_curves.png", dpi=110)]


def data_label(config: Config) -> str:
  """The results.json `data` entry."""
  if config.dataset == "standin":
    return ("STAND-IN: scikit-learn breast-cancer table (569 x 30), standardized, MAF split; "
            "not a Table 9.II dataset")
  return f"{config.dataset} (MAF preprocessing) from {config.data_dir}"
