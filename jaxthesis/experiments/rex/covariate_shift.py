"""`jaxthesis rex covariate-shift`: Colored MNIST with covariate shift (Fig. 5.4, Fig. 11.5).

For one variant (class, digit or colour imbalance) trains ERM, IRMv1, V-REx and MM-REx
with the paper's hyperparameters at every shift level p. Per method, all levels and
restarts are one compiled program: the levels are stacked datasets and each restart
indexes its own (`jaxthesis.sweeps.index_data`). `save`/`plot`/`table` follow the study
contract of `jaxthesis.experiments.registry`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.rex import _sweeps

METHODS = ("erm", "irm", "vrex", "mmrex", "grayscale")
DEFAULT_METHODS = ("erm", "irm", "vrex", "mmrex")
NAMES = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "mmrex": "MM-REx",
         "grayscale": "Grayscale"}
PANELS = {"class": "Fig. 5.4 left / Fig. 11.5 left", "digit": "Fig. 5.4 centre / Fig. 11.5 centre",
          "color": "Fig. 5.4 right / Fig. 11.5 right",
          "color-thesis": "Fig. 5.4 right / Fig. 11.5 right"}

REFERENCE = {
    "source": "Fig. 5.4",
    "panels": PANELS,
    "numbers": "none in the text: the figures plot mean ± s.e. over 3 trials for p in [0, 0.5]",
    "expected": "V-REx test accuracy >= IRMv1's at small p (\"V-REx significantly "
                "outperforms IRM in every case\"); ERM far below both; all converge as p -> 1 "
                "(no covariate shift); MM-REx has a larger standard error than V-REx "
                "(Fig. 11.5)",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis rex covariate-shift` run."""
  variant: str = "class"
  levels: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
  methods: tuple = DEFAULT_METHODS
  restarts: int = 3                 # per level
  hidden: Optional[int] = None      # MLP width of every method (None: the paper's)
  step_fraction: float = 1.0        # each method's steps and anneal step, scaled
  noise: Optional[str] = None       # fixed | population; None: population on built-in data
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0

  def __post_init__(self):
    _sweeps.check_shift_fields(self, METHODS)
    _config.integer(self, "restarts", 1)
    _config.number(self, "step_fraction", 0.0, 1.0, strict=True)
    _sweeps.check_data_fields(self)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The paper's protocol; `quick`: levels 0.1 and 1, 1 restart, width 32, a tenth of the
  steps."""
  base = (Config(levels=(0.1, 1.0), restarts=1, hidden=32, step_fraction=0.1) if quick
          else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _sweeps.add_shift_args(p, METHODS, ",".join(DEFAULT_METHODS))
  p.add_argument("--restarts", type=_cli.positive_int("--restarts"), default=None,
                 help="restarts per level (default 3)")
  _sweeps.add_data_args(p, noise_default="population")


def train_method(method: str, config: Config, levels, noise: str, *, progress: bool = True,
                 checkpoint_dir: Optional[str] = None):
  """All levels × restarts of one method as one program; returns final evals [P, R]."""
  import jax
  from jaxthesis import engine, sweeps
  from jaxthesis.experiments.rex import cmnist
  from jaxthesis.rex import colored_mnist, covariate_shift as cs, train

  hp = cmnist.method_hparams(method, config.step_fraction, config.hidden)
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
                         chunk_size=max(1, hp.steps // 5), progress=progress,
                         description=f"{NAMES[method]} ({r} runs)")
  result = _sweeps.train(runner, jax.random.split(key, r),
                         sweeps.indexed_hparams(hparams, index, num_levels),
                         sweeps.stack_data(levels), checkpoint_dir, method,
                         _sweeps.fingerprint(config, noise, method=method))
  final = {k: np.asarray(v[:, -1]).reshape(num_levels, restarts)
           for k, v in result.history.evals.items()}
  return hp, final


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every method at every level; returns the results (nothing is written but
  checkpoints)."""
  import jax
  from jaxthesis.rex import covariate_shift as cs

  clock = _results.Stopwatch()
  source, base = _sweeps.load_cmnist(config)
  noise = _sweeps.resolve_noise(config.noise, source)
  key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 100 + cs.VARIANTS.index(config.variant))
  levels = cs.make_shift_levels(key, base, config.variant, tuple(config.levels))
  kept = [np.asarray(l.train_mask).sum(1).astype(int).tolist() for l in levels]
  _sweeps.log(f"covariate shift ({config.variant} imbalance) on {source} data, {noise} noise; "
              f"levels {list(config.levels)}; kept per training domain {kept}; "
              f"test kept {[int(np.asarray(l.test_mask).sum()) for l in levels]}")
  metrics, hparams, arrays = {}, {}, {}
  for method in config.methods:
    hp, final = train_method(method, config, levels, noise, progress=progress,
                             checkpoint_dir=checkpoint_dir)
    hparams[method] = dataclasses.asdict(hp)
    m = {}
    for split in ("train", "test"):
      acc = 100 * final[f"{split}_acc"]
      m[f"{split}_acc_mean"] = acc.mean(1).tolist()
      m[f"{split}_acc_se"] = _results.standard_error(acc, 1).tolist()
      m[f"{split}_acc_per_restart"] = acc.round(2).tolist()
      arrays[f"{method}/{split}_acc"] = acc
    metrics[method] = m
    _sweeps.log(f"  {NAMES[method]:9s} test " + "  ".join(
        f"p={p:g}: {a:.1f}" for p, a in zip(config.levels, m["test_acc_mean"])))
  return _sweeps.results("rex/covariate-shift", config, source, noise, metrics, REFERENCE,
                         clock, arrays, variant=config.variant, levels=list(config.levels),
                         kept=kept, hparams=hparams)


save = _results.save


def table(results: dict[str, Any]) -> str:
  metrics, levels, variant = results["metrics"], results["levels"], results["variant"]
  methods = list(metrics)
  both = "vrex" in metrics and "irm" in metrics
  rows = []
  for i, p in enumerate(levels):
    row = [f"{p:g}"] + [_results.pm(metrics[m]["test_acc_mean"][i], metrics[m]["test_acc_se"][i])
                        for m in methods]
    if both:
      row.append(f"{metrics['vrex']['test_acc_mean'][i] - metrics['irm']['test_acc_mean'][i]:+.1f}")
    rows.append(row)
  headers = ["p"] + [f"{NAMES[m]} test" for m in methods] + (["V-REx − IRM"] if both else [])
  head = (f"CMNIST with covariate shift: {variant} imbalance ({results['data']} data, "
          f"{results['noise']} noise); test accuracy %, mean ± s.e. over "
          f"{results['config']['restarts']} restarts\n"
          f"thesis {PANELS[variant]}: {results['reference']['expected']}")
  return head + "\n" + _results.format_table(headers, rows)


def plot(out: str) -> list[str]:
  """Test (and dotted train) accuracy against the shift level, from the saved results."""
  results, _ = _results.load(out)
  levels, variant = np.asarray(results["levels"]), results["variant"]
  plt = _plots.pyplot()
  fig, ax = plt.subplots(figsize=(6, 4))
  for method, m in results["metrics"].items():
    line = ax.errorbar(levels, m["test_acc_mean"], yerr=m["test_acc_se"], marker="o",
                       capsize=3, label=f"{NAMES[method]} test")
    ax.plot(levels, m["train_acc_mean"], ls=":", color=line[0].get_color(), alpha=0.6)
  ax.axhline(50, color="gray", ls="--", lw=1)
  ax.set_xlabel("shift level p (1 = no covariate shift)")
  ax.set_ylabel("accuracy (%)  (dotted: train)")
  ax.set_title(f"{variant} imbalance ({results['data']}, {results['noise']} noise) — cf. "
               f"{PANELS[variant]}")
  ax.legend()
  return [_plots.savefig(fig, out, f"covariate_shift_{variant}.png")]
