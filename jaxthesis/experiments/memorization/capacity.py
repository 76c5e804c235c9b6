"""`jaxthesis memorization capacity`: capacity, data size and noise (Figs. 3.5, 3.6).

2-layer MLPs on MNIST with a fraction of the training inputs replaced by Gaussian noise
(randX). Three grids, all restarts of one vmapped program (widths are masked units of a
network padded to the largest width; data sizes are the first n examples):

* Fig. 3.5: best validation accuracy against hidden units, for each noise level;
* Fig. 3.6 left: epochs to 100 % training accuracy against hidden units (data size fixed);
* Fig. 3.6 right: epochs to 100 % training accuracy against data size (width fixed).

"Epochs to fit" is the first evaluation at which training accuracy reaches
`fit_threshold` (resolution: `eval_every` steps); runs that never get there are reported
as not converged (None).

MLP on MNIST only, as in the thesis's Figs. 3.5 and 3.6: capacity here is hidden units,
varied by masking units of one padded network so that every width is a vmap lane. The
small CNN of the `csr` and `regularizers` studies (`model="cnn"`) has no such masked form,
so this study has no `model` / `dataset` fields.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc

REFERENCE = {
    "source": "Figs. 3.5, 3.6",
    "expected": "with noise in the data, higher capacity is needed for the best validation "
                "accuracy (real data is near its best at small widths); time to fit the "
                "training set falls with capacity and rises with data size, much more "
                "strongly for noise data than for real data",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization capacity` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  widths: tuple = (16, 32, 64, 128, 256)       # thesis: up to 4,096
  noise_levels: tuple = (0.0, 0.2, 0.4, 0.6, 0.8)
  data_sizes: tuple = (500, 1000, 2000, 4000)  # thesis: up to 50,000
  size_width: int = 128                        # width of the data-size grid
  num_train: int = 4000                        # data size of the width grids
  num_test: int = 1000
  batch_size: int = 32
  learning_rate: float = 0.01
  epochs: int = 60
  eval_every: int = 125
  fit_threshold: float = 1.0
  seed: int = 0

  def __post_init__(self):
    mc.check_data_fields(self)
    _config.numbers(self, "widths", 1, integers=True)
    _config.numbers(self, "noise_levels", 0.0, 1.0, distinct=True)
    _config.numbers(self, "data_sizes", 1, integers=True)
    for field in ("size_width", "num_train", "num_test", "batch_size", "epochs", "eval_every"):
      _config.integer(self, field, 1)
    _config.number(self, "learning_rate", 0.0, strict=True)
    _config.number(self, "fit_threshold", 0.0, 1.0, strict=True)
    if max(self.data_sizes) > self.num_train:
      _config.fail("data_sizes", f"sizes <= num_train ({self.num_train})", self.data_sizes)
    if self.batch_size > min(self.data_sizes):
      _config.fail("batch_size", f"<= the smallest data size ({min(self.data_sizes)})",
                   self.batch_size)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Widths 16-256, 4,000 digits, 60 epochs; `quick`: 3 widths, 2 levels, 200 digits."""
  base = (Config(widths=(2, 8), noise_levels=(0.0, 0.8), data_sizes=(100, 200), size_width=8,
                 num_train=200, num_test=100, batch_size=20, epochs=3, eval_every=10)
          if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  mc.add_training_arguments(p, "num_train", "num_test", "batch_size", "learning_rate", "epochs",
                            "eval_every")
  p.add_argument("--widths", dest="widths", default=None,
                 type=_cli.number_list("--widths", int, 1))
  p.add_argument("--noise-levels", dest="noise_levels", default=None,
                 type=_cli.number_list("--noise-levels", float, 0.0, 1.0))
  p.add_argument("--data-sizes", dest="data_sizes", default=None,
                 type=_cli.number_list("--data-sizes", int, 1))
  p.add_argument("--size-width", dest="size_width", default=None,
                 type=_cli.positive_int("--size-width"))


def _grid(config: Config):
  """`[(grid, noise index, width, size)]` for every run."""
  runs = [("width", j, w, config.num_train) for j in range(len(config.noise_levels))
          for w in config.widths]
  runs += [("size", j, config.size_width, n) for j in range(len(config.noise_levels))
           for n in config.data_sizes]
  return runs


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import models, train

  clock = _results.Stopwatch()
  x, y, vx, vy, data = mc.load_mnist_vectors(config, config.num_train, config.num_test)
  key = jax.random.PRNGKey(config.seed)
  levels = [("randX", float(q)) if q > 0 else ("real", 0.0) for q in config.noise_levels]
  xs, ys, _ = mc.corrupted_stack(jax.random.fold_in(key, 1), x, y, levels)
  max_width = max(max(config.widths), config.size_width)
  model = models.mlp(x.shape[1], 10, max_width)
  task = train.make_classifier_task(model, max_examples=config.num_train,
                                    batch_size=config.batch_size)
  runs = _grid(config)
  hp = train.classifier_hparams(
      len(runs), dataset=np.array([r[1] for r in runs]), width=np.array([r[2] for r in runs]),
      num_examples=np.array([r[3] for r in runs]), learning_rate=config.learning_rate)
  # Epochs are counted in the run's own data size; steps cover the largest one.
  steps = (config.num_train // config.batch_size) * config.epochs
  runner = engine.Runner(task, steps, eval_every=config.eval_every, progress=progress,
                         description="capacity")
  keys = jnp.stack([jax.random.fold_in(key, 2)] * len(runs))
  out = runner.run(keys, hp, {"train_x": jnp.asarray(xs), "train_y": jnp.asarray(ys),
                              "eval": {"val": (jnp.asarray(vx), jnp.asarray(vy))}},
                   **mc.checkpoint_args(checkpoint_dir, "capacity", config))
  ev, eval_steps = out.history.evals, out.history.eval_steps
  fit = np.full(len(runs), np.nan)
  for i, (_, _, _, n) in enumerate(runs):
    hit = np.flatnonzero(ev["train_acc"][i] >= config.fit_threshold - 1e-9)
    if hit.size:
      fit[i] = eval_steps[hit[0]] / max(n // config.batch_size, 1)
  best_val = ev["val_acc"].max(axis=1)
  nq, nw, nn = len(config.noise_levels), len(config.widths), len(config.data_sizes)
  val_by_width = best_val[:nq * nw].reshape(nq, nw)
  fit_by_width = fit[:nq * nw].reshape(nq, nw)
  fit_by_size = fit[nq * nw:].reshape(nq, nn)
  none_if_nan = lambda a: [None if np.isnan(v) else float(v) for v in a]
  metrics = {}
  for j, q in enumerate(config.noise_levels):
    metrics[f"noise_{q:g}"] = {
        "best_val_acc_by_width": [float(v) for v in val_by_width[j]],
        "best_width": int(config.widths[int(np.argmax(val_by_width[j]))]),
        "epochs_to_fit_by_width": none_if_nan(fit_by_width[j]),
        "epochs_to_fit_by_size": none_if_nan(fit_by_size[j]),
    }
  arrays = {"widths": np.asarray(config.widths), "data_sizes": np.asarray(config.data_sizes),
            "noise_levels": np.asarray(config.noise_levels), "best_val_by_width": val_by_width,
            "fit_epochs_by_width": fit_by_width, "fit_epochs_by_size": fit_by_size}
  return mc.results("capacity", config, data, metrics, REFERENCE, clock, arrays)


save = _results.save


def table(results: dict[str, Any]) -> str:
  m, c = results["metrics"], results["config"]
  fmt = lambda v: "–" if v is None else f"{v:.1f}"
  rows = [[f"{q:g}", " ".join(f"{v:.3f}" for v in m[f"noise_{q:g}"]["best_val_acc_by_width"]),
           str(m[f"noise_{q:g}"]["best_width"]),
           " ".join(fmt(v) for v in m[f"noise_{q:g}"]["epochs_to_fit_by_width"]),
           " ".join(fmt(v) for v in m[f"noise_{q:g}"]["epochs_to_fit_by_size"])]
          for q in c["noise_levels"]]
  return mc.titled_table(
      f"Capacity (widths {c['widths']}), data size (sizes {c['data_sizes']} at width "
      f"{c['size_width']})", REFERENCE["source"],
      ("noise", "best val acc by width", "best width", "epochs to fit by width",
       "epochs to fit by size"), rows) + "\n(– : training accuracy never reached the threshold)"


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  for j, q in enumerate(arrays["noise_levels"]):
    label = f"noise {q:.0%}"
    axes[0].plot(arrays["widths"], arrays["best_val_by_width"][j], "o-", label=label)
    axes[1].plot(arrays["widths"], arrays["fit_epochs_by_width"][j], "o-", label=label)
    axes[2].plot(arrays["data_sizes"], arrays["fit_epochs_by_size"][j], "o-", label=label)
  for ax, xl, yl, title in ((axes[0], "hidden units", "best validation acc", "Fig. 3.5"),
                            (axes[1], "hidden units", "epochs to fit", "Fig. 3.6 left"),
                            (axes[2], "training examples", "epochs to fit", "Fig. 3.6 right")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.set_title(title)
    ax.legend(fontsize=7)
  return [_plots.savefig(fig, out, "capacity.png")]
