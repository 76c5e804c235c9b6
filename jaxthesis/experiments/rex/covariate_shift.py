"""`jaxthesis rex covariate-shift`: Colored MNIST with covariate shift (Fig 5.4, Fig 11.5).

For one variant (class, digit or colour imbalance) trains ERM, IRMv1, V-REx and MM-REx
with the paper's hyperparameters at every shift level p. Per method, all levels and
restarts are one compiled program: the levels are stacked datasets and each restart
indexes its own (`jaxthesis.rex.sweeps.index_data`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _common as common
from jaxthesis.experiments.rex import _sweeps as rex_runs

METHODS = ("erm", "irm", "vrex", "mmrex", "grayscale")
DEFAULT_METHODS = ("erm", "irm", "vrex", "mmrex")
NAMES = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "mmrex": "MM-REx",
         "grayscale": "Grayscale"}
FIGURE = {"class": "Fig 5.4 left / 11.5 left", "digit": "Fig 5.4 centre / 11.5 centre",
          "color": "Fig 5.4 right / 11.5 right",
          "color-thesis": "Fig 5.4 right / 11.5 right"}


@dataclasses.dataclass(frozen=True)
class ShiftConfig:
  variant: str = "class"
  levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
  methods: tuple[str, ...] = DEFAULT_METHODS
  restarts: int = 3
  hidden: Optional[int] = None
  noise: Optional[str] = None
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0
  out: str = "runs/rex_covariate_shift"
  quick: bool = False
  progress: bool = True
  plots: bool = True

  def validate(self) -> None:
    from jaxthesis.rex import covariate_shift as cs
    if self.variant not in cs.VARIANTS:
      raise common.UsageError(f"--variant must be one of {', '.join(cs.VARIANTS)}; got {self.variant!r}")
    if not self.levels or any(not 0 <= p <= 1 for p in self.levels):
      raise common.UsageError(f"--levels must be shift levels in [0, 1], got {self.levels}")
    unknown = [m for m in self.methods if m not in METHODS]
    if not self.methods or unknown:
      raise common.UsageError(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if self.restarts < 1:
      raise common.UsageError(f"--restarts must be >= 1, got {self.restarts}")


def get_config(quick: bool = False, **overrides: Any) -> ShiftConfig:
  base = ShiftConfig(levels=(0.1, 1.0), restarts=1, hidden=32, quick=True) if quick else ShiftConfig()
  return dataclasses.replace(base, **overrides)


def train_method(method: str, config: ShiftConfig, levels, noise: str):
  """All levels × restarts of one method as one program; returns final evals [P, R]."""
  import jax
  from jaxthesis import engine
  from jaxthesis import sweeps
  from jaxthesis.rex import colored_mnist, covariate_shift as cs, train

  hp = rex_runs.method_hparams(method, config.quick, config.hidden)
  num_levels, restarts = len(config.levels), config.restarts
  task = train.make_domain_task(
      hp.objective, hidden=hp.hidden,
      input_dim=colored_mnist.NUM_PIXELS if hp.grayscale else cs.input_dim(config.variant),
      num_domains=2, sample_train=cs.train_sampler(config.variant),
      sample_eval=cs.eval_sampler(config.variant), population=(noise == "population"),
      input_transform=colored_mnist.to_grayscale if hp.grayscale else None)
  r = num_levels * restarts
  hparams = train.domain_hparams(r, learning_rate=hp.learning_rate, l2_weight=hp.l2_weight,
                                 penalty_weight=hp.penalty_weight,
                                 penalty_anneal_iters=hp.penalty_anneal_iters)
  index = np.repeat(np.arange(num_levels, dtype=np.int32), restarts)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1 + METHODS.index(method))
  runner = engine.Runner(sweeps.index_data(task), hp.steps, eval_every=hp.steps,
                         chunk_size=max(1, hp.steps // 5), progress=config.progress,
                         description=f"{NAMES[method]} ({r} runs)")
  result = runner.run(jax.random.split(key, r), sweeps.indexed_hparams(hparams, index, num_levels),
                      sweeps.stack_data(levels))
  final = {k: v[:, -1].reshape(num_levels, restarts) for k, v in result.history.evals.items()}
  return hp, final


def run(config: ShiftConfig) -> dict[str, Any]:
  config.validate()
  clock = common.Stopwatch()
  import jax
  from jaxthesis.rex import covariate_shift as cs

  source, base = rex_runs.load_cmnist(config.data, config.data_dir, config.seed)
  noise = rex_runs.resolve_noise(config.noise, source)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 100 + cs.VARIANTS.index(config.variant))
  levels = cs.make_shift_levels(key, base, config.variant, tuple(config.levels))
  kept = [np.asarray(l.train_mask).sum(1).astype(int).tolist() for l in levels]
  rex_runs.log(f"covariate shift ({config.variant} imbalance) on {source} data, {noise} noise; "
               f"levels {list(config.levels)}; kept per training domain {kept}; "
               f"test kept {[int(np.asarray(l.test_mask).sum()) for l in levels]}")
  metrics, hparams = {}, {}
  for method in config.methods:
    hp, final = train_method(method, config, levels, noise)
    hparams[method] = dataclasses.asdict(hp)
    m = {}
    for split in ("train", "test"):
      acc = 100 * final[f"{split}_acc"]
      m[f"{split}_acc_mean"] = acc.mean(1).tolist()
      m[f"{split}_acc_se"] = rex_runs.standard_error(acc, 1).tolist()
      m[f"{split}_acc_per_restart"] = acc.round(2).tolist()
    metrics[method] = m
    rex_runs.log(f"  {NAMES[method]:9s} test " + "  ".join(
        f"p={p:g}: {a:.1f}" for p, a in zip(config.levels, m["test_acc_mean"])))
  results = {
      "experiment": f"rex/covariate-shift/{config.variant}", "data": source, "noise": noise,
      "out": config.out, "levels": list(config.levels),
      "config": {**dataclasses.asdict(config), "noise": noise, "hparams": hparams},
      "metrics": metrics,
      "reference": {"source": f"thesis {FIGURE[config.variant]} (plots only; no numbers in "
                              "the text)",
                    "expected": "V-REx test accuracy >= IRMv1's at small p; ERM far below "
                                "both; all converge as p -> 1 (no covariate shift)"},
      "devices": rex_runs.devices()}
  return rex_runs.finish(results, clock, config.out, plot if config.plots else None)


def table(results: dict[str, Any]) -> str:
  metrics, levels = results["metrics"], results["levels"]
  methods = list(metrics)
  rows = []
  for i, p in enumerate(levels):
    row = [f"{p:g}"]
    for method in methods:
      m = metrics[method]
      row.append(f"{m['test_acc_mean'][i]:.1f} ± {m['test_acc_se'][i]:.1f}")
    if "vrex" in metrics and "irm" in metrics:
      row.append(f"{metrics['vrex']['test_acc_mean'][i] - metrics['irm']['test_acc_mean'][i]:+.1f}")
    rows.append(row)
  headers = ["p"] + [f"{NAMES[m]} test" for m in methods]
  if "vrex" in metrics and "irm" in metrics:
    headers.append("V-REx − IRM")
  variant = results["experiment"].rsplit("/", 1)[-1]
  head = (f"CMNIST with covariate shift: {variant} imbalance ({results['data']} data, "
          f"{results['noise']} noise); test accuracy %, mean ± s.e. over "
          f"{results['config']['restarts']} restarts\n"
          f"thesis {FIGURE[variant]}: {results['reference']['expected']}")
  return head + "\n" + common.format_table(headers, rows)


def plot(results: dict[str, Any]) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  levels = np.asarray(results["levels"])
  fig, ax = plt.subplots(figsize=(6, 4))
  for method, m in results["metrics"].items():
    line = ax.errorbar(levels, m["test_acc_mean"], yerr=m["test_acc_se"], marker="o",
                       capsize=3, label=f"{NAMES[method]} test")
    ax.plot(levels, m["train_acc_mean"], ls=":", color=line[0].get_color(), alpha=0.6)
  ax.axhline(50, color="gray", ls="--", lw=1)
  ax.set_xlabel("shift level p (1 = no covariate shift)")
  ax.set_ylabel("accuracy (%)  (dotted: train)")
  variant = results["experiment"].rsplit("/", 1)[-1]
  ax.set_title(f"{variant} imbalance ({results['data']}, {results['noise']} noise) — cf. "
               f"{FIGURE[variant]}", fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(results["out"], f"covariate_shift_{variant}.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return [path]


def covariate_shift_command(args) -> int:
  config = get_config(args.quick, variant=args.variant, seed=args.seed, out=args.out,
                      progress=not args.no_progress, data=args.data, data_dir=args.data_dir,
                      noise=args.noise,
                      **{k: v for k, v in (("levels", args.levels), ("methods", args.methods),
                                           ("restarts", args.restarts), ("hidden", args.hidden))
                         if v is not None})
  return rex_runs.run_and_report(run, table, config)


def add_commands(subparsers) -> None:
  from jaxthesis.rex.covariate_shift import VARIANTS
  p = subparsers.add_parser(
      "covariate-shift", help="CMNIST with class/digit/colour imbalance (Fig 5.4, Fig 11.5)",
      description="Trains ERM, IRMv1, V-REx and MM-REx on a covariate-shift variant of "
                  "Colored MNIST at every shift level p (training domains p/(1+p) and "
                  "1/(1+p), test 0.5) and prints test accuracy beside Fig 5.4.")
  p.add_argument("--variant", choices=VARIANTS, default="class")
  p.add_argument("--levels", type=rex_runs.positive_float_list("--levels"), default=None,
                 help="comma-separated shift levels (default 0.1,0.2,0.3,0.4,0.5,1)")
  p.add_argument("--methods", type=common.name_list("--methods", METHODS), default=None,
                 help=f"comma-separated, from {','.join(METHODS)} (default erm,irm,vrex,mmrex)")
  p.add_argument("--restarts", type=common.positive_int("--restarts"), default=None,
                 help="restarts per level (default 3)")
  rex_runs.add_sweep_args(p, "runs/rex_covariate_shift", noise_default="population")
  p.set_defaults(func=covariate_shift_command)
