"""`jaxthesis rex waterfall`: when to switch the penalty on (appendix 11.1.10.1, Fig. 11.9).

One program trains V-REx (or IRMv1) with the penalty switched on at every anneal step
0, 10, ..., 400 (41 restarts; `penalized_loss` divides by the weight, so the learning
rate drops proportionally at the switch), plus one restart that never switches (the
unpenalized trajectory). Every 10 steps it records training accuracy, accuracy on a
validation domain with 85 % colour-label correlation (the average training correlation;
held-out digits), test accuracy, and accuracy on a grayscale auxiliary set (the digit in
both colour channels). Fig. 11.9: the best anneal step is about where the training-domain
generalization gap (train − 85 % validation accuracy) starts to grow, i.e. where
memorization begins; so the default noise protocol here is fixed (memorizable).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.rex import _sweeps

METHODS = ("vrex", "irm", "mmrex")
VALIDATION_FLIP = 0.15
GAP_ONSET = 2.0   # final gap (points) that counts as memorization; onset: last gap <= half

REFERENCE = {
    "source": "Fig. 11.9",
    "numbers": "none in the text: plots of test accuracy against the anneal epoch, the "
               "generalization gap and train/test/grayscale accuracy",
    "expected": "test accuracy depends strongly on the anneal step; the best anneal step is "
                "about where the generalization gap on the 85% validation domain starts to "
                "grow (~100 epochs in the thesis); grayscale accuracy keeps improving while "
                "train/test sit at ~85/15%",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis rex waterfall` run; the anneal steps are
  `0, anneal_stride, ..., anneal_max`."""
  method: str = "vrex"
  steps: int = 501
  anneal_stride: int = 10
  anneal_max: int = 400
  eval_every: int = 10
  hidden: Optional[int] = None      # MLP width (None: the paper's 390)
  noise: Optional[str] = None       # fixed | population; None: fixed (memorizable)
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0

  def __post_init__(self):
    _config.one_of(self, "method", METHODS)
    _config.integer(self, "steps", 1)
    _config.integer(self, "anneal_stride", 1)
    _config.integer(self, "anneal_max", 0)
    if self.anneal_max >= self.steps:
      _config.fail("anneal_max", f"< steps = {self.steps} (anneal steps lie in [0, steps))",
                   self.anneal_max)
    _config.integer(self, "eval_every", 1)
    _sweeps.check_data_fields(self)

  @property
  def anneal_steps(self) -> tuple[int, ...]:
    return tuple(range(0, self.anneal_max + 1, self.anneal_stride))


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The paper's protocol (501 steps, anneal steps 0..400 by 10); `quick`: 51 steps,
  anneal steps 0..40, evaluations every 5 steps, width 32."""
  base = (Config(steps=51, anneal_max=40, eval_every=5, hidden=32) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  p.add_argument("--method", choices=METHODS, default=None, help="penalized method (default vrex)")
  p.add_argument("--steps", type=_cli.positive_int("--steps"), default=None,
                 help="training steps (default 501)")
  p.add_argument("--anneal-stride", type=_cli.positive_int("--anneal-stride"), default=None,
                 help="spacing of the anneal steps (default 10)")
  p.add_argument("--anneal-max", type=_cli.nonnegative_int("--anneal-max"), default=None,
                 help="last anneal step (default 400)")
  _sweeps.add_data_args(p, noise_default="fixed")


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



def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains one restart per anneal step plus an unpenalized one, as one program; returns
  the results (nothing is written but checkpoints)."""
  import jax
  from jaxthesis import engine
  from jaxthesis.experiments.rex import cmnist
  from jaxthesis.rex import colored_mnist, train

  clock = _results.Stopwatch()
  source, data = _sweeps.load_cmnist(config)
  noise = _sweeps.resolve_noise(config.noise, source, default_builtin="fixed")
  hp = cmnist.method_hparams(config.method, 1.0, config.hidden)
  anneal_steps = config.anneal_steps
  anneal = np.asarray(list(anneal_steps) + [config.steps], np.float32)  # last: never
  task = train.make_domain_task(config.method, hidden=hp.hidden, input_dim=392,
                                num_domains=int(data.train_digits.shape[0]),
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=waterfall_eval_sampler,
                                population=(noise == "population"))
  hparams = train.domain_hparams(len(anneal), learning_rate=hp.learning_rate,
                                 l2_weight=hp.l2_weight, penalty_weight=hp.penalty_weight,
                                 penalty_anneal_iters=anneal)
  _sweeps.log(f"waterfall on {source} data, {noise} noise: {config.method} with "
              f"{len(anneal) - 1} anneal steps + 1 unpenalized run, width {hp.hidden}, "
              f"{config.steps} steps")
  runner = engine.Runner(task, config.steps, eval_every=config.eval_every,
                         chunk_size=max(1, config.steps // 5), progress=progress,
                         description=f"waterfall ({len(anneal)} runs)")
  # One key for every restart: the anneal step is the only difference between runs.
  keys = jax.numpy.tile(jax.random.PRNGKey(config.seed)[None], (len(anneal), 1))
  result = _sweeps.train(runner, keys, hparams, data, checkpoint_dir, config.method,
                         _sweeps.fingerprint(config, noise))
  ev = {k: np.asarray(v) for k, v in result.history.evals.items()}
  eval_steps = np.asarray(result.history.eval_steps)
  final = {k: 100 * v[:, -1] for k, v in ev.items()}
  base = -1  # the unpenalized trajectory
  gap = 100 * (ev["train_acc"][base] - ev["val85_acc"][base])
  onset = gap_onset(eval_steps, gap)
  best = int(np.argmax(final["test_acc"][:-1]))
  metrics = {
      "anneal_steps": list(anneal_steps),
      "final_test_acc": final["test_acc"][:-1].tolist(),
      "final_train_acc": final["train_acc"][:-1].tolist(),
      "final_grayscale_acc": final["grayscale_acc"][:-1].tolist(),
      "best_anneal_step": int(anneal_steps[best]),
      "best_test_acc": float(final["test_acc"][best]),
      "unpenalized": {"eval_steps": eval_steps.tolist(),
                      "train_acc": (100 * ev["train_acc"][base]).tolist(),
                      "val85_acc": (100 * ev["val85_acc"][base]).tolist(),
                      "test_acc": (100 * ev["test_acc"][base]).tolist(),
                      "grayscale_acc": (100 * ev["grayscale_acc"][base]).tolist(),
                      "generalization_gap": gap.tolist(),
                      "gap_onset_step": onset}}
  # Curves of every run (rows: anneal steps, then the unpenalized run).
  arrays = {"eval_steps": eval_steps, "anneal": anneal,
            **{f"{name}": 100 * ev[name] for name in
               ("train_acc", "val85_acc", "test_acc", "grayscale_acc")}}
  return _sweeps.results("rex/waterfall", config, source, noise, metrics, REFERENCE, clock,
                         arrays, hparams=dataclasses.asdict(hp))


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  rows = [[a, f"{t:.1f}", f"{tr:.1f}", f"{g:.1f}"] for a, t, tr, g in zip(
      m["anneal_steps"], m["final_test_acc"], m["final_train_acc"], m["final_grayscale_acc"])]
  u = m["unpenalized"]
  idx = np.linspace(0, len(u["eval_steps"]) - 1, min(11, len(u["eval_steps"]))).astype(int)
  traj = [[u["eval_steps"][i], f"{u['train_acc'][i]:.1f}", f"{u['val85_acc'][i]:.1f}",
           f"{u['generalization_gap'][i]:+.1f}", f"{u['test_acc'][i]:.1f}",
           f"{u['grayscale_acc'][i]:.1f}"] for i in idx]
  head = (f"Penalty timing ({results['config']['method']}, {results['data']} data, "
          f"{results['noise']} noise): final accuracy % vs the step the penalty switches on\n"
          f"thesis {REFERENCE['source']}: {results['reference']['expected']}")
  return "\n".join([
      head, _results.format_table(["anneal step", "test acc", "train acc", "grayscale acc"], rows),
      f"best anneal step {m['best_anneal_step']} (test {m['best_test_acc']:.1f}%); "
      f"generalization gap onset of the unpenalized run: {u['gap_onset_step']} "
      f"(last step with gap <= {GAP_ONSET / 2:g} points; it ends > {GAP_ONSET:g})",
      "unpenalized trajectory:",
      _results.format_table(["step", "train", "val 85%", "gap", "test", "grayscale"], traj)])


def plot(out: str) -> list[str]:
  """Final test accuracy against the anneal step, the unpenalized run's generalization gap
  and its train/test/grayscale accuracy (the three panels of Fig. 11.9)."""
  results, _ = _results.load(out)
  m, u = results["metrics"], results["metrics"]["unpenalized"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
  axes[0].plot(m["anneal_steps"], m["final_test_acc"], marker="o", ms=3)
  axes[0].set_ylabel("final test acc (%)")
  axes[0].set_title(f"{results['config']['method']}: test accuracy vs penalty anneal step "
                    f"({results['data']}, {results['noise']} noise) — cf. thesis "
                    f"{REFERENCE['source']}")
  axes[1].plot(u["eval_steps"], u["generalization_gap"])
  axes[1].set_ylabel("train − val(85%) acc")
  for name in ("train", "test", "grayscale"):
    axes[2].plot(u["eval_steps"], u[f"{name}_acc"], label=name)
  axes[2].set_ylabel("acc (%), no penalty")
  axes[2].set_xlabel("step")
  axes[2].legend()
  for ax in axes:
    for x in (m["best_anneal_step"], u["gap_onset_step"]):
      if x is not None:
        ax.axvline(x, color="gray", ls=":", lw=1)
  return [_plots.savefig(fig, out, "waterfall.png")]
