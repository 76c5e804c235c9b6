"""`jaxthesis rex sem`: the linear SEM suite of appendix 11.1.9.2 beside Table 11.II."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxthesis.experiments import _common as common

# Table 11.II of the thesis: (mean, std) of the coefficient MSE, causal / non-causal.
THESIS_TABLE_11_II = {
    "irm": {"FOU": ((0.001, 0.000), (0.001, 0.000)), "FOS": ((0.001, 0.000), (0.000, 0.000)),
            "POU": ((0.004, 0.001), (0.006, 0.003)), "POS": ((0.002, 0.000), (0.000, 0.000)),
            "FEU": ((0.0053, 0.0015), (0.1025, 0.0173)), "FES": ((0.0393, 0.0054), (0.0, 0.0)),
            "PEU": ((0.0102, 0.0029), (0.0991, 0.0216)), "PES": ((0.0510, 0.0049), (0.0, 0.0))},
    "vrex": {"FOU": ((0.001, 0.000), (0.008, 0.002)), "FOS": ((0.007, 0.002), (0.000, 0.000)),
             "POU": ((0.004, 0.001), (0.004, 0.001)), "POS": ((0.002, 0.000), (0.000, 0.000)),
             "FEU": ((0.0390, 0.0089), (19.1518, 3.3012)),
             "FES": ((7.7646, 1.1865), (0.0, 0.0)),
             "PEU": ((0.0784, 0.0211), (46.7235, 11.7409)),
             "PES": ((8.3640, 2.6108), (0.0, 0.0))},
    "vrex_var_baseline": {
        "FOU": ((0.816, 0.149), (1.417, 0.442)), "FOS": ((0.919, 0.091), (0.000, 0.000)),
        "POU": ((0.915, 0.055), (1.113, 0.085)), "POS": ((0.937, 0.090), (0.000, 0.000)),
        "FEU": ((0.7713, 0.1402), (1.0358, 0.1214)), "FES": ((0.8603, 0.0233), (0.0, 0.0)),
        "PEU": ((1.0597, 0.0829), (0.9946, 0.0487)), "PES": ((1.0252, 0.0819), (0.0, 0.0))},
}
METHOD_LABELS = {"erm": "ERM", "irm": "IRM", "vrex": "REx, r_e=0",
                 "vrex_var_baseline": "REx, r_e=V(Y_e)"}


@dataclasses.dataclass(frozen=True)
class SEMConfig:
  """The SEM experiment (appendix 11.1.9.2: 1,000 samples per domain, 7 trials)."""
  tasks: tuple[str, ...] = ("FOU", "FOS", "POU", "POS", "FEU", "FES", "PEU", "PES")
  penalty_weights: tuple[float, ...] = (0.0, 1.0, 10.0, 1e2, 1e3, 1e4, 1e5)
  num_reps: int = 7
  num_samples: int = 1000
  domain_scales: tuple[float, ...] = (0.2, 2.0, 5.0)
  num_steps: int = 3000
  anneal_steps: int = 300
  learning_rate: float = 3e-2
  precondition: bool = True
  seed: int = 0


def get_config(quick: bool = False, **overrides: Any) -> SEMConfig:
  config = SEMConfig(num_reps=2, num_steps=300, anneal_steps=30,
                     penalty_weights=(0.0, 1e2, 1e4)) if quick else SEMConfig()
  return dataclasses.replace(config, **overrides)


def run(config: SEMConfig) -> dict[str, Any]:
  """Runs the suite; returns metrics {method: {task: {causal: [mean, std], ...}}}."""
  import jax
  import numpy as np
  from jaxthesis.rex import sem

  result = sem.run_suite(
      jax.random.key(config.seed), config.tasks, config.penalty_weights,
      num_reps=config.num_reps, num_samples=config.num_samples,
      domain_scales=config.domain_scales, learning_rate=config.learning_rate,
      anneal_steps=config.anneal_steps, num_steps=config.num_steps,
      precondition=config.precondition)
  result = jax.tree_util.tree_map(np.asarray, result)
  metrics = {}
  for j, method in enumerate(sem.METHODS):
    metrics[method] = {}
    for i, task in enumerate(config.tasks):
      metrics[method][task] = {
          "causal": common.mean_std(result.causal_error[i, :, j]),
          "noncausal": common.mean_std(result.noncausal_error[i, :, j]),
          "selected_weights": result.selected_weight[i, :, j].tolist(),
      }
  return {"metrics": metrics, "raw": result}


def _cell(mean_std) -> str:
  return f"{mean_std[0]:.4f}±{mean_std[1]:.4f}"


def format_report(config: SEMConfig, metrics) -> str:
  headers = ["method", "task", "causal (ours)", "causal (thesis)", "non-causal (ours)",
             "non-causal (thesis)"]
  rows = []
  for method, label in METHOD_LABELS.items():
    for task in config.tasks:
      ours = metrics[method][task]
      ref = THESIS_TABLE_11_II.get(method, {}).get(task)
      rows.append([label, task, _cell(ours["causal"]), _cell(ref[0]) if ref else "-",
                   _cell(ours["noncausal"]), _cell(ref[1]) if ref else "-"])
  return common.format_table(headers, rows)


def _plot(config: SEMConfig, metrics, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
  x = np.arange(len(config.tasks))
  width = 0.8 / len(METHOD_LABELS)
  for ax, part in zip(axes, ("causal", "noncausal")):
    for k, (method, label) in enumerate(METHOD_LABELS.items()):
      means = [max(metrics[method][t][part][0], 1e-5) for t in config.tasks]
      stds = [metrics[method][t][part][1] for t in config.tasks]
      ax.bar(x + k * width, means, width, yerr=stds, label=label)
    ax.set_yscale("log")
    ax.set_xticks(x + 0.4 - width / 2, config.tasks)
    ax.set_title(f"{part} coefficient MSE (selected on e = {config.domain_scales[-1]:g})")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def sem_command(args) -> int:
  watch = common.Stopwatch()
  overrides = {"seed": args.seed}
  if args.reps is not None:
    overrides["num_reps"] = args.reps
  if args.steps is not None:
    overrides["num_steps"] = args.steps
    overrides["anneal_steps"] = args.steps // 10
  if args.tasks is not None:
    overrides["tasks"] = args.tasks
  if args.no_precondition:
    overrides["precondition"] = False
  config = get_config(args.quick, **overrides)
  out = run(config)
  print(f"Linear SEMs (thesis appendix 11.1.9.2), coefficient MSE, mean ± std over "
        f"{config.num_reps} reps; thesis = Table 11.II")
  print(format_report(config, out["metrics"]))
  os.makedirs(args.out, exist_ok=True)
  plot_path = os.path.join(args.out, "sem_errors.png")
  _plot(config, out["metrics"], plot_path)
  path = common.write_results(
      args.out, experiment="rex/sem", data="simulated", config=config,
      metrics=out["metrics"], reference={"table_11_II": THESIS_TABLE_11_II},
      wall_seconds=watch(), plots=[plot_path])
  print(f"wrote {path} and {plot_path}")
  return 0


def add_commands(subparsers) -> None:
  p = subparsers.add_parser("sem", help="linear SEMs of IRM (appendix 11.1.9.2, Table 11.II)")
  common.add_output_args(p, default_out="runs/rex_sem")
  p.add_argument("--reps", type=common.positive_int("--reps"), default=None,
                 help="repetitions per task (default 7; 2 with --quick)")
  p.add_argument("--steps", type=common.positive_int("--steps"), default=None,
                 help="Adam steps for IRM and V-REx (default 3000; 300 with --quick)")
  p.add_argument("--tasks", type=common.name_list("--tasks", SEMConfig.tasks), default=None,
                 help="comma-separated subset of FOU,FOS,POU,POS,FEU,FES,PEU,PES")
  p.add_argument("--no-precondition", action="store_true",
                 help="train Φ from the identity on raw inputs (slow to converge)")
  p.set_defaults(func=sem_command)
