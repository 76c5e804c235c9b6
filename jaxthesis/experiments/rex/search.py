"""`jaxthesis rex search`: random hyperparameter search on covariate-shift CMNIST
(appendix 11.1.9.1, Figs 11.6 and 11.7).

Samples N configurations over the thesis's ranges (HiddenDim [2^7, 2^12] log-uniform,
L2 [1e-4, 1e-2], lr [10^-4.3, 10^-2.8], PenaltyAnnealIters [50, 250], PenaltyWeight
[1e2, 1e6], Steps [201, 601]) and trains every configuration at every shift level with
every method; the same N configurations serve every level and method (a paired design).

Batching: per method, configurations are grouped by width bucket
(`jaxthesis.rex.search.bucket_width`, geometric grid with `--buckets-per-octave` points
per doubling); each bucket is one compiled program whose restart axis is configurations
× levels, with the surplus units of narrower configurations masked, per-restart
learning rate / L2 / penalty weight / anneal step, each restart's step count enforced by
`sweeps.with_step_limit` (the bucket scans to its largest count) and its level's data
picked by `sweeps.index_data`. Reported: the share of *satisfactory* configurations
(test > 50 % and train > test, Fig 11.7) and the best test accuracy per level (Fig 11.6,
which picks by test accuracy: an oracle, not a legitimate selection rule).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _common as common
from jaxthesis.experiments.rex import _sweeps as rex_runs

METHODS = ("erm", "irm", "vrex", "mmrex")
NAMES = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "mmrex": "MM-REx"}
# Thesis 5.4.1: share of the 340 configurations better than chance at the smallest p.
THESIS_SUCCESS = {"class": {"p": 0.1, "vrex": 4.4, "irm": 0.0},
                  "digit": {"p": 0.1, "vrex": 23.7, "irm": 0.0},
                  "color": {"p": 0.2, "vrex": 2.0, "irm": 0.0},
                  "color-thesis": {"p": 0.2, "vrex": 2.0, "irm": 0.0}}


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  variant: str = "class"
  levels: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
  methods: tuple[str, ...] = METHODS
  num_configs: int = 340
  log2_hidden: tuple[float, float] = (7.0, 12.0)
  steps: tuple[int, int] = (201, 601)
  penalty_anneal_iters: tuple[int, int] = (50, 250)
  buckets_per_octave: int = 2
  noise: Optional[str] = None
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0
  out: str = "runs/rex_search"
  quick: bool = False
  progress: bool = True
  plots: bool = True

  def space(self):
    return rex_runs.search_space(self)

  def validate(self) -> None:
    from jaxthesis.rex import covariate_shift as cs
    if self.variant not in cs.VARIANTS:
      raise common.UsageError(f"--variant must be one of {', '.join(cs.VARIANTS)}; got {self.variant!r}")
    if not self.levels or any(not 0 <= p <= 1 for p in self.levels):
      raise common.UsageError(f"--levels must be shift levels in [0, 1], got {self.levels}")
    unknown = [m for m in self.methods if m not in METHODS]
    if not self.methods or unknown:
      raise common.UsageError(f"--methods: unknown {unknown}; choose from {','.join(METHODS)}")
    if self.num_configs < 1:
      raise common.UsageError(f"--num-configs must be >= 1, got {self.num_configs}")
    lo, hi = self.log2_hidden
    if not 0 <= lo <= hi <= 13:
      raise common.UsageError(f"--log2-hidden must satisfy 0 <= LO <= HI <= 13, got {lo},{hi}")
    try:
      self.space().validate()
    except ValueError as e:
      raise common.UsageError(str(e)) from None


def get_config(quick: bool = False, **overrides: Any) -> SearchConfig:
  base = (SearchConfig(levels=(0.1, 1.0), methods=("irm", "vrex"), num_configs=3, log2_hidden=(4.0, 5.0), steps=(21, 61),
                       penalty_anneal_iters=(5, 25), buckets_per_octave=1, quick=True)
          if quick else SearchConfig())
  return dataclasses.replace(base, **overrides)


def train_bucket(method: str, width: int, width_limit: int, config: SearchConfig,
                 configs: dict, stacked, num_levels: int, noise: str, key):
  """Every configuration of one width bucket at every level: final accuracies [C, P]."""
  import jax
  from jaxthesis import engine
  from jaxthesis import sweeps
  from jaxthesis.rex import covariate_shift as cs, search

  c = len(configs["hidden"])
  grid = {k: np.repeat(v, num_levels) for k, v in configs.items()}  # config-major
  level = np.tile(np.arange(num_levels, dtype=np.int32), c)
  task = search.make_search_task(method, width=width, width_limit=width_limit,
                                 input_dim=cs.input_dim(config.variant), num_domains=2,
                                 sample_train=cs.train_sampler(config.variant),
                                 sample_eval=cs.eval_sampler(config.variant),
                                 population=(noise == "population"))
  task = sweeps.index_data(sweeps.with_step_limit(task))
  hparams = sweeps.indexed_hparams(
      sweeps.step_limited_hparams(search.search_hparams(grid), grid["steps"]), level, num_levels)
  total = int(grid["steps"].max())
  runner = engine.Runner(task, total, eval_every=total, chunk_size=max(1, total // 5),
                         progress=config.progress,
                         description=f"{NAMES[method]} width {width} ({c * num_levels} runs)")
  result = runner.run(jax.random.split(key, c * num_levels), hparams, stacked)
  ev = result.history.evals
  return (ev["train_acc"][:, -1].reshape(c, num_levels),
          ev["test_acc"][:, -1].reshape(c, num_levels))


def run(config: SearchConfig) -> dict[str, Any]:
  config.validate()
  clock = common.Stopwatch()
  import jax
  from jaxthesis import sweeps
  from jaxthesis.rex import covariate_shift as cs, search

  source, base = rex_runs.load_cmnist(config.data, config.data_dir, config.seed)
  noise = rex_runs.resolve_noise(config.noise, source)
  key = jax.random.PRNGKey(config.seed)
  levels = cs.make_shift_levels(jax.random.fold_in(key, 100 + cs.VARIANTS.index(config.variant)),
                                base, config.variant, tuple(config.levels))
  stacked = sweeps.stack_data(levels)
  configs = search.sample_configs(jax.random.fold_in(key, 200), config.num_configs, config.space())
  buckets = search.group_by_bucket(configs["hidden"], config.buckets_per_octave)
  width_limit = max(buckets)
  waste = sum(len(i) * w for w, i in buckets.items()) / configs["hidden"].sum()
  step_waste = sum(len(i) * configs["steps"][i].max() for i in buckets.values()) / configs["steps"].sum()
  rex_runs.log(f"search ({config.variant} imbalance, {source} data, {noise} noise): "
               f"{config.num_configs} configurations × {len(config.levels)} levels × "
               f"{len(config.methods)} methods; width buckets "
               f"{ {w: len(i) for w, i in buckets.items()} } (padded width / true width "
               f"{waste:.2f}, scanned / useful steps {step_waste:.2f})")
  n, p = config.num_configs, len(config.levels)
  metrics = {}
  for mi, method in enumerate(config.methods):
    train_acc, test_acc = np.full((n, p), np.nan), np.full((n, p), np.nan)
    for width, idx in buckets.items():
      sub = {k: v[idx] for k, v in configs.items()}
      bkey = jax.random.fold_in(jax.random.fold_in(key, 300 + mi), width)
      tr, te = train_bucket(method, width, width_limit, config, sub, stacked, p, noise, bkey)
      train_acc[idx], test_acc[idx] = tr, te
    ok = search.satisfactory(train_acc, test_acc)
    metrics[method] = {
        "satisfactory_pct": (100 * ok.mean(0)).tolist(),
        "above_chance_pct": (100 * (test_acc > 0.5).mean(0)).tolist(),
        "best_test_acc": (100 * test_acc.max(0)).tolist(),
        "best_config": test_acc.argmax(0).tolist(),
        "median_test_acc": (100 * np.median(test_acc, 0)).tolist(),
        "train_acc": (100 * train_acc).round(2).tolist(),
        "test_acc": (100 * test_acc).round(2).tolist()}
    rex_runs.log(f"  {NAMES[method]:7s} satisfactory % " + "  ".join(
        f"p={q:g}: {s:.0f}" for q, s in zip(config.levels, metrics[method]["satisfactory_pct"])))
  results = {
      "experiment": f"rex/search/{config.variant}", "data": source, "noise": noise,
      "out": config.out, "levels": list(config.levels),
      "config": {**dataclasses.asdict(config), "noise": noise,
                 "buckets": {str(w): len(i) for w, i in buckets.items()},
                 "padded_width_ratio": waste, "scanned_step_ratio": step_waste},
      "configs": {k: v.tolist() for k, v in configs.items()},
      "metrics": metrics,
      "reference": {"source": "thesis 5.4.1 and Fig 11.7 (340 configurations per p)",
                    "success_pct_at_small_p": THESIS_SUCCESS[config.variant],
                    "expected": "for p < 0.5 more configurations are satisfactory for V-REx than "
                                "for IRMv1 (IRMv1: none at the smallest p); for p > 0.5 IRMv1 "
                                "can have more"},
      "devices": rex_runs.devices()}
  return rex_runs.finish(results, clock, config.out, plot if config.plots else None)


def table(results: dict[str, Any]) -> str:
  metrics, levels = results["metrics"], results["levels"]
  ref = results["reference"]["success_pct_at_small_p"]
  rows = []
  for i, p in enumerate(levels):
    row = [f"{p:g}"]
    for method, m in metrics.items():
      row.append(f"{m['satisfactory_pct'][i]:.0f} / {m['above_chance_pct'][i]:.0f} / "
                 f"{m['best_test_acc'][i]:.1f}")
    thesis = ("-" if abs(p - ref["p"]) > 1e-9 else
              f"V-REx {ref['vrex']}, IRM {ref['irm']} (> chance)")
    rows.append(row + [thesis])
  cfg = results["config"]
  variant = results["experiment"].rsplit("/", 1)[-1]
  head = (f"Random search, {variant} imbalance ({results['data']} data, {results['noise']} "
          f"noise): {cfg['num_configs']} configurations per method and level, HiddenDim "
          f"2^{cfg['log2_hidden'][0]:g}..2^{cfg['log2_hidden'][1]:g}, steps "
          f"{cfg['steps'][0]}..{cfg['steps'][1]}\n"
          f"cells: satisfactory % (test > 50 and train > test) / test > 50 % / best test acc "
          f"(oracle pick, Fig 11.6)\nthesis Fig 11.7 / 5.4.1: {results['reference']['expected']}")
  return head + "\n" + common.format_table(
      ["p"] + [NAMES[m] for m in metrics] + ["thesis % (340 configs)"], rows)


def plot(results: dict[str, Any]) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  levels = results["levels"]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for method, m in results["metrics"].items():
    axes[0].plot(levels, m["satisfactory_pct"], marker="o", label=NAMES[method])
    axes[1].plot(levels, m["best_test_acc"], marker="o", label=NAMES[method])
  axes[0].set_ylabel("satisfactory configurations (%)")
  axes[1].set_ylabel("best test accuracy (%) (oracle)")
  axes[1].axhline(50, color="gray", ls="--", lw=1)
  variant = results["experiment"].rsplit("/", 1)[-1]
  for ax, fig_no in zip(axes, ("11.7", "11.6")):
    ax.set_xlabel("shift level p")
    ax.set_title(f"{variant} imbalance, {results['config']['num_configs']} configs — cf. "
                 f"Fig {fig_no}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  path = os.path.join(results["out"], f"search_{variant}.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return [path]


def _range(name: str, cast=float):
  def parse(text: str):
    parts = text.split(",")
    try:
      lo, hi = (cast(s) for s in parts)
    except ValueError:
      import argparse
      raise argparse.ArgumentTypeError(f"{name} must be LO,HI, got {text!r}") from None
    return lo, hi
  return parse


def search_command(args) -> int:
  overrides = {k: v for k, v in (("levels", args.levels), ("methods", args.methods),
                                 ("num_configs", args.num_configs),
                                 ("log2_hidden", args.log2_hidden), ("steps", args.steps),
                                 ("penalty_anneal_iters", args.anneal_iters),
                                 ("buckets_per_octave", args.buckets_per_octave))
               if v is not None}
  config = get_config(args.quick, variant=args.variant, seed=args.seed, out=args.out,
                      progress=not args.no_progress, data=args.data, data_dir=args.data_dir,
                      noise=args.noise, **overrides)
  return rex_runs.run_and_report(run, table, config)


def add_commands(subparsers) -> None:
  from jaxthesis.rex.covariate_shift import VARIANTS
  p = subparsers.add_parser(
      "search", help="random hyperparameter search on covariate-shift CMNIST (Fig 11.7)",
      description="Samples configurations over the thesis's ranges, trains each at every "
                  "shift level with every method (one program per width bucket) and prints "
                  "the share of satisfactory configurations beside Fig 11.7.")
  p.add_argument("--variant", choices=VARIANTS, default="class")
  p.add_argument("--levels", type=rex_runs.positive_float_list("--levels"), default=None,
                 help="comma-separated shift levels (default 0.1,0.2,0.3,0.4,0.5,1)")
  p.add_argument("--methods", type=common.name_list("--methods", METHODS), default=None)
  p.add_argument("--num-configs", type=common.positive_int("--num-configs"), default=None,
                 help="configurations per method and level (thesis: 340)")
  p.add_argument("--log2-hidden", type=_range("--log2-hidden"), default=None,
                 help="LO,HI of log2 HiddenDim (thesis 7,12)")
  p.add_argument("--steps", type=_range("--steps", int), default=None,
                 help="LO,HI of the step count (thesis 201,601)")
  p.add_argument("--anneal-iters", type=_range("--anneal-iters", int), default=None,
                 help="LO,HI of PenaltyAnnealIters (thesis 50,250)")
  p.add_argument("--buckets-per-octave", type=common.positive_int("--buckets-per-octave"),
                 default=None, help="width buckets per doubling (default 2)")
  common.add_data_args(p)
  p.add_argument("--noise", choices=rex_runs.NOISE_PROTOCOLS, default=None,
                 help="default: population on built-in data, fixed on TFDS")
  common.add_output_args(p, "runs/rex_search")
  p.set_defaults(func=search_command)
