"""`jaxthesis memorization regularizers`: regularizers against memorization (Figs. 3.10, 3.11).

Every (regularizer, strength) setting of `jaxthesis.memorization.regularizers` is trained
twice, on randY (every label random) and on real data; all runs are restarts of one
vmapped program, since strengths are per-restart arrays. For each setting the results
give the final training accuracy on randY (how much noise was memorized) and the best
validation accuracy of the real-data run; Fig. 3.10 plots one against the other per
regularizer, Fig. 3.11 the training curves. "dropout+adversarial" adds the loss on LASS
critical points (weight `adversarial_weight`) to dropout.

The thesis trains the small CNN on CIFAR-10: `model="cnn", dataset="cifar10"` (CIFAR-10
from a prepared TFDS directory; the CNN as the thesis states, SGD momentum 0.9, lr 0.01
halved every 15 epochs, unless `momentum` / `lr_halving_epochs` say otherwise; its size is
`cnn_channels`, and `width` does not apply to it). Differences from the thesis in the
defaults, for a CPU: the 2-layer MLP on MNIST, fewer strengths and epochs, and LASS for
adversarial training limited to `adversarial_iterations` iterations (the thesis: its
defaults, 100). Every run pays for that search inside the one program, so it is the
dominant cost.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.memorization import _common as mc

REFERENCE = {
    "source": "Figs. 3.10, 3.11",
    "expected": "regularizers can cap the training accuracy reached on randY while keeping the "
                "validation accuracy on real data; dropout is the most effective (flattest "
                "curve), especially combined with adversarial training",
}
METHODS = ("dropout", "input_dropout", "input_noise", "hidden_noise", "weight_decay",
           "dropout+adversarial")


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis memorization regularizers` run."""
  data: str = "auto"
  data_dir: Optional[str] = None
  model: str = "mlp"          # "mlp" or "cnn" (thesis: the CNN on CIFAR-10)
  dataset: str = "mnist"      # "mnist" or "cifar10" (TFDS only)
  cnn_channels: int = 200     # thesis: 200 channels in both convolutions
  momentum: Optional[float] = None         # None: thesis's (MLP 0, CNN 0.9)
  lr_halving_epochs: Optional[int] = None  # None: thesis's (MLP never, CNN 15); 0: never
  methods: tuple = METHODS
  dropout: tuple = (0.2, 0.5, 0.8)          # thesis range 0-0.9
  input_dropout: tuple = (0.2, 0.5, 0.8)    # 0-0.9
  input_noise: tuple = (0.5, 1.0, 2.0)      # 0-5
  hidden_noise: tuple = (0.05, 0.1, 0.3)    # 0-0.3
  weight_decay: tuple = (0.001, 0.01, 0.1)  # 0-1
  adversarial_dropout: tuple = (0.03, 0.2, 0.5)  # dropout rates with adversarial training
  adversarial_weight: float = 0.5           # thesis 0.2-0.7
  adversarial_iterations: int = 10
  num_train: int = 2000
  num_test: int = 1000
  width: int = 256
  batch_size: int = 32
  learning_rate: float = 0.01
  epochs: int = 40
  eval_every: int = 125
  seed: int = 0

  def __post_init__(self):
    mc.check_data_fields(self)
    mc.check_model_fields(self)
    _config.names(self, "methods", METHODS)
    from jaxthesis.memorization.regularizers import REGULARIZERS
    for field in ("dropout", "input_dropout", "input_noise", "hidden_noise", "weight_decay",
                  "adversarial_dropout"):
      entry = REGULARIZERS["dropout" if field == "adversarial_dropout" else field]
      top = 0.99 if not entry.high_inclusive and entry.high < np.inf else entry.high
      _config.numbers(self, field, 0.0, top)
    _config.number(self, "adversarial_weight", 0.0, 1.0)
    for field in ("adversarial_iterations", "num_train", "num_test", "width", "batch_size",
                  "epochs", "eval_every"):
      _config.integer(self, field, 1)
    _config.number(self, "learning_rate", 0.0, strict=True)
    if self.batch_size > self.num_train:
      _config.fail("batch_size", f"<= num_train ({self.num_train})", self.batch_size)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Three strengths per regularizer, 2,000 digits, 40 epochs; `quick`: one each, tiny
  (CNN: 8 channels)."""
  base = (Config(methods=("dropout", "weight_decay", "dropout+adversarial"), dropout=(0.5,),
                 weight_decay=(0.01,), adversarial_dropout=(0.2,), adversarial_iterations=2,
                 num_train=200, num_test=100, width=16, batch_size=20, epochs=2, eval_every=5)
          if quick else Config())
  return _config.replace(base, **mc.quick_model_defaults(quick, overrides))


def add_arguments(p) -> None:
  from jaxthesis.experiments import _cli
  mc.add_training_arguments(p, "num_train", "num_test", "width", "batch_size", "learning_rate",
                            "epochs", "eval_every", data_help="MNIST (or --dataset)")
  p.add_argument("--methods", dest="methods", default=None,
                 type=_cli.name_list("--methods", METHODS))
  p.add_argument("--adversarial-iterations", dest="adversarial_iterations", default=None,
                 type=_cli.positive_int("--adversarial-iterations"))
  mc.add_model_arguments(p)


def settings(config: Config) -> list[tuple[str, float, dict]]:
  """`(method, strength, {regularizer: strength})`, the unregularized baseline first."""
  out = [("none", 0.0, {})]
  for method in config.methods:
    if method == "dropout+adversarial":
      out += [(method, p, {"dropout": p, "adversarial": config.adversarial_weight})
              for p in config.adversarial_dropout]
    else:
      out += [(method, s, {method: s}) for s in getattr(config, method)]
  return out


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import regularizers, train

  clock = _results.Stopwatch()
  x, y, vx, vy, data = mc.load_study_data(config, config.num_train, config.num_test)
  key = jax.random.PRNGKey(config.seed)
  xs, ys, _ = mc.corrupted_stack(jax.random.fold_in(key, 1), x, y,
                                 [("randY", 1.0), ("real", 0.0)])
  runs = settings(config)
  regs = [r[2] for r in runs for _ in range(2)]            # randY and real for each setting
  datasets = np.tile(np.arange(2), len(runs))
  model, model_description = mc.build_model(config, x.shape[1:])
  adversarial = (train.AdversarialSearch(max_iterations=config.adversarial_iterations)
                 if "dropout+adversarial" in config.methods else None)
  task = train.make_classifier_task(model, max_examples=config.num_train,
                                    batch_size=config.batch_size, adversarial=adversarial,
                                    **mc.optimizer_settings(config))
  hp = train.classifier_hparams(len(regs), dataset=datasets, width=config.width,
                                num_examples=config.num_train,
                                learning_rate=config.learning_rate,
                                reg=regularizers.stack(regs))
  steps = (config.num_train // config.batch_size) * config.epochs
  runner = engine.Runner(task, steps, eval_every=config.eval_every, progress=progress,
                         description="regularizers")
  keys = jnp.stack([jax.random.fold_in(key, 2)] * len(regs))
  out = runner.run(keys, hp, {"train_x": jnp.asarray(xs), "train_y": jnp.asarray(ys),
                              "eval": {"val": (jnp.asarray(vx), jnp.asarray(vy))}},
                   **mc.checkpoint_args(checkpoint_dir, "regularizers", config))
  ev = out.history.evals
  rand_train = ev["train_acc"][0::2]   # [S, E] randY runs
  real_val = ev["val_acc"][1::2]       # [S, E] real-data runs
  metrics = {}
  for i, (method, strength, _) in enumerate(runs):
    metrics.setdefault(method, []).append({
        "strength": strength, "randY_final_train_acc": float(rand_train[i, -1]),
        "real_best_val_acc": float(real_val[i].max()),
        "real_final_train_acc": float(ev["train_acc"][2 * i + 1, -1])})
  base = metrics["none"][0]
  # Memorization held back per point of validation accuracy lost, at the strongest setting.
  metrics["strongest_setting"] = {
      m: {"randY_train_drop": base["randY_final_train_acc"] - v[-1]["randY_final_train_acc"],
          "real_val_drop": base["real_best_val_acc"] - v[-1]["real_best_val_acc"]}
      for m, v in metrics.items() if m != "none"}
  arrays = {"eval_steps": out.history.eval_steps, "randY_train_acc": rand_train,
            "real_val_acc": real_val, "real_train_acc": ev["train_acc"][1::2]}
  return mc.results("regularizers", config, data, metrics, REFERENCE, clock, arrays,
                    runs=[[m, s] for m, s, _ in runs],
                    steps_per_epoch=config.num_train // config.batch_size,
                    model=model_description)


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[method, f"{e['strength']:g}", f"{e['randY_final_train_acc']:.3f}",
           f"{e['real_best_val_acc']:.3f}"]
          for method, entries in m.items() if method != "strongest_setting" for e in entries]
  return mc.titled_table("randY training accuracy vs real-data validation accuracy "
                         f"({results.get('model', 'MLP')})",
                         REFERENCE["source"],
                         ("regularizer", "strength", "randY final train acc",
                          "real best val acc"), rows)


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  m = results["metrics"]
  plt = _plots.pyplot()
  fig, ax = plt.subplots(figsize=(5, 3.8))
  for method, entries in m.items():
    if method == "strongest_setting":
      continue
    ax.plot([e["randY_final_train_acc"] for e in entries],
            [e["real_best_val_acc"] for e in entries], "o-", label=method)
  ax.set_xlabel("final training accuracy on randY")
  ax.set_ylabel("best validation accuracy (real)")
  ax.set_title("Fig. 3.10")
  ax.legend(fontsize=7)
  paths = [_plots.savefig(fig, out, "regularizers_tradeoff.png")]
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
  epochs = arrays["eval_steps"] / results["steps_per_epoch"]
  for i, (method, strength) in enumerate(results["runs"]):
    label = f"{method} {strength:g}" if method != "none" else "none"
    axes[0].plot(epochs, arrays["randY_train_acc"][i], label=label)
    axes[1].plot(epochs, arrays["real_train_acc"][i], label=label)
  axes[0].set_title("Fig. 3.11: training accuracy, random labels")
  axes[1].set_title("Fig. 3.11: training accuracy, real labels")
  for ax in axes:
    ax.set_xlabel("epoch")
  axes[1].legend(fontsize=6, ncol=2)
  return paths + [_plots.savefig(fig, out, "regularizers_curves.png")]
