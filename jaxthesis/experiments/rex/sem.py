"""`jaxthesis rex sem`: the linear SEM suite of appendix 11.1.9.2 beside Table 11.II.

Tasks, repetitions and loss weightings are vmap axes of one program
(`jaxthesis.rex.sem.run_suite`); `save`/`plot`/`table` follow the study contract of
`jaxthesis.experiments.registry`.
"""
from __future__ import annotations

import dataclasses
import sys
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results

TASKS = ("FOU", "FOS", "POU", "POS", "FEU", "FES", "PEU", "PES")   # Table 11.II's order
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



REFERENCE = {
    "source": "Table 11.II",
    "table_11_II": {m: {t: {"causal": list(c), "noncausal": list(n)} for t, (c, n) in v.items()}
                    for m, v in THESIS_TABLE_11_II.items()},
    "expected": "IRM and REx (r_e = 0) recover the causal coefficients on the homoskedastic (O) "
                "tasks; REx fails on the heteroskedastic (E) tasks, IRM does not; REx with "
                "r_e = V(Y_e) is worse",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """The SEM experiment (appendix 11.1.9.2: 1,000 samples per domain, 7 trials)."""
  tasks: tuple = TASKS
  risk_weights: tuple = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)  # ρ of ρ Σ_e R_e + (1 - ρ) P
  num_reps: int = 7
  num_samples: int = 1000
  domain_scales: tuple = (0.2, 2.0, 5.0)   # the last domain selects ρ
  chain_weights: str = "gaussian"
  learning_rate: float = 1e-3
  num_steps: int = 100_000
  seed: int = 0

  def __post_init__(self):
    from jaxthesis.rex import sem
    _config.names(self, "tasks", TASKS)
    _config.numbers(self, "risk_weights", 0.0, 1.0)
    _config.integer(self, "num_reps", 1)
    _config.integer(self, "num_samples", 2)
    _config.numbers(self, "domain_scales", 0.0)
    if len(self.domain_scales) < 3 or min(self.domain_scales) <= 0:
      _config.fail("domain_scales", "at least 3 scales > 0 (2 to train, 1 to select)",
                   self.domain_scales)
    _config.one_of(self, "chain_weights", sem.CHAIN_WEIGHTS)
    _config.number(self, "learning_rate", 0.0, strict=True)
    _config.integer(self, "num_steps", 1)
    _config.integer(self, "seed", 0)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The thesis's protocol; `quick`: 2 repetitions of 3,000 steps at step 1e-2."""
  base = Config(num_reps=2, num_steps=3000, learning_rate=1e-2) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  p.add_argument("--reps", dest="num_reps", type=_cli.positive_int("--reps"), default=None,
                 help="repetitions per task (default 7; 2 with --quick)")
  p.add_argument("--steps", dest="num_steps", type=_cli.positive_int("--steps"), default=None,
                 help="Adam steps for IRM and V-REx (default 100,000; 3,000 with --quick)")
  p.add_argument("--tasks", type=_cli.name_list("--tasks", TASKS), default=None,
                 help=f"comma-separated subset of {','.join(TASKS)}")
  p.add_argument("--risk-weights", type=_cli.number_list("--risk-weights", float, 0.0, 1.0),
                 default=None, help="candidate ρ of ρ Σ_e R_e + (1 - ρ) P "
                                    "(default 0,1e-5,1e-4,1e-3,1e-2,1e-1)")
  p.add_argument("--chain-weights", choices=("gaussian", "ones"), default=None,
                 help="W_xy, W_yz: i.i.d. Gaussian (default) or identity")


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Runs the suite as one program; returns the results (writes nothing)."""
  import jax
  from jaxthesis.rex import sem

  clock = _results.Stopwatch()
  if progress:  # the suite is one compiled program: say what runs, since no steps are reported
    print(f"SEM suite: {len(config.tasks)} tasks x {config.num_reps} repetitions x "
          f"{len(config.risk_weights)} candidate rho, {config.num_steps:,} Adam steps, as one "
          f"compiled program (no progress until it ends); devices: {_results.devices()}",
          file=sys.stderr, flush=True)
  result = sem.run_suite(
      jax.random.key(config.seed), config.tasks, config.risk_weights, num_reps=config.num_reps,
      num_samples=config.num_samples, domain_scales=config.domain_scales,
      chain_weights=config.chain_weights, learning_rate=config.learning_rate,
      num_steps=config.num_steps)
  if progress:
    print(f"SEM suite: done in {clock():.0f} s", file=sys.stderr, flush=True)
  result = {k: np.asarray(v) for k, v in result._asdict().items()}
  metrics = {}
  for j, method in enumerate(sem.METHODS):
    metrics[method] = {}
    for i, task in enumerate(config.tasks):
      metrics[method][task] = {
          "causal": _results.mean_std(result["table_causal_error"][i, :, j]),
          "noncausal": _results.mean_std(result["table_noncausal_error"][i, :, j]),
          "causal_unscrambled": _results.mean_std(result["causal_error"][i, :, j]),
          "noncausal_unscrambled": _results.mean_std(result["noncausal_error"][i, :, j]),
          "selected_risk_weights": result["selected_risk_weight"][i, :, j].tolist(),
      }
  return {"experiment": "rex/sem", "data": "simulated", "config": dataclasses.asdict(config),
          "metrics": metrics, "reference": REFERENCE, "wall_seconds": clock(),
          "arrays": result}


save = _results.save


def _cell(mean_std) -> str:
  return f"{mean_std[0]:.4f}±{mean_std[1]:.4f}"


def table(results: dict[str, Any]) -> str:
  metrics, config = results["metrics"], results["config"]
  rows = []
  for method, label in METHOD_LABELS.items():
    for task in config["tasks"]:
      ours = metrics[method][task]
      ref = THESIS_TABLE_11_II.get(method, {}).get(task)
      rows.append([label, task, _cell(ours["causal"]), _cell(ref[0]) if ref else "-",
                   _cell(ours["noncausal"]), _cell(ref[1]) if ref else "-"])
  head = (f"Linear SEMs (thesis appendix 11.1.9.2), coefficient MSE, mean ± std over "
          f"{config['num_reps']} reps; thesis = {REFERENCE['source']}")
  return head + "\n" + _results.format_table(
      ["method", "task", "causal (ours)", "causal (thesis)", "non-causal (ours)",
       "non-causal (thesis)"], rows)


def plot(out: str) -> list[str]:
  """Causal and non-causal coefficient MSE per task and method (log scale)."""
  results, _ = _results.load(out)
  metrics, tasks = results["metrics"], results["config"]["tasks"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
  x = np.arange(len(tasks))
  width = 0.8 / len(METHOD_LABELS)
  for ax, part in zip(axes, ("causal", "noncausal")):
    for k, (method, label) in enumerate(METHOD_LABELS.items()):
      means = [max(metrics[method][t][part][0], 1e-5) for t in tasks]
      stds = [metrics[method][t][part][1] for t in tasks]
      ax.bar(x + k * width, means, width, yerr=stds, label=label)
    ax.set_yscale("log")
    ax.set_xticks(x + 0.4 - width / 2, tasks)
    ax.set_title(f"{part} coefficient MSE (selected on e = "
                 f"{results['config']['domain_scales'][-1]:g}) — cf. {REFERENCE['source']}")
  axes[0].legend()
  return [_plots.savefig(fig, out, "sem_errors.png")]
