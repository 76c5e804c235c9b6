"""`jaxthesis naf convergence`: learning curves over 16 seeds in one vmapped run (Fig. 9.7).

MAF-style (maximum likelihood on samples of a Gaussian grid; curve: KL(p || q) estimated
as test NLL minus the target entropy) and IAF-style (reverse KL to an energy; curve:
KL(q || p) with log Z from a Riemann sum). Models as in Section 9.6.1: 6 stacked affine
layers with reversed ordering vs one DSF vs one DDSF (d = 16, L = 2). Every seed of a
model is one restart of a single compiled, vmapped engine run; we plot mean +- std.

The thesis repeats the experiments of Figs. 9.1-9.2, so the IAF-style runs use the
energy study's schedule (`naf energy`): learning rate `iaf_learning_rate`, the target's
inverse temperature annealed from `initial_beta` to 1 over the first `anneal_fraction` of
the steps and the rate cosine-decayed over the last `lr_decay_fraction`. The curves are
always KL to the untempered target (beta = 1). `run` returns the final KLs and the curves
of every seed; `plot` redraws Fig. 9.7 from the saved files.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.naf import _common as nc

REFERENCE = {
    "source": "Fig. 9.7",
    "expected": "DSF/DDSF converge faster and lower than the 6-layer affine flow, MAF-style "
                "(KL(p||q)) and IAF-style (KL(q||p)), mean ± std over 16 runs",
    "num_seeds": 16,
}
STYLES = ("maf", "iaf")


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis naf convergence` run."""
  models: tuple[str, ...] = ("affine", "dsf", "ddsf")
  num_seeds: int = 16
  num_steps: int = 5000
  batch_size: int = 128
  learning_rate: float = 2e-3       # MAF style
  iaf_learning_rate: float = 1e-2   # IAF style, as `naf energy`
  anneal_fraction: float = 0.2
  lr_decay_fraction: float = 0.3
  initial_beta: float = 0.01
  hidden: int = 32
  grid_modes: int = 5
  energy: str = "u1"
  num_eval: int = 1024
  surjective: bool = True          # False: the thesis's bounded DSF / DDSF
  seed: int = 0

  def __post_init__(self):
    _config.names(self, "models", tuple(nc.MODELS))
    _config.one_of(self, "energy", tuple(nc.ENERGIES))
    nc.check_form(self)
    nc.check_training_fields(self, "num_seeds", "num_steps", "batch_size", "learning_rate",
                             "iaf_learning_rate", "anneal_fraction", "lr_decay_fraction",
                             "initial_beta", "hidden", "num_eval", "seed")
    _config.integer(self, "grid_modes", 2)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 9.7's protocol (16 seeds, 5,000 steps); `quick`: 3 seeds, 40 steps."""
  base = (Config(num_seeds=3, num_steps=40, batch_size=32, hidden=8, num_eval=128)
          if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  nc.add_training_arguments(p, schedule=True, seeds=True)
  nc.add_form_argument(p)
  nc.add_models_argument(p, tuple(nc.MODELS))


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every model in both styles over all seeds; returns the results."""
  import jax

  clock = _results.Stopwatch()
  target = nc.GaussianGrid(config.grid_modes)
  test = target.sample(jax.random.PRNGKey(config.seed + 1234), config.num_eval)
  entropy = -float(target.log_prob(test).mean())
  energy = nc.ENERGIES[config.energy]
  log_z = nc.log_normalizer(energy)
  iaf_learning_rate, beta_schedule = nc.schedules(config, config.iaf_learning_rate)
  metrics = {"maf": {}, "iaf": {}, "grid_entropy": entropy, "log_z": log_z}
  arrays = {}
  for style in STYLES:
    for model in config.models:
      flow = nc.build_flow(model, 2, style, config.hidden, config.surjective)
      if style == "maf":
        def evaluate(params, data, flow=flow):
          return {"kl": -flow.distribution(params).log_prob(data).mean() - entropy}
        task = nc.flow_task(flow, nc.max_likelihood_loss(flow, target, config.batch_size),
                            config.learning_rate, evaluate)
        data = test
      else:
        eval_loss = nc.reverse_kl_loss(flow, energy, config.num_eval)

        def evaluate(params, data, eval_loss=eval_loss):
          return {"kl": eval_loss(params, data, None) + log_z}
        task = nc.flow_task(flow, nc.reverse_kl_loss(flow, energy, config.batch_size),
                            iaf_learning_rate, evaluate, beta_schedule)
        data = jax.random.PRNGKey(config.seed + 77)
      result = nc.run_seeds(task, config.num_steps, config.seed, config.num_seeds, data,
                            progress, f"{style}-{model} x{config.num_seeds}",
                            **nc.checkpoint_args(checkpoint_dir, f"{style}-{model}", config,
                                                 ("models",)))
      kl = result.history.evals["kl"]  # [seeds, evals]
      arrays[f"{style}/{model}/eval_steps"] = result.history.eval_steps
      arrays[f"{style}/{model}/kl"] = kl
      final = kl[:, -1]
      metrics[style][model] = {"final_kl_mean": float(np.mean(final)),
                               "final_kl_std": float(np.std(final)),
                               "num_seeds": int(kl.shape[0])}
  return nc.results("convergence", config, metrics, REFERENCE, clock, arrays)


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = []
  for style in STYLES:
    for model in results["config"]["models"]:
      m = results["metrics"][style][model]
      rows.append([style.upper(), model, f"{m['final_kl_mean']:.3f} ± {m['final_kl_std']:.3f}",
                   str(m["num_seeds"]),
                   "slower / higher" if model == "affine" else "faster / lower"])
  return nc.titled_table("Convergence, final KL over seeds", REFERENCE["source"],
                         ("style", "model", "final KL (mean ± std)", "seeds",
                          f"thesis ({REFERENCE['source']})"), rows)


def plot(out: str) -> list[str]:
  """Fig. 9.7: KL against step, mean ± std over seeds, per style, from the saved files."""
  results, arrays = _results.load(out)
  config = results["config"]
  titles = {"maf": f"MAF-style: KL(p||q), {config['grid_modes']}x{config['grid_modes']} grid",
            "iaf": f"IAF-style: KL(q||p), energy {config['energy'].upper()}"}
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for ax, style in zip(axes, STYLES):
    for model in config["models"]:
      steps, kl = arrays[f"{style}/{model}/eval_steps"], arrays[f"{style}/{model}/kl"]
      mean, std = kl.mean(0), kl.std(0)
      ax.plot(steps, mean, label=model)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_title(titles[style], fontsize=9)
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend(fontsize=8)
  return [_plots.savefig(fig, out, "convergence.png", dpi=110)]
