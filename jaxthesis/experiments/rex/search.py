"""`jaxthesis rex search`: random hyperparameter search on covariate-shift CMNIST
(appendix 11.1.9.1, Fig. 11.6 and Fig. 11.7).

Samples N configurations over the thesis's ranges (HiddenDim [2^7, 2^12] log-uniform,
L2 [1e-4, 1e-2], lr [10^-4.3, 10^-2.8], PenaltyAnnealIters [50, 250], PenaltyWeight
[1e2, 1e6], Steps [201, 601]) and trains every configuration at every shift level with
every method; the same N configurations serve every level and method (a paired design).

Batching: per method, configurations are grouped by width bucket
(`jaxthesis.nn.bucket_width`, geometric grid with `--buckets-per-octave` points
per doubling); each bucket is one compiled program whose restart axis is configurations
× levels, with the surplus units of narrower configurations masked, per-restart
learning rate / L2 / penalty weight / anneal step, each restart's step count enforced by
`sweeps.with_step_limit` (the bucket scans to its largest count) and its level's data
picked by `sweeps.index_data`. Reported: the share of *satisfactory* configurations
(test > 50 % and train > test, Fig. 11.7) and the best test accuracy per level (Fig. 11.6,
which picks by test accuracy: an oracle, not a legitimate selection rule).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results
from jaxthesis.experiments.rex import _sweeps

METHODS = ("erm", "irm", "vrex", "mmrex")
NAMES = {"erm": "ERM", "irm": "IRMv1", "vrex": "V-REx", "mmrex": "MM-REx"}
# Thesis 5.4.1: share (%) of the 340 configurations better than chance at the smallest p.
THESIS_SUCCESS = {"class": {"p": 0.1, "vrex": 4.4, "irm": 0.0},
                  "digit": {"p": 0.1, "vrex": 23.7, "irm": 0.0},
                  "color": {"p": 0.2, "vrex": 2.0, "irm": 0.0},
                  "color-thesis": {"p": 0.2, "vrex": 2.0, "irm": 0.0}}

REFERENCE = {
    "source": "Fig. 11.7",
    "success_pct_at_small_p": THESIS_SUCCESS,
    "numbers": "5.4.1: of 340 configurations per p, V-REx beats chance in 4.4% / 23.7% / 2.0% "
               "(class / digit / colour imbalance, p = 0.1 / 0.1 / 0.2), IRMv1 in none",
    "expected": "for p < 0.5 more configurations are satisfactory for V-REx than for IRMv1 "
                "(IRMv1: none at the smallest p); for p > 0.5 IRMv1 can have more",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Every number of a `jaxthesis rex search` run (the thesis: 340 configurations)."""
  variant: str = "class"
  levels: tuple = (0.1, 0.2, 0.3, 0.4, 0.5, 1.0)
  methods: tuple = METHODS
  num_configs: int = 340
  log2_hidden: tuple = (7.0, 12.0)
  steps: tuple = (201, 601)
  penalty_anneal_iters: tuple = (50, 250)
  buckets_per_octave: int = 2
  noise: Optional[str] = None       # fixed | population; None: population on built-in data
  data: str = "auto"
  data_dir: Optional[str] = None
  seed: int = 0

  def __post_init__(self):
    _sweeps.check_shift_fields(self, METHODS)
    _sweeps.check_search_fields(self)
    _sweeps.check_data_fields(self)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The thesis's search; `quick`: levels 0.1 and 1, IRMv1 and V-REx, 3 configurations of
  widths 2^4..2^5 and 21..61 steps."""
  base = (Config(levels=(0.1, 1.0), methods=("irm", "vrex"), num_configs=3,
                 log2_hidden=(4.0, 5.0), steps=(21, 61), penalty_anneal_iters=(5, 25),
                 buckets_per_octave=1) if quick else Config())
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _sweeps.add_shift_args(p, METHODS, "all")
  _sweeps.add_search_args(p, num_configs_help="configurations per method and level (thesis: 340)")
  _sweeps.add_data_args(p, noise_default="population", hidden=False)


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Trains every configuration at every level with every method; returns the results
  (nothing is written but checkpoints)."""
  import jax
  from jaxthesis.rex import covariate_shift as cs, search

  clock = _results.Stopwatch()
  source, base = _sweeps.load_cmnist(config)
  noise = _sweeps.resolve_noise(config.noise, source)
  key = jax.random.PRNGKey(config.seed)
  levels = cs.make_shift_levels(jax.random.fold_in(key, 100 + cs.VARIANTS.index(config.variant)),
                                base, config.variant, tuple(config.levels))
  configs, buckets, width_limit = _sweeps.sample_search(key, config)
  waste = sum(len(i) * w for w, i in buckets.items()) / configs["hidden"].sum()
  step_waste = sum(len(i) * configs["steps"][i].max() for i in buckets.values()) / configs["steps"].sum()
  _sweeps.log(f"search ({config.variant} imbalance, {source} data, {noise} noise): "
              f"{config.num_configs} configurations × {len(config.levels)} levels × "
              f"{len(config.methods)} methods; width buckets "
              f"{ {w: len(i) for w, i in buckets.items()} } (padded width / true width "
              f"{waste:.2f}, scanned / useful steps {step_waste:.2f})")
  metrics, arrays = {}, {}
  for mi, method in enumerate(config.methods):
    evals, _ = _sweeps.train_buckets(
        method, configs, levels, buckets, width_limit, jax.random.fold_in(key, 300 + mi),
        input_dim=cs.input_dim(config.variant), num_domains=2,
        sample_train=cs.train_sampler(config.variant),
        sample_eval=cs.eval_sampler(config.variant), noise=noise, progress=progress,
        description=NAMES[method], checkpoint_dir=checkpoint_dir,
        fingerprint=_sweeps.fingerprint(config, noise, method=method))
    train_acc, test_acc = evals["train_acc"][..., -1], evals["test_acc"][..., -1]   # [C, P]
    ok = search.satisfactory(train_acc, test_acc)
    metrics[method] = {
        "satisfactory_pct": (100 * ok.mean(0)).tolist(),
        "above_chance_pct": (100 * (test_acc > 0.5).mean(0)).tolist(),
        "best_test_acc": (100 * test_acc.max(0)).tolist(),
        "best_config": test_acc.argmax(0).tolist(),
        "median_test_acc": (100 * np.median(test_acc, 0)).tolist(),
        "train_acc": (100 * train_acc).round(2).tolist(),
        "test_acc": (100 * test_acc).round(2).tolist()}
    arrays[f"{method}/train_acc"], arrays[f"{method}/test_acc"] = 100 * train_acc, 100 * test_acc
    _sweeps.log(f"  {NAMES[method]:7s} satisfactory % " + "  ".join(
        f"p={q:g}: {s:.0f}" for q, s in zip(config.levels, metrics[method]["satisfactory_pct"])))
  return _sweeps.results(
      "rex/search", config, source, noise, metrics, REFERENCE, clock, arrays,
      variant=config.variant, levels=list(config.levels),
      buckets={str(w): len(i) for w, i in buckets.items()}, padded_width_ratio=waste,
      scanned_step_ratio=step_waste, configs={k: v.tolist() for k, v in configs.items()})


save = _results.save


def table(results: dict[str, Any]) -> str:
  metrics, levels, variant = results["metrics"], results["levels"], results["variant"]
  ref = results["reference"]["success_pct_at_small_p"][variant]
  rows = []
  for i, p in enumerate(levels):
    row = [f"{p:g}"]
    for m in metrics.values():
      row.append(f"{m['satisfactory_pct'][i]:.0f} / {m['above_chance_pct'][i]:.0f} / "
                 f"{m['best_test_acc'][i]:.1f}")
    thesis = ("-" if abs(p - ref["p"]) > 1e-9 else
              f"V-REx {ref['vrex']}, IRM {ref['irm']} (> chance)")
    rows.append(row + [thesis])
  cfg = results["config"]
  head = (f"Random search, {variant} imbalance ({results['data']} data, {results['noise']} "
          f"noise): {cfg['num_configs']} configurations per method and level, HiddenDim "
          f"2^{cfg['log2_hidden'][0]:g}..2^{cfg['log2_hidden'][1]:g}, steps "
          f"{cfg['steps'][0]}..{cfg['steps'][1]}\n"
          f"cells: satisfactory % (test > 50 and train > test) / test > 50 % / best test acc "
          f"(oracle pick, Fig. 11.6)\nthesis {REFERENCE['source']} / 5.4.1: "
          f"{results['reference']['expected']}")
  return head + "\n" + _results.format_table(
      ["p"] + [NAMES[m] for m in metrics] + ["thesis % (340 configs)"], rows)


def plot(out: str) -> list[str]:
  """Satisfactory share (Fig. 11.7) and best test accuracy (Fig. 11.6) per level."""
  results, _ = _results.load(out)
  levels, variant = results["levels"], results["variant"]
  plt = _plots.pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for method, m in results["metrics"].items():
    axes[0].plot(levels, m["satisfactory_pct"], marker="o", label=NAMES[method])
    axes[1].plot(levels, m["best_test_acc"], marker="o", label=NAMES[method])
  axes[0].set_ylabel("satisfactory configurations (%)")
  axes[1].set_ylabel("best test accuracy (%) (oracle)")
  axes[1].axhline(50, color="gray", ls="--", lw=1)
  for ax, figure in zip(axes, ("Fig. 11.7", "Fig. 11.6")):
    ax.set_xlabel("shift level p")
    ax.set_title(f"{variant} imbalance, {results['config']['num_configs']} configs — cf. "
                 f"{figure}")
    ax.legend()
  return [_plots.savefig(fig, out, f"search_{variant}.png")]
