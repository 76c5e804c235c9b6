"""`jaxthesis bhn mnist`: generalization of BHNs and baselines on MNIST (Table 7.I, Fig. 7.3).

An MLP with two hidden layers of 800 (or 1,200) units on the built-in 4,000 / 1,000 split
(the thesis's "MNIST 5,000" columns). Methods: BHNs over the weight-norm scales with 0
(factorial Gaussian), 4, 8, 12 RealNVP couplings, IAF and DSF hypernets, and the MLE,
dropout and Bayes-by-Backprop baselines. The trials of one method are one vmapped run;
the box plot over trials is Fig. 7.3. Beside accuracy: NLL, Brier and ECE (15 bins) of the
MC predictive, which the thesis does not report.

Full MNIST and CIFAR-10 (section 7.4.2) come from prepared TFDS directories
(`--data tfds --data-dir DIR`, with `--dataset cifar10`); `--model cnn` trains the thesis's
CIFAR-10 net instead of the MLP: weight-normalized 3x3 convolutions of 64-64-128-128
channels, 2x2 max pooling after the 2nd and 4th, a dense layer of 512 (`--cnn-channels`,
`--cnn-dense`), with every layer's scales random. Bayes by Backprop is MLP-only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _images, _plots, _results
from jaxthesis.experiments.bhn import _common

TABLE_7_I = {  # MNIST 5,000, test accuracy (%) by method
    800: {"gaussian:0": 92.06, "realnvp:8": 94.25, "realnvp:12": 96.16, "dropout": 95.58},
    1200: {"gaussian:0": 90.91, "realnvp:8": 96.27, "realnvp:12": 96.51, "dropout": 95.52},
}
# The full-data columns of Table 7.I (50,000 training examples): MNIST (MLP) and CIFAR-10
# (the CNN); MNIST 50,000's 0-coupling entry is 98.28 (98.01 for Bayes by Backprop).
TABLE_7_I_FULL = {
    "mnist": {"gaussian:0": 98.28, "bbb": 98.01, "realnvp:2": 98.39, "realnvp:4": 98.47,
              "realnvp:6": 98.59, "realnvp:8": 98.63, "dropout": 98.73},
    "cifar10": {"gaussian:0": 67.83, "realnvp:4": 74.77, "realnvp:8": 74.90, "dropout": 74.08,
                "mle": 72.75},
}
REFERENCE = {
    "source": "Table 7.I",
    "expected": "MNIST 5,000: BHN with couplings >= dropout > BHN with 0 couplings; accuracy "
                "grows with the number of couplings; IAF consistently best over 10 trials "
                "(Fig. 7.3)",
    "accuracy_percent": TABLE_7_I,
    "accuracy_percent_full_data": TABLE_7_I_FULL,
}
DEFAULT_METHODS = ("mle", "dropout", "bbb", "gaussian:0", "realnvp:4", "realnvp:8",
                   "realnvp:12", "iaf:8", "dsf:2")


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  data: str = "builtin"
  data_dir: Optional[str] = None
  dataset: str = "mnist"      # or "cifar10" (TFDS only)
  model: str = "mlp"          # or "cnn", section 7.4.2's CIFAR-10 net
  cnn_channels: tuple = _common.CNN_CHANNELS
  cnn_dense: int = _common.CNN_DENSE
  methods: tuple = DEFAULT_METHODS
  hidden: int = 800
  num_trials: int = 10
  num_epochs: int = 100
  batch_size: int = 128
  learning_rate: float = 1e-3
  num_samples: int = 1
  num_eval_samples: int = 100
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  train_size: int = 0   # 0: every training example
  test_size: int = 0    # 0: every test example

  def __post_init__(self):
    _common.check_mnist_config(self, positive=(
        "hidden", "num_trials", "num_epochs", "batch_size", "num_samples", "num_eval_samples",
        "hypernet_hidden", "cnn_dense"))
    _config.one_of(self, "dataset", _images.DATASETS)
    _config.one_of(self, "model", _common.MODELS)
    _config.numbers(self, "cnn_channels", 1, integers=True)
    if len(self.cnn_channels) != 4:  # pooling follows the 2nd and 4th convolution
      _config.fail("cnn_channels", "4 channel counts (thesis: 64, 64, 128, 128)",
                   self.cnn_channels)
    if self.dataset == "cifar10" and self.data == "builtin":
      raise _config.UsageError("config.dataset='cifar10' has no built-in copy (only MNIST "
                               "ships with the installed packages); " + _images.CIFAR10_HOWTO,
                               "dataset")
    if self.model == "cnn" and "bbb" in self.methods:
      _config.fail("methods", "no 'bbb' with model='cnn' (Bayes by Backprop is MLP-only)",
                   self.methods)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Table 7.I (A) at 100 epochs and 10 trials; `quick`: 3 methods, a tiny net (a CNN of
  4-4-8-8 channels and 16 dense units with model='cnn'), 2 epochs."""
  base = Config(methods=("mle", "gaussian:0", "realnvp:2"), hidden=32, num_trials=2,
                num_epochs=2, hypernet_hidden=16, num_eval_samples=8, train_size=512,
                test_size=200, cnn_channels=(4, 4, 8, 8), cnn_dense=16) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  _common.add_specs_argument(p)
  p.add_argument("--hidden", dest="hidden", default=None, type=_cli.positive_int("--hidden"),
                 help="units per hidden layer (800 or 1200 in Table 7.I)")
  p.add_argument("--trials", dest="num_trials", default=None, type=_cli.positive_int("--trials"))
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))
  p.add_argument("--train-size", dest="train_size", default=None,
                 type=_cli.nonnegative_int("--train-size"))
  p.add_argument("--dataset", dest="dataset", choices=_images.DATASETS, default=None,
                 help="mnist (default) or cifar10 (TFDS only: " + _images.CIFAR10_HOWTO + ")")
  p.add_argument("--model", dest="model", choices=_common.MODELS, default=None,
                 help="mlp (default; --hidden) or cnn: section 7.4.2's CIFAR-10 net "
                      "(--cnn-channels, --cnn-dense)")
  p.add_argument("--cnn-channels", dest="cnn_channels", default=None,
                 type=_cli.number_list("--cnn-channels", int, 1),
                 help="channels of the four convolutions (default 64,64,128,128)")
  p.add_argument("--cnn-dense", dest="cnn_dense", default=None,
                 type=_cli.positive_int("--cnn-dense"), help="dense units (default 512)")


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax

  clock = _results.Stopwatch()
  x_tr, y_tr, x_te, y_te, description = _common.load_config_mnist(config)
  key = jax.random.PRNGKey(config.seed)
  metrics, arrays = {}, {}
  for i, spec in enumerate(config.methods):
    _common.log(f"[bhn mnist] {spec}: {config.num_trials} trials x {config.num_epochs} epochs",
                progress)
    method, params, result = _common.train_from_config(
        spec, jax.random.fold_in(key, i), x_tr, y_tr, config, progress=progress,
        checkpoint_dir=_common.checkpoint_path(checkpoint_dir, spec),
        num_trials=config.num_trials, num_samples=config.num_samples)
    probs = _common.sample_probs(method, params, jax.random.fold_in(key, 1000 + i), x_te,
                                 config.num_eval_samples)
    per_trial = [_common.classification_metrics(p, y_te) for p in probs]
    acc = np.array([m["accuracy"] for m in per_trial])
    metrics[spec] = {name: {"mean": float(np.mean([m[name] for m in per_trial])),
                            "std": float(np.std([m[name] for m in per_trial]))}
                     for name in per_trial[0]}
    metrics[spec]["per_trial_accuracy"] = acc.tolist()
    metrics[spec]["final_loss"] = float(np.nanmean(result.history.losses["loss"][:, -1]))
    arrays[f"accuracy_{i}"] = acc
  return _common.results("mnist", f"{description}; used {len(y_tr)} train / {len(y_te)} test",
                         config, metrics, clock, arrays, REFERENCE)


save = _results.save


def table(results: dict[str, Any]) -> str:
  config = results["config"]
  get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (
      lambda k, d=None: getattr(config, k, d))
  hidden, dataset, model = get("hidden"), get("dataset", "mnist"), get("model", "mlp")
  if dataset == "mnist" and model == "mlp" and "5,000" in results.get("data", "5,000"):
    thesis, column = TABLE_7_I.get(hidden, {}), f"MNIST 5,000, {hidden} units"
  else:  # a prepared TFDS copy: the 50,000-example columns
    thesis = TABLE_7_I_FULL[dataset] if (dataset, model) in (("mnist", "mlp"),
                                                              ("cifar10", "cnn")) else {}
    column = f"{'MNIST' if dataset == 'mnist' else 'CIFAR-10'} 50,000, {model.upper()}"
  rows = []
  for spec, m in results["metrics"].items():
    ref = thesis.get(spec)
    rows.append([_common.spec_label(spec),
                 _results.pm(100 * m["accuracy"]["mean"], 100 * m["accuracy"]["std"], 2),
                 f"{ref:.2f}" if ref is not None else "-", f"{m['nll']['mean']:.3f}",
                 f"{m['brier']['mean']:.3f}", f"{m['ece']['mean']:.3f}"])
  text = _results.format_table(["method", "test acc % (ours)", f"{REFERENCE['source']} %",
                                "NLL", "Brier", "ECE"], rows)
  return f"{text}\n{REFERENCE['source']} (thesis, {column}): {REFERENCE['expected']}"


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  specs = list(results["config"]["methods"])
  fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(specs)), 3.2))
  ax.boxplot([100 * arrays[f"accuracy_{i}"] for i in range(len(specs))])
  ax.set_xticks(range(1, len(specs) + 1), [_common.spec_label(s) for s in specs], rotation=45,
                ha="right", fontsize=7)
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"Fig. 7.3 / {REFERENCE['source']}: accuracy over trials")
  return [_plots.savefig(fig, out, "mnist_boxplot.png")]
