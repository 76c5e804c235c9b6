"""Helpers shared by the chapter-5 sweep experiments (covariate shift, risk plane,
waterfall, search, selection): data loading, hyperparameters, CLI options, statistics.

Not a command module: the commands live in rex_shift, rex_riskplane, rex_waterfall,
rex_search and rex_selection.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _common as common

NOISE_PROTOCOLS = ("fixed", "population")


def load_cmnist(data: str, data_dir: Optional[str], seed: int):
  """`(source, ColoredMNIST)`: the standard two-domain Colored MNIST of rex_cmnist."""
  from jaxthesis.experiments.rex import cmnist as rex_cmnist
  config = rex_cmnist.CMNISTConfig(data=data, data_dir=data_dir, seed=seed)
  config.validate()
  return rex_cmnist.load_domains(config)


def finish(results: dict[str, Any], clock: common.Stopwatch, out: str,
           plot=None) -> dict[str, Any]:
  """Stamps the wall time, writes results.json (every other key of `results` rides along)
  and draws the plots; returns `results` with its "plots" list."""
  results["wall_seconds"] = clock()
  core = ("experiment", "data", "config", "metrics", "reference", "wall_seconds")
  extra = {k: v for k, v in results.items() if k not in core + ("out", "plots")}
  common.write_results(out, **{k: results[k] for k in core}, **extra)
  results["plots"] = plot(results) if plot is not None else []
  return results


def resolve_noise(noise: Optional[str], source: str, default_builtin: str = "population") -> str:
  """The noise protocol: as asked, else `default_builtin` on built-in data, fixed on TFDS."""
  if noise is not None:
    if noise not in NOISE_PROTOCOLS:
      raise common.UsageError(f"--noise must be fixed or population; got {noise!r}")
    return noise
  return default_builtin if source == "builtin" else "fixed"


def method_hparams(method: str, quick: bool, hidden: Optional[int] = None):
  """The paper's hyperparameters of `method` (rex_cmnist.METHOD_HPARAMS), with --quick's
  tenth of the steps and an optional width override."""
  from jaxthesis.experiments.rex import cmnist as rex_cmnist
  hp = rex_cmnist.method_hparams(method, quick)
  if hidden is not None:
    hp = dataclasses.replace(hp, hidden=int(hidden))
  return hp


def standard_error(values, axis: int = -1) -> np.ndarray:
  """Sample standard deviation / √n along `axis` (0 when n = 1)."""
  values = np.asarray(values, np.float64)
  n = values.shape[axis]
  if n < 2:
    return np.zeros(np.delete(values.shape, axis if axis >= 0 else values.ndim + axis))
  return values.std(axis=axis, ddof=1) / np.sqrt(n)


def positive_float_list(name: str):
  def parse(text: str) -> tuple[float, ...]:
    try:
      values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
      raise argparse.ArgumentTypeError(f"{name} must be non-empty finite numbers >= 0, got {text!r}")
    return values
  return parse


def add_sweep_args(p: argparse.ArgumentParser, default_out: str, *, noise_default: str) -> None:
  """--data/--data-dir/--noise/--hidden and the output options."""
  common.add_data_args(p)
  p.add_argument("--noise", choices=NOISE_PROTOCOLS, default=None,
                 help=f"fixed: label noise and colours drawn once per restart (the paper); "
                      f"population: redrawn every step. Default: {noise_default} on built-in "
                      f"data, fixed on TFDS")
  p.add_argument("--hidden", type=common.positive_int("--hidden"), default=None,
                 help="override the MLP width of every method (the paper: 390 for REx/IRM, "
                      "256 for ERM); use a small width on a CPU")
  common.add_output_args(p, default_out)


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def devices() -> str:
  import jax
  return f"{jax.device_count()} x {jax.devices()[0].platform}"


def run_and_report(run, table, config) -> int:
  """The tail of every sweep command: run, print the table and where results went."""
  results = run(config)
  print(table(results))
  print(summary_line(results, results["plots"]))
  return 0


def search_space(config):
  """The thesis's search space with a config's hidden-size, step and anneal ranges."""
  from jaxthesis.rex import search
  return dataclasses.replace(search.THESIS_SPACE, log2_hidden=tuple(config.log2_hidden),
                             steps=tuple(config.steps),
                             penalty_anneal_iters=tuple(config.penalty_anneal_iters))


def summary_line(results: dict[str, Any], plots: list[str]) -> str:
  return (f"wrote {results['out']}/results.json and {', '.join(plots)} "
          f"in {results['wall_seconds']:.0f} s")
