"""`jaxthesis memorization csr`: accuracy and critical sample ratio through training (Figs. 3.7, 3.9).

MLPs (or, with `model="cnn"`, the small CNN of thesis 3.2, the thesis's choice for
CIFAR-10, `dataset="cifar10"`, Fig. 3.8/3.9) are trained on MNIST with 0, 20, 40, 60 and 80 % of the training set replaced by
input noise (randX) or label noise (randY); every run is one restart of a single vmapped
program. Every `eval_every` steps the program measures training accuracy (on the run's own,
noisy, labels), accuracy on the clean validation set and the validation CSR: the
fraction of `csr_points` validation digits for which LASS (Alg. 1, α = 0.25, β = 0.2,
r = 0.3 on the 0-255 scale, 100 iterations) finds a differently classified point in the
box. Per-example statistics (`jaxthesis.memorization.example_stats`) are recorded once an
epoch, so the results also say when the corrupted examples were first fit.

The CNN is trained as the thesis states (SGD, momentum 0.9, lr 0.01 halved every 15
epochs) unless `momentum` / `lr_halving_epochs` say otherwise; its size is `cnn_channels`
and `width` (the MLP's) does not apply to it. CIFAR-10 comes only from a prepared TFDS
directory (`data="tfds"`, `data_dir`); the built-in data is MNIST.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc

REFERENCE = {
    "source": "Figs. 3.7, 3.9",
    "expected": "CSR is higher for noisier data (randX and randY) and rises through training; "
                "final and best validation accuracy are lower for noisier data; under randY "
                "validation accuracy peaks before training accuracy saturates, and CSR rises "
                "as the model moves on to fitting the noise",
    "noise_levels": [0.0, 0.2, 0.4, 0.6, 0.8],
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization csr` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  model: str = "mlp"          # "mlp" or "cnn" (thesis: the CNN on CIFAR-10)
  dataset: str = "mnist"      # "mnist" or "cifar10" (TFDS only)
  cnn_channels: int = 200     # thesis: 200 channels in both convolutions
  momentum: Optional[float] = None         # None: thesis's (MLP 0, CNN 0.9)
  lr_halving_epochs: Optional[int] = None  # None: thesis's (MLP never, CNN 15); 0: never
  noise_levels: tuple = (0.2, 0.4, 0.6, 0.8)  # plus the clean run (0 %)
  num_train: int = 4000
  num_test: int = 1000
  width: int = 256            # thesis: 4,096 hidden units (reduced for CPU)
  batch_size: int = 32
  learning_rate: float = 0.01
  epochs: int = 60            # thesis: 1,000 epochs (reduced for CPU)
  eval_every: int = 250       # steps between measurements
  csr_points: int = 500       # validation points whose CSR is measured
  lass_iterations: int = 100
  radius: float = 0.3         # LASS box, 0-255 pixel units
  seed: int = 0

  def __post_init__(self):
    mc.check_data_fields(self)
    mc.check_model_fields(self)
    _config.numbers(self, "noise_levels", 0.0, 1.0, distinct=True)
    if 0.0 in self.noise_levels:
      _config.fail("noise_levels", "fractions in (0, 1] (the clean run is always included)",
                   self.noise_levels)
    for field in ("num_train", "num_test", "width", "batch_size", "epochs", "eval_every",
                  "csr_points", "lass_iterations"):
      _config.integer(self, field, 1)
    _config.number(self, "learning_rate", 0.0, strict=True)
    _config.number(self, "radius", 0.0, strict=True)
    if self.csr_points > self.num_test:
      _config.fail("csr_points", f"<= num_test ({self.num_test})", self.csr_points)
    if self.batch_size > self.num_train:
      _config.fail("batch_size", f"<= num_train ({self.num_train})", self.batch_size)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """4,000 digits, 60 epochs, width 256; `quick`: 300 digits, 3 epochs, width 16 (CNN: 8
  channels)."""
  base = (Config(noise_levels=(0.4, 0.8), num_train=300, num_test=100, width=16, epochs=3,
                 eval_every=10, csr_points=50, lass_iterations=20) if quick else Config())
  return _config.replace(base, **mc.quick_model_defaults(quick, overrides))


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  mc.add_training_arguments(p, "num_train", "num_test", "width", "batch_size", "learning_rate",
                            "epochs", "eval_every", data_help="MNIST (or --dataset)")
  p.add_argument("--noise-levels", dest="noise_levels", default=None,
                 type=_cli.number_list("--noise-levels", float, 0.0, 1.0),
                 help="noise fractions besides 0 (default 0.2,0.4,0.6,0.8)")
  p.add_argument("--csr-points", dest="csr_points", default=None,
                 type=_cli.positive_int("--csr-points"))
  p.add_argument("--lass-iterations", dest="lass_iterations", default=None,
                 type=_cli.positive_int("--lass-iterations"))
  p.add_argument("--radius", dest="radius", default=None,
                 type=_cli.nonnegative_float("--radius"), help="LASS box in 0-255 pixel units")
  mc.add_model_arguments(p)


def settings(config: Config) -> list[tuple[str, float]]:
  return [("real", 0.0)] + [(k, float(q)) for k in ("randX", "randY")
                            for q in config.noise_levels]


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every noise setting as one vmapped program; returns the results."""
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import example_stats, train

  clock = _results.Stopwatch()
  x, y, vx, vy, data = mc.load_study_data(config, config.num_train, config.num_test)
  key = jax.random.PRNGKey(config.seed)
  runs = settings(config)
  xs, ys, corrupted = mc.corrupted_stack(jax.random.fold_in(key, 1), x, y, runs)
  model, model_description = mc.build_model(config, x.shape[1:])
  search = train.AdversarialSearch(radius=config.radius, max_iterations=config.lass_iterations)
  task = train.make_classifier_task(model, max_examples=config.num_train,
                                    batch_size=config.batch_size,
                                    csr_points=config.csr_points, csr_search=search,
                                    **mc.optimizer_settings(config))
  steps_per_epoch = config.num_train // config.batch_size

  def per_example(state, hp, data):
    return train.per_example_correct(model, state, hp.width, data["train_x"][hp.dataset],
                                     data["train_y"][hp.dataset])

  task = example_stats.with_example_stats(task, per_example, config.num_train,
                                          every=steps_per_epoch)
  s = len(runs)
  hp = train.classifier_hparams(s, dataset=np.arange(s), width=config.width,
                                num_examples=config.num_train,
                                learning_rate=config.learning_rate)
  steps = steps_per_epoch * config.epochs
  runner = engine.Runner(task, steps, eval_every=config.eval_every, progress=progress,
                         description="csr")
  # One key for every setting: the runs differ only in their data (common random numbers).
  keys = jnp.stack([jax.random.fold_in(key, 2)] * s)
  out = runner.run(keys, hp, {"train_x": jnp.asarray(xs), "train_y": jnp.asarray(ys),
                              "eval": {"val": (jnp.asarray(vx), jnp.asarray(vy))}},
                   **mc.checkpoint_args(checkpoint_dir, "csr", config))
  ev = out.history.evals
  eval_steps = out.history.eval_steps
  first_learned = np.asarray(out.state.stats.first_learned)  # [S, N]
  metrics = {}
  for i, (kind, q) in enumerate(runs):
    train_acc, val_acc, csr = ev["train_acc"][i], ev["val_acc"][i], ev["val_csr"][i]
    best = int(np.argmax(val_acc))
    saturated = np.flatnonzero(train_acc >= 0.95 * train_acc[-1])
    entry = {
        "final_train_acc": float(train_acc[-1]), "final_val_acc": float(val_acc[-1]),
        "best_val_acc": float(val_acc[best]), "best_val_step": int(eval_steps[best]),
        "train_saturation_step": int(eval_steps[saturated[0]]),
        "final_csr": float(csr[-1]), "max_csr": float(csr.max()),
        # less noisy than one measurement: the mean over the second half of training
        "mean_csr_2nd_half": float(csr[len(csr) // 2:].mean()),
        "csr_at_best_val": float(csr[best]),
    }
    if q > 0:
      entry["noise_onset_step"] = example_stats.onset_step(first_learned[i], corrupted[i], 0.5)
      entry["clean_onset_step"] = example_stats.onset_step(first_learned[i], ~corrupted[i], 0.5)
    metrics[f"{kind}_{q:g}"] = entry
  ordered = {k: [metrics["real_0"]["mean_csr_2nd_half"]]
             + [metrics[f"{k}_{q:g}"]["mean_csr_2nd_half"] for q in config.noise_levels]
             for k in ("randX", "randY")}
  metrics["csr_increases_with_noise"] = {
      k: bool(np.all(np.diff(v) >= 0)) for k, v in ordered.items()}
  metrics["randY_val_peaks_before_train_saturates"] = {
      f"{q:g}": metrics[f"randY_{q:g}"]["best_val_step"]
      < metrics[f"randY_{q:g}"]["train_saturation_step"] for q in config.noise_levels}
  arrays = {"eval_steps": eval_steps, "train_acc": ev["train_acc"], "val_acc": ev["val_acc"],
            "val_csr": ev["val_csr"], "corrupted": corrupted, "first_learned": first_learned}
  return mc.results("csr", config, data, metrics, REFERENCE, clock, arrays,
                    runs=[f"{k}_{q:g}" for k, q in runs], steps_per_epoch=steps_per_epoch,
                    model=model_description)


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = []
  for name in results["runs"]:
    e = m[name]
    rows.append([name, f"{e['final_train_acc']:.3f}", f"{e['best_val_acc']:.3f}",
                 f"{e['final_val_acc']:.3f}", str(e["best_val_step"]),
                 str(e["train_saturation_step"]), f"{e['final_csr']:.3f}",
                 f"{e['mean_csr_2nd_half']:.3f}",
                 f"{e.get('noise_onset_step', float('nan')):.0f}"])
  title = f"Accuracy and validation CSR through training ({results.get('model', 'MLP')})"
  lines = [mc.titled_table(title, REFERENCE["source"],
                           ("run", "train acc", "best val", "final val", "best-val step",
                            "train-sat. step", "final CSR", "CSR 2nd half",
                            "noise 50% learned"), rows)]
  lines.append("CSR (2nd-half mean) non-decreasing in noise level: "
               f"{m['csr_increases_with_noise']} "
               "(thesis: yes for both)")
  lines.append("randY: validation peaks before training accuracy saturates: "
               f"{m['randY_val_peaks_before_train_saturates']} (thesis: yes)")
  return "\n".join(lines)


def plot(out: str) -> list[str]:
  """Fig. 3.7: accuracy (train solid, validation dotted) and CSR, randX and randY rows."""
  results, arrays = _results.load(out)
  runs = results["runs"]
  steps = arrays["eval_steps"] / results["steps_per_epoch"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(9, 6))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for row, kind in enumerate(("randX", "randY")):
    chosen = [i for i, r in enumerate(runs) if r.startswith(kind) or r == "real_0"]
    for c, i in enumerate(chosen):
      color = colors[c % len(colors)]
      label = "0%" if runs[i] == "real_0" else f"{float(runs[i].split('_')[1]):.0%}"
      axes[row, 0].plot(steps, arrays["train_acc"][i], color=color, label=label)
      axes[row, 0].plot(steps, arrays["val_acc"][i], ":", color=color)
      axes[row, 1].plot(steps, arrays["val_csr"][i], color=color, label=label)
    axes[row, 0].set_title(f"{kind}: accuracy (solid train, dotted validation)")
    axes[row, 1].set_title(f"{kind}: validation critical sample ratio")
    for ax in axes[row]:
      ax.set_xlabel("epoch")
      ax.legend(title="noise")
  fig.suptitle(REFERENCE["source"])
  return [_plots.savefig(fig, out, "csr.png")]
