"""`jaxthesis rex waterfall`: when to switch the penalty on (appendix 11.1.10.1, Fig 11.9).

One program trains V-REx (or IRMv1) with the penalty switched on at every anneal step
0, 10, ..., 400 (41 restarts; `penalized_loss` divides by the weight, so the learning
rate drops proportionally at the switch), plus one restart that never switches (the
unpenalized trajectory). Every 10 steps it records training accuracy, accuracy on a
validation domain with 85 % colour-label correlation (the average training correlation;
held-out digits), test accuracy, and accuracy on a grayscale auxiliary set (the digit in
both colour channels). Fig 11.9: the best anneal step is about where the training-domain
generalization gap (train − 85 % validation accuracy) starts to grow, i.e. where
memorization begins; so the default noise protocol here is fixed (memorizable).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _common as common
from jaxthesis.experiments.rex import _sweeps as rex_runs

VALIDATION_FLIP = 0.15
GAP_ONSET = 2.0   # final gap (points) that counts as memorization; onset: last gap <= half


@dataclasses.dataclass(frozen=True)
class WaterfallConfig:
  method: str = "vrex"
  anneal_steps: tuple[int, ...] = tuple(range(0, 401, 10))
  steps: int = 501
  eval_every: int = 10
  hidden: Optional[int] = None
  noise: Optional[str] = None
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0
  out: str = "runs/rex_waterfall"
  quick: bool = False
  progress: bool = True
  plots: bool = True

  def validate(self) -> None:
    if self.method not in ("vrex", "irm", "mmrex"):
      raise common.UsageError(f"--method must be vrex, irm or mmrex; got {self.method!r}")
    if not self.anneal_steps or min(self.anneal_steps) < 0 or max(self.anneal_steps) >= self.steps:
      raise common.UsageError(f"anneal steps must lie in [0, --steps={self.steps}), got "
                              f"{min(self.anneal_steps)}..{max(self.anneal_steps)}")
    if self.eval_every < 1:
      raise common.UsageError(f"--eval-every must be >= 1, got {self.eval_every}")


def get_config(quick: bool = False, **overrides: Any) -> WaterfallConfig:
  base = (WaterfallConfig(anneal_steps=tuple(range(0, 41, 10)), steps=51, eval_every=5,
                          hidden=32, quick=True) if quick else WaterfallConfig())
  return dataclasses.replace(base, **overrides)


def waterfall_eval_sampler(key, data):
  """Fixed draws: pooled training domains, test domain, an 85 %-correlated validation
  domain and a grayscale set (validation and grayscale use the held-out test digits)."""
  import jax
  import jax.numpy as jnp
  from jaxthesis.rex import colored_mnist

  x, y = colored_mnist.color_domains(key, data)
  m, n = y.shape
  sets = {"train": (x.reshape(m * n, -1), y.reshape(m * n), data.train_mask.reshape(m * n))}
  sets["test"] = colored_mnist.color_digits(jax.random.fold_in(key, 1), data.test_pixels,
                                            data.test_digits, data.test_color_flip,
                                            data.label_noise)
  sets["val85"] = colored_mnist.color_digits(jax.random.fold_in(key, 2), data.test_pixels,
                                             data.test_digits, VALIDATION_FLIP, data.label_noise)
  _, y_gray = sets["val85"]
  sets["grayscale"] = (jnp.concatenate([data.test_pixels, data.test_pixels], -1), y_gray)
  return sets


def gap_onset(steps: np.ndarray, gap: np.ndarray, threshold: float = GAP_ONSET) -> Optional[int]:
  """Where memorization starts: the last step at which the gap is at most `threshold`/2
  points, provided it ends above `threshold` points (None when it never grows that far,
  e.g. under population noise). A model that does not memorize has a gap of about zero,
  since the validation domain has the training domains' average correlations."""
  gap = np.asarray(gap, np.float64)
  if gap[-1] < threshold:
    return None
  small = np.flatnonzero(gap <= threshold / 2)
  return int(steps[small.max()]) if small.size else int(steps[0])


def run(config: WaterfallConfig) -> dict[str, Any]:
  config.validate()
  clock = common.Stopwatch()
  import jax
  from jaxthesis import engine
  from jaxthesis.rex import colored_mnist, train

  source, data = rex_runs.load_cmnist(config.data, config.data_dir, config.seed)
  noise = rex_runs.resolve_noise(config.noise, source, default_builtin="fixed")
  hp = rex_runs.method_hparams(config.method, False, config.hidden)
  anneal = np.asarray(list(config.anneal_steps) + [config.steps], np.float32)  # last: never
  task = train.make_domain_task(config.method, hidden=hp.hidden, input_dim=392,
                                num_domains=int(data.train_digits.shape[0]),
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=waterfall_eval_sampler,
                                population=(noise == "population"))
  hparams = train.domain_hparams(len(anneal), learning_rate=hp.learning_rate,
                                 l2_weight=hp.l2_weight, penalty_weight=hp.penalty_weight,
                                 penalty_anneal_iters=anneal)
  rex_runs.log(f"waterfall on {source} data, {noise} noise: {config.method} with "
               f"{len(anneal) - 1} anneal steps + 1 unpenalized run, width {hp.hidden}, "
               f"{config.steps} steps")
  runner = engine.Runner(task, config.steps, eval_every=config.eval_every,
                         chunk_size=max(1, config.steps // 5), progress=config.progress,
                         description=f"waterfall ({len(anneal)} runs)")
  # One key for every restart: the anneal step is the only difference between runs.
  keys = jax.numpy.tile(jax.random.PRNGKey(config.seed)[None], (len(anneal), 1))
  result = runner.run(keys, hparams, data)
  ev, eval_steps = result.history.evals, result.history.eval_steps
  final = {k: 100 * v[:, -1] for k, v in ev.items()}
  base = -1  # the unpenalized trajectory
  gap = 100 * (ev["train_acc"][base] - ev["val85_acc"][base])
  onset = gap_onset(eval_steps, gap)
  best = int(np.argmax(final["test_acc"][:-1]))
  metrics = {
      "anneal_steps": list(config.anneal_steps),
      "final_test_acc": final["test_acc"][:-1].tolist(),
      "final_train_acc": final["train_acc"][:-1].tolist(),
      "final_grayscale_acc": final["grayscale_acc"][:-1].tolist(),
      "best_anneal_step": int(config.anneal_steps[best]),
      "best_test_acc": float(final["test_acc"][best]),
      "unpenalized": {"eval_steps": eval_steps.tolist(),
                      "train_acc": (100 * ev["train_acc"][base]).tolist(),
                      "val85_acc": (100 * ev["val85_acc"][base]).tolist(),
                      "test_acc": (100 * ev["test_acc"][base]).tolist(),
                      "grayscale_acc": (100 * ev["grayscale_acc"][base]).tolist(),
                      "generalization_gap": gap.tolist(),
                      "gap_onset_step": onset}}
  results = {
      "experiment": "rex/waterfall", "data": source, "noise": noise, "out": config.out,
      "config": {**dataclasses.asdict(config), "noise": noise, "hparams": dataclasses.asdict(hp)},
      "metrics": metrics,
      "reference": {"source": "thesis appendix 11.1.10.1, Fig 11.9 (plots only)",
                    "expected": "test accuracy depends strongly on the anneal step; the best "
                                "anneal step is about where the generalization gap on the "
                                "85% validation domain starts to grow (~100 epochs in the "
                                "thesis); grayscale accuracy keeps improving while train/test "
                                "sit at ~85/15%"},
      "devices": rex_runs.devices()}
  return rex_runs.finish(results, clock, config.out, plot if config.plots else None)


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[a, f"{t:.1f}", f"{tr:.1f}", f"{g:.1f}"] for a, t, tr, g in zip(
      m["anneal_steps"], m["final_test_acc"], m["final_train_acc"], m["final_grayscale_acc"])]
  u = m["unpenalized"]
  idx = np.linspace(0, len(u["eval_steps"]) - 1, min(11, len(u["eval_steps"]))).astype(int)
  traj = [[u["eval_steps"][i], f"{u['train_acc'][i]:.1f}", f"{u['val85_acc'][i]:.1f}",
           f"{u['generalization_gap'][i]:+.1f}", f"{u['test_acc'][i]:.1f}",
           f"{u['grayscale_acc'][i]:.1f}"] for i in idx]
  cfg = results["config"]
  head = (f"Penalty timing ({cfg['method']}, {results['data']} data, {results['noise']} noise): "
          f"final accuracy % vs the step the penalty switches on\n"
          f"thesis Fig 11.9: {results['reference']['expected']}")
  return "\n".join([
      head, common.format_table(["anneal step", "test acc", "train acc", "grayscale acc"], rows),
      f"best anneal step {m['best_anneal_step']} (test {m['best_test_acc']:.1f}%); "
      f"generalization gap onset of the unpenalized run: {u['gap_onset_step']} "
      f"(last step with gap <= {GAP_ONSET / 2:g} points; it ends > {GAP_ONSET:g})",
      "unpenalized trajectory:",
      common.format_table(["step", "train", "val 85%", "gap", "test", "grayscale"], traj)])


def plot(results: dict[str, Any]) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  m, u = results["metrics"], results["metrics"]["unpenalized"]
  fig, axes = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
  axes[0].plot(m["anneal_steps"], m["final_test_acc"], marker="o", ms=3)
  axes[0].set_ylabel("final test acc (%)")
  axes[0].set_title(f"{results['config']['method']}: test accuracy vs penalty anneal step "
                    f"({results['data']}, {results['noise']} noise) — cf. thesis Fig 11.9", fontsize=9)
  axes[1].plot(u["eval_steps"], u["generalization_gap"])
  axes[1].set_ylabel("train − val(85%) acc")
  axes[2].plot(u["eval_steps"], u["train_acc"], label="train")
  axes[2].plot(u["eval_steps"], u["test_acc"], label="test")
  axes[2].plot(u["eval_steps"], u["grayscale_acc"], label="grayscale")
  axes[2].set_ylabel("acc (%), no penalty")
  axes[2].set_xlabel("step")
  axes[2].legend(fontsize=8)
  for ax in axes:
    ax.grid(alpha=0.3)
    for x in (m["best_anneal_step"], u["gap_onset_step"]):
      if x is not None:
        ax.axvline(x, color="gray", ls=":", lw=1)
  fig.tight_layout()
  path = os.path.join(results["out"], "waterfall.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return [path]


def waterfall_command(args) -> int:
  overrides = {k: v for k, v in (("hidden", args.hidden), ("steps", args.steps),
                                 ("method", args.method)) if v is not None}
  if args.anneal_stride is not None or args.anneal_max is not None:
    default = get_config(args.quick)
    stride = args.anneal_stride or (default.anneal_steps[1] - default.anneal_steps[0])
    top = default.anneal_steps[-1] if args.anneal_max is None else args.anneal_max
    overrides["anneal_steps"] = tuple(range(0, top + 1, stride))
  config = get_config(args.quick, seed=args.seed, out=args.out, progress=not args.no_progress,
                      data=args.data, data_dir=args.data_dir, noise=args.noise, **overrides)
  return rex_runs.run_and_report(run, table, config)


def add_commands(subparsers) -> None:
  p = subparsers.add_parser(
      "waterfall", help="test accuracy vs the step the penalty switches on (Fig 11.9)",
      description="Sweeps the penalty anneal step (0..400 by 10) as one program and plots "
                  "test accuracy against it, with the generalization gap on an 85%% "
                  "validation domain and grayscale accuracy of the unpenalized run.")
  p.add_argument("--method", choices=("vrex", "irm", "mmrex"), default=None,
                 help="penalized method (default vrex)")
  p.add_argument("--steps", type=common.positive_int("--steps"), default=None,
                 help="training steps (default 501)")
  p.add_argument("--anneal-stride", type=common.positive_int("--anneal-stride"), default=None,
                 help="spacing of the anneal steps (default 10)")
  p.add_argument("--anneal-max", type=common.nonnegative_int("--anneal-max"), default=None,
                 help="last anneal step (default 400)")
  rex_runs.add_sweep_args(p, "runs/rex_waterfall", noise_default="fixed")
  p.set_defaults(func=waterfall_command)
