"""`jaxthesis naf convergence`: learning curves over 16 seeds in one vmapped run (Fig. 9.7).

MAF-style (maximum likelihood on samples of a Gaussian grid; curve: KL(p || q) estimated
as test NLL minus the target entropy) and IAF-style (reverse KL to an energy; curve:
KL(q || p) with log Z from a Riemann sum). Models as in Section 9.6.1: 6 stacked affine
layers with reversed ordering vs one DSF vs one DDSF (d = 16, L = 2). Every seed of a
model is one restart of a single compiled, vmapped engine run; we plot mean +- std.

The thesis repeats the experiments of Figs 9.1-9.2, so the IAF-style runs use the
energy experiment's schedule (`naf energy`): learning rate `iaf_learning_rate`, the
target's inverse temperature annealed from 0.01 to 1 over the first `anneal_fraction` of
the steps and the rate cosine-decayed over the last `lr_decay_fraction`. The curves are
always KL to the untempered target (beta = 1).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxthesis.experiments.naf import _common as nc
from jaxthesis.experiments.naf.energy import reverse_kl_loss


@dataclasses.dataclass(frozen=True)
class ConvergenceConfig:
  models: tuple[str, ...] = ("affine", "dsf", "ddsf")
  num_seeds: int = 16
  num_steps: int = 5000
  batch_size: int = 128
  learning_rate: float = 2e-3       # MAF style
  iaf_learning_rate: float = 1e-2   # IAF style, as `naf energy`
  anneal_fraction: float = 0.2
  lr_decay_fraction: float = 0.3
  hidden: int = 32
  grid_modes: int = 5
  energy: str = "u1"
  num_eval: int = 1024
  seed: int = 0


def get_config(quick: bool = False) -> ConvergenceConfig:
  if quick:
    return ConvergenceConfig(num_seeds=3, num_steps=40, batch_size=32, hidden=8, num_eval=128)
  return ConvergenceConfig()


def run(config: ConvergenceConfig, out_dir: str, progress: bool = True) -> dict:
  import jax

  target = nc.GaussianGrid(config.grid_modes)
  test = target.sample(jax.random.PRNGKey(config.seed + 1234), config.num_eval)
  entropy = -float(target.log_prob(test).mean())
  energy = nc.ENERGIES[config.energy]
  log_z = nc.log_normalizer(energy)
  curves, metrics = {}, {"maf": {}, "iaf": {}, "grid_entropy": entropy, "log_z": log_z}
  for style in ("maf", "iaf"):
    for model in config.models:
      flow = nc.build_flow(model, 2, style, config.hidden)
      if style == "maf":
        def loss_fn(params, key, data, flow=flow):
          return -flow.distribution(params).log_prob(target.sample(key, config.batch_size)).mean()

        def evaluate(params, data, flow=flow):
          return {"kl": -flow.distribution(params).log_prob(data).mean() - entropy}
        data = test
      else:
        loss_fn = reverse_kl_loss(flow, energy, config.batch_size)
        eval_loss = reverse_kl_loss(flow, energy, config.num_eval)

        def evaluate(params, data, eval_loss=eval_loss):
          return {"kl": eval_loss(params, data, None) + log_z}
        data = jax.random.PRNGKey(config.seed + 77)
      if style == "maf":
        task = nc.flow_task(flow, loss_fn, config.learning_rate, evaluate)
      else:
        task = nc.flow_task(
            flow, loss_fn,
            nc.learning_rate_schedule(config.iaf_learning_rate, config.num_steps,
                                      config.lr_decay_fraction),
            evaluate, nc.kl_annealing(config.num_steps, config.anneal_fraction))
      result = nc.run_seeds(task, config.num_steps, config.seed, config.num_seeds, data,
                            progress, f"{style}-{model} x{config.num_seeds}")
      kl = result.history.evals["kl"]  # [seeds, evals]
      curves[(style, model)] = (result.history.eval_steps, kl)
      final = kl[:, -1]
      metrics[style][model] = {"final_kl_mean": float(np.mean(final)),
                               "final_kl_std": float(np.std(final)),
                               "num_seeds": int(kl.shape[0]),
                               "curve_steps": result.history.eval_steps,
                               "curve_mean": kl.mean(0), "curve_std": kl.std(0)}

  plt = nc.matplotlib()
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  titles = {"maf": f"MAF-style: KL(p||q), {config.grid_modes}x{config.grid_modes} grid",
            "iaf": f"IAF-style: KL(q||p), energy {config.energy.upper()}"}
  for ax, style in zip(axes, ("maf", "iaf")):
    for model in config.models:
      steps, kl = curves[(style, model)]
      mean, std = kl.mean(0), kl.std(0)
      ax.plot(steps, mean, label=model)
      ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_title(titles[style], fontsize=9)
    ax.set_xlabel("step")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.legend(fontsize=8)
  fig.tight_layout()
  os.makedirs(out_dir, exist_ok=True)
  fig.savefig(os.path.join(out_dir, "convergence.png"), dpi=110)
  plt.close(fig)
  return metrics


TABLE_HEADERS = ("style", "model", "final KL (mean ± std)", "seeds", "thesis (Fig 9.7)")


def table_rows(metrics: dict, config: ConvergenceConfig) -> list[list[str]]:
  rows = []
  for style in ("maf", "iaf"):
    for model in config.models:
      m = metrics[style][model]
      rows.append([style.upper(), model, f"{m['final_kl_mean']:.3f} ± {m['final_kl_std']:.3f}",
                   str(m["num_seeds"]),
                   "slower / higher" if model == "affine" else "faster / lower"])
  return rows
