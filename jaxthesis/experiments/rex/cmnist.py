"""Colored MNIST with ERM, IRMv1, V-REx, MM-REx, RI, GroupDRO and the grayscale oracle.

Reproduces Table 5.II of the thesis (5.4.1). `run(config)` trains every method with all
restarts as one vmapped, scanned program per method and returns the results dict that
`jaxthesis rex cmnist` prints and writes to `results.json`.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _common as common

# Table 5.II of the thesis: train / test accuracy (%), mean ± std over restarts.
TABLE_5_II = {
    "vrex": {"train_acc": (71.5, 1.0), "test_acc": (68.7, 0.9)},
    "irm": {"train_acc": (70.8, 0.9), "test_acc": (66.9, 2.5)},
    "mmrex": {"train_acc": (72.4, 1.8), "test_acc": (66.1, 1.5)},
    "ri": {"train_acc": (88.9, 0.3), "test_acc": (22.3, 4.6)},
    "erm": {"train_acc": (87.4, 0.2), "test_acc": (17.1, 0.6)},
    "grayscale": {"train_acc": (73.5, 0.2), "test_acc": (73.0, 0.4)},
}
METHOD_NAMES = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "mmrex": "MM-REx", "ri": "RI",
                "groupdro": "GroupDRO", "grayscale": "Grayscale oracle"}
ALL_METHODS = tuple(METHOD_NAMES)
DEFAULT_METHODS = ("erm", "irm", "vrex", "mmrex", "ri", "grayscale")
NOISE_PROTOCOLS = ("fixed", "population")


@dataclasses.dataclass(frozen=True)
class MethodHParams:
  """Hyperparameters of one method (those of the IRM reference, thesis 5.4.1)."""
  objective: str
  hidden: int
  l2_weight: float
  learning_rate: float
  steps: int
  penalty_weight: float = 0.0
  penalty_anneal_iters: int = 0
  grayscale: bool = False
  groupdro_eta: float = 0.01


_REX = dict(hidden=390, l2_weight=0.00110794568, learning_rate=0.0004898536566546834,
            steps=501, penalty_weight=91257.18613115903, penalty_anneal_iters=190)
METHOD_HPARAMS = {
    "erm": MethodHParams("erm", hidden=256, l2_weight=0.001, learning_rate=0.001, steps=501),
    "irm": MethodHParams("irm", **_REX),
    "vrex": MethodHParams("vrex", **_REX),
    "mmrex": MethodHParams("mmrex", **_REX),
    # RI as in the REx reference: the loss is the maximum training risk throughout.
    "ri": MethodHParams("ri", **{**_REX, "penalty_weight": 0.0}),
    "groupdro": MethodHParams("groupdro", **{**_REX, "penalty_weight": 0.0}),
    "grayscale": MethodHParams("erm", hidden=83, l2_weight=0.00086029, learning_rate=0.00281714,
                               steps=101, grayscale=True),
}


@dataclasses.dataclass(frozen=True)
class CMNISTConfig:
  data: str = "auto"                # auto | builtin | tfds
  data_dir: Optional[str] = None
  noise: Optional[str] = None       # fixed | population; None: population on built-in data, fixed on TFDS
  methods: tuple = DEFAULT_METHODS
  restarts: int = 10
  seed: int = 0
  out: str = "runs/rex_cmnist"
  quick: bool = False
  progress: bool = True
  checkpoint: bool = True
  irm_estimator: str = "biased"
  reset_optimizer_at_anneal: bool = False
  eval_every: int = 10
  plots: bool = True

  def validate(self) -> None:
    from jaxthesis.data import SOURCES
    if self.data not in SOURCES:
      raise common.UsageError(f"--data must be one of {', '.join(SOURCES)}; got {self.data!r}")
    if self.noise is not None and self.noise not in NOISE_PROTOCOLS:
      raise common.UsageError(f"--noise must be fixed or population; got {self.noise!r}")
    if not self.methods:
      raise common.UsageError("--methods is empty")
    unknown = [m for m in self.methods if m not in ALL_METHODS]
    if unknown:
      raise common.UsageError(f"--methods: unknown {unknown}; choose from {','.join(ALL_METHODS)}")
    if not isinstance(self.restarts, int) or self.restarts < 1:
      raise common.UsageError(f"--restarts must be >= 1, got {self.restarts}")
    if not isinstance(self.seed, int) or self.seed < 0:
      raise common.UsageError(f"--seed must be >= 0, got {self.seed}")
    if self.data_dir is not None and not os.path.isdir(self.data_dir):
      raise common.UsageError(f"--data-dir {self.data_dir!r} does not exist")
    if self.eval_every < 1:
      raise common.UsageError(f"eval_every must be >= 1, got {self.eval_every}")


def method_hparams(method: str, quick: bool) -> MethodHParams:
  hp = METHOD_HPARAMS[method]
  if quick:  # same schedule shape, a tenth of the steps
    hp = dataclasses.replace(hp, steps=max(11, hp.steps // 10),
                             penalty_anneal_iters=hp.penalty_anneal_iters // 10)
  return hp


def load_domains(config: CMNISTConfig):
  """Loads digits from the chosen source and builds the Colored-MNIST domains."""
  import jax
  from jaxthesis.data import load_mnist, resolve_source
  from jaxthesis.rex import colored_mnist

  source = resolve_source("mnist", config.data, config.data_dir)
  if source == "tfds":
    full = load_mnist("train", "tfds", config.data_dir)
    if len(full.images) < 60000:
      raise common.UsageError(f"TFDS mnist train split has {len(full.images)} images, "
                              "expected 60,000 (first 50,000 train, last 10,000 test)")
    pool = (full.images[:50000], full.labels[:50000])
    test = (full.images[50000:], full.labels[50000:])
  else:
    train, held_out = load_mnist("train", "builtin"), load_mnist("test", "builtin")
    pool, test = (train.images, train.labels), (held_out.images, held_out.labels)
  if config.quick:  # a smoke run: 1,000 training digits, 500 test digits
    pool, test = (pool[0][:1000], pool[1][:1000]), (test[0][:500], test[1][:500])
  shuffle_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0)
  data = colored_mnist.make_colored_mnist(*pool, *test, shuffle_key=shuffle_key)
  return source, data


def train_method(method: str, config: CMNISTConfig, data, noise: str) -> dict[str, Any]:
  """Trains every restart of one method as one compiled program; returns its history."""
  import jax
  from jaxthesis import engine
  from jaxthesis.rex import colored_mnist, train

  hp = method_hparams(method, config.quick)
  restarts = 2 if config.quick else config.restarts
  task = train.make_domain_task(
      hp.objective, hidden=hp.hidden, input_dim=196 if hp.grayscale else 392,
      num_domains=int(data.train_digits.shape[0]),
      sample_train=colored_mnist.sample_train_domains,
      sample_eval=colored_mnist.sample_eval_sets, population=(noise == "population"),
      reset_optimizer_at_anneal=config.reset_optimizer_at_anneal,
      irm_estimator=config.irm_estimator,
      input_transform=colored_mnist.to_grayscale if hp.grayscale else None)
  hparams = train.domain_hparams(
      restarts, learning_rate=hp.learning_rate, l2_weight=hp.l2_weight,
      penalty_weight=hp.penalty_weight, penalty_anneal_iters=hp.penalty_anneal_iters,
      groupdro_eta=hp.groupdro_eta)
  method_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1 + ALL_METHODS.index(method))
  keys = jax.random.split(method_key, restarts)
  runner = engine.Runner(task, hp.steps, eval_every=min(config.eval_every, hp.steps),
                         chunk_size=max(1, hp.steps // 5) if config.quick else 50,
                         progress=config.progress, description=METHOD_NAMES[method])
  ckpt = None
  if config.checkpoint:
    ckpt = os.path.join(config.out, "checkpoints", f"{method}-{noise}")
    if os.path.isdir(os.path.join(ckpt, "checkpoints")) and os.listdir(os.path.join(ckpt, "checkpoints")):
      print(f"  {METHOD_NAMES[method]}: resuming from {ckpt}", file=sys.stderr)
  fingerprint = {"method": method, "hparams": dataclasses.asdict(hp), "restarts": restarts,
                 "seed": config.seed, "noise": noise, "irm_estimator": config.irm_estimator,
                 "reset_optimizer_at_anneal": config.reset_optimizer_at_anneal,
                 "train_shape": list(data.train_digits.shape)}
  result = runner.run(keys, hparams, data, checkpoint_dir=ckpt, fingerprint=fingerprint)
  return {"hparams": hp, "restarts": restarts, "history": result.history}


def summarize(history) -> dict[str, Any]:
  final = {k: v[:, -1] for k, v in history.evals.items()}
  out = {}
  for name in ("train", "test"):
    out[f"{name}_acc_mean"], out[f"{name}_acc_std"] = common.mean_std(final[f"{name}_acc"], 100)
  for name, values in final.items():
    if name.endswith("_acc") and name not in ("train_acc", "test_acc"):
      out[f"{name}_mean"], out[f"{name}_std"] = common.mean_std(values, 100)
  out["test_acc_per_restart"] = (100 * final["test_acc"]).round(2).tolist()
  out["train_acc_per_restart"] = (100 * final["train_acc"]).round(2).tolist()
  return out


def run(config: CMNISTConfig) -> dict[str, Any]:
  """Runs the experiment; returns the results dict (also written to `out/results.json`)."""
  config.validate()
  clock = common.Stopwatch()
  import jax
  source, data = load_domains(config)
  noise = config.noise or ("population" if source == "builtin" else "fixed")
  print(f"Colored MNIST on {source} data ({int(data.train_mask.sum())} training examples in "
        f"{data.train_mask.shape[0]} domains, {data.test_digits.shape[0]} test); "
        f"noise protocol: {noise}{' (default for ' + source + ' data)' if config.noise is None else ''}; "
        f"devices: {jax.device_count()} × {jax.devices()[0].platform}", file=sys.stderr)
  metrics, curves = {}, {}
  results = {
      "experiment": "rex/cmnist", "data": source, "noise": noise,
      "config": {**dataclasses.asdict(config), "noise": noise,
                 "hparams": {m: dataclasses.asdict(method_hparams(m, config.quick))
                             for m in config.methods}},
      "metrics": metrics,
      "reference": {"source": "thesis Table 5.II (full MNIST, fixed noise)",
                    **{m: {k: {"mean": v[0], "std": v[1]} for k, v in TABLE_5_II[m].items()}
                       for m in config.methods if m in TABLE_5_II}},
      "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
  }
  for method in config.methods:
    trained = train_method(method, config, data, noise)
    history = trained["history"]
    metrics[method] = summarize(history)
    metrics[method]["restarts"] = trained["restarts"]
    metrics[method]["steps"] = trained["hparams"].steps
    curves[method] = {
        "eval_steps": history.eval_steps,
        "train_acc": history.evals["train_acc"], "test_acc": history.evals["test_acc"],
        "penalty": history.losses["penalty"], "train_nll": history.metrics["train_nll"]}
    m = metrics[method]
    print(f"  {METHOD_NAMES[method]:17s} train {common.pm(m['train_acc_mean'], m['train_acc_std'])}"
          f"  test {common.pm(m['test_acc_mean'], m['test_acc_std'])}", file=sys.stderr)
    # Written after every method, so a long run that is stopped keeps what it finished.
    results["wall_seconds"] = clock()
    common.write_results(config.out, experiment=results["experiment"], data=source,
                         config=results["config"], metrics=metrics,
                         reference=results["reference"], wall_seconds=results["wall_seconds"],
                         noise=noise, devices=results["devices"],
                         complete=len(metrics) == len(config.methods))
  if config.plots:
    results["plots"] = plot(curves, metrics, config.out, f"{source} data, {noise} noise")
  return results


def table(results: dict[str, Any]) -> str:
  rows = []
  for method, m in results["metrics"].items():
    ref = TABLE_5_II.get(method)
    rows.append([METHOD_NAMES[method],
                 common.pm(m["train_acc_mean"], m["train_acc_std"]),
                 common.pm(m["test_acc_mean"], m["test_acc_std"]),
                 common.pm(*ref["train_acc"]) if ref else "-",
                 common.pm(*ref["test_acc"]) if ref else "-",
                 m["restarts"]])
  head = (f"Colored MNIST ({results['data']} data, {results['noise']} noise); accuracy %, "
          f"mean ± std over restarts; thesis = Table 5.II")
  return head + "\n" + common.format_table(
      ["method", "train acc", "test acc", "thesis train", "thesis test", "restarts"], rows)


def plot(curves, metrics, out_dir: str, subtitle: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  paths = []
  fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
  for method, c in curves.items():
    for ax, key in zip(axes, ("train_acc", "test_acc")):
      mean, std = 100 * c[key].mean(0), 100 * c[key].std(0)
      line, = ax.plot(c["eval_steps"], mean, label=METHOD_NAMES[method])
      ax.fill_between(c["eval_steps"], mean - std, mean + std, alpha=0.2, color=line.get_color())
  for ax, title in zip(axes, ("training domains", "test domain")):
    ax.set_title(f"{title} ({subtitle})", fontsize=9)
    ax.set_xlabel("step")
    ax.axhline(75, color="gray", ls=":", lw=1)
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("accuracy (%)")
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "training_curves.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)

  domains = sorted(k[:-len("_acc_mean")] for k in next(iter(metrics.values())) if k.startswith("train_")
                   and k.endswith("_acc_mean") and k != "train_acc_mean")
  domains = [d for d in domains if d != "train"] + ["test"]
  fig, ax = plt.subplots(figsize=(9, 4))
  width = 0.8 / len(metrics)
  for i, (method, m) in enumerate(metrics.items()):
    means = [m[f"{d}_acc_mean"] for d in domains]
    stds = [m[f"{d}_acc_std"] for d in domains]
    ax.bar(np.arange(len(domains)) + i * width, means, width, yerr=stds, label=METHOD_NAMES[method])
  ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2)
  ax.set_xticklabels([d.replace("train_", "train domain ") for d in domains])
  ax.set_ylabel("accuracy (%)")
  ax.set_title(f"accuracy per domain ({subtitle})", fontsize=9)
  ax.axhline(75, color="gray", ls=":", lw=1)
  ax.legend(fontsize=8, ncol=3)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, "accuracy_per_domain.png"))
  fig.savefig(paths[-1], dpi=120)
  plt.close(fig)
  return paths


def clear_checkpoints(out: str) -> None:
  shutil.rmtree(os.path.join(out, "checkpoints"), ignore_errors=True)
