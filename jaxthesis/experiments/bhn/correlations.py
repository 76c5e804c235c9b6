"""`jaxthesis bhn correlations`: dependence between posterior parameters (Fig. 11.12).

A BHN over the weight-norm scales of an MNIST MLP is trained; from samples of its
approximate posterior, Pearson's correlation test is run on pairs of scales (a random
subset of `num_params` of them, all pairs). Reported: the histogram of the p-values and
the fraction below 0.05. A factorial-Gaussian hypernet ("gaussian:0") is the control: its
parameters are independent, so about 5 % of its p-values fall below 0.05 by chance.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common

REFERENCE = {
    "source": "Fig. 11.12",
    "expected": "the hypernet posterior includes correlations between parameters: many "
                "Pearson p-values are below .05 (independent parameters: about 5 %)",
    "null_fraction": 0.05,
}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  data: str = "builtin"
  data_dir: Optional[str] = None
  hypernets: tuple = ("realnvp:8", "iaf:8", "gaussian:0")
  hidden: int = 100
  num_epochs: int = 30
  batch_size: int = 128
  learning_rate: float = 1e-3
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  num_params: int = 40
  num_posterior_samples: int = 1000
  train_size: int = 0

  def __post_init__(self):
    _common.check_mnist_config(self, specs="hypernets", positive=(
        "hidden", "num_epochs", "batch_size", "hypernet_hidden"), nonnegative=("train_size",))
    if any(s in _common.BASELINES for s in self.hypernets):
      _config.fail("hypernets", "hypernet specs <name>:<K> (no baselines)", self.hypernets)
    _config.integer(self, "num_params", 2)
    _config.integer(self, "num_posterior_samples", 3)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Fig. 11.12; `quick`: a tiny net, one small hypernet and the control, 2 epochs."""
  base = Config(hypernets=("realnvp:2", "gaussian:0"), hidden=16, num_epochs=2,
                hypernet_hidden=16, num_params=10, num_posterior_samples=200,
                train_size=512) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  _common.add_specs_argument(p, "--hypernets", "hypernets", help=_common.HYPERNETS_HELP)
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))
  p.add_argument("--num-params", dest="num_params", default=None,
                 type=_cli.positive_int("--num-params"))


def pearson_p_values(samples: np.ndarray) -> np.ndarray:
  """Two-sided p-values of Pearson's test for every pair of columns (upper triangle).

  `r` the sample correlation of n samples, `t = r sqrt((n - 2) / (1 - r^2))` is Student-t
  with n - 2 degrees of freedom under independence (of Gaussian variables).
  """
  from scipy import stats

  n = samples.shape[0]
  r = np.corrcoef(samples, rowvar=False)[np.triu_indices(samples.shape[1], 1)]
  r = np.clip(r, -1 + 1e-12, 1 - 1e-12)
  t = r * np.sqrt((n - 2) / (1 - r ** 2))
  return 2 * stats.t.sf(np.abs(t), n - 2)


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax

  clock = _results.Stopwatch()
  x_tr, y_tr, _, _, description = _common.load_config_mnist(config)
  key = jax.random.PRNGKey(config.seed)
  metrics, arrays = {}, {}
  for i, spec in enumerate(config.hypernets):
    _common.log(f"[bhn correlations] training {spec}", progress)
    method, params, _ = _common.train_from_config(
        spec, jax.random.fold_in(key, i), x_tr, y_tr, config, progress=progress,
        checkpoint_dir=_common.checkpoint_path(checkpoint_dir, spec))
    hypernet_dims = method.primary.num_random
    theta = np.asarray(jax.jit(method.sample_theta, static_argnums=2)(
        _common.restart(params, 0), jax.random.fold_in(key, 77 + i), config.num_posterior_samples))
    rng = np.random.default_rng(config.seed)
    picked = np.sort(rng.choice(hypernet_dims, min(config.num_params, hypernet_dims), replace=False))
    p = pearson_p_values(theta[:, picked])
    metrics[spec] = {"fraction_p_below_0.05": float(np.mean(p < 0.05)), "num_pairs": int(p.size),
                     "median_p": float(np.median(p)),
                     "mean_abs_correlation": float(np.mean(np.abs(
                         np.corrcoef(theta[:, picked], rowvar=False)[np.triu_indices(len(picked), 1)])))}
    arrays[f"p_values_{i}"] = p
    arrays[f"samples_{i}"] = theta[:500, picked[:5]]
  return _common.results("correlations", f"{description}; used {len(y_tr)} training digits",
                         config, metrics, clock, arrays, REFERENCE)


save = _results.save


def table(results: dict[str, Any]) -> str:
  rows = [[spec, f"{m['fraction_p_below_0.05']:.1%}", m["num_pairs"], f"{m['median_p']:.3f}",
           f"{m['mean_abs_correlation']:.3f}"] for spec, m in results["metrics"].items()]
  text = _results.format_table(["hypernet", "p < .05", "pairs", "median p", "mean |r|"], rows)
  return f"{text}\n{REFERENCE['source']} (thesis): {REFERENCE['expected']}"


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  specs = list(results["config"]["hypernets"])
  fig, axes = plt.subplots(1, len(specs), figsize=(3.2 * len(specs), 3.0), squeeze=False)
  for i, (ax, spec) in enumerate(zip(axes[0], specs)):
    ax.hist(arrays[f"p_values_{i}"], bins=np.linspace(0, 1, 21))
    ax.axvline(0.05, color="r", ls="--", lw=0.8)
    ax.set_title(f"{spec}: {results['metrics'][spec]['fraction_p_below_0.05']:.0%} < .05")
    ax.set_xlabel("Pearson p-value")
  fig.suptitle(f"{REFERENCE['source']}: p-values of pairwise correlation tests", fontsize=9)
  return [_plots.savefig(fig, out, "correlations.png")]
