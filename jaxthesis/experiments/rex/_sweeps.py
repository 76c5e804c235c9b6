"""Pieces shared by the chapter-5 sweep studies (covariate shift, risk plane, waterfall,
search, selection): their Colored MNIST, the noise protocol, the options and Config
checks they share, the width-bucketed training of the random searches, the results dict.

Not a study module: the studies are `covariate_shift`, `risk_plane`, `waterfall`,
`search` and `selection` beside it.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any, Callable, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _results


# ------------------------------------------------------------------- data and noise


def load_cmnist(config: Any):
  """`(source, ColoredMNIST)`: the two-domain Colored MNIST of `rex cmnist` (all digits of
  the source), from a Config with fields `data`, `data_dir`, `seed`."""
  from jaxthesis.experiments.rex import cmnist
  return cmnist.load_domains(config.data, config.data_dir, config.seed)


def resolve_noise(noise: Optional[str], source: str, default_builtin: str = "population") -> str:
  """The noise protocol: as asked, else `default_builtin` on built-in data, fixed on TFDS."""
  if noise is not None:
    return noise
  return default_builtin if source == "builtin" else "fixed"


def check_data_fields(config: Any) -> None:
  """`data`, `data_dir`, `noise`, `seed` and (where the Config has it) `hidden`."""
  from jaxthesis.data import SOURCES
  from jaxthesis.rex.colored_mnist import NOISE_PROTOCOLS
  _config.one_of(config, "data", SOURCES)
  if config.noise is not None:
    _config.one_of(config, "noise", NOISE_PROTOCOLS)
  _config.integer(config, "seed", 0)
  if getattr(config, "hidden", None) is not None:
    _config.integer(config, "hidden", 1)
  _config.directory(config, "data_dir")


def add_data_args(p, *, noise_default: str, hidden: bool = True) -> None:
  """--data/--data-dir/--noise and (optionally) --hidden."""
  from jaxthesis.rex.colored_mnist import NOISE_PROTOCOLS
  _cli.add_data_args(p)
  p.add_argument("--noise", choices=NOISE_PROTOCOLS, default=None,
                 help=f"fixed: label noise and colours drawn once per restart (the paper); "
                      f"population: redrawn every step. Default: {noise_default} on built-in "
                      f"data, fixed on TFDS")
  if hidden:
    p.add_argument("--hidden", type=_cli.positive_int("--hidden"), default=None,
                   help="override the MLP width of every method (the paper: 390 for REx/IRM, "
                        "256 for ERM); use a small width on a CPU")


# ------------------------------------------------------------- covariate-shift levels


def check_shift_fields(config: Any, methods) -> None:
  """`variant`, `levels` (shift levels p in [0, 1]) and `methods` (names from `methods`)."""
  from jaxthesis.rex.covariate_shift import VARIANTS
  _config.one_of(config, "variant", VARIANTS)
  _config.numbers(config, "levels", 0.0, 1.0)
  _config.names(config, "methods", methods)


def add_shift_args(p, methods, default_methods: str) -> None:
  """--variant, --levels, --methods."""
  from jaxthesis.rex.covariate_shift import VARIANTS
  p.add_argument("--variant", choices=VARIANTS, default=None, help="default class")
  p.add_argument("--levels", type=_cli.number_list("--levels", float, 0.0, 1.0), default=None,
                 help="comma-separated shift levels (default 0.1,0.2,0.3,0.4,0.5,1)")
  p.add_argument("--methods", type=_cli.name_list("--methods", methods), default=None,
                 help=f"comma-separated, from {','.join(methods)} (default {default_methods})")


# ------------------------------------------------------------------- random searches


def check_range(config: Any, field: str, minimum: float, maximum: float, *,
                integers: bool = False) -> None:
  """A `(low, high)` pair with `minimum <= low <= high <= maximum`."""
  _config.numbers(config, field, minimum, maximum, integers=integers)
  value = getattr(config, field)
  if len(value) != 2 or value[0] > value[1]:
    _config.fail(field, "a range LO,HI with LO <= HI", value)


def check_search_fields(config: Any) -> None:
  """The random-search fields that `search` and `selection` share."""
  _config.integer(config, "num_configs", 1)
  check_range(config, "log2_hidden", 0, 13)
  check_range(config, "steps", 1, 100_000, integers=True)
  check_range(config, "penalty_anneal_iters", 0, 100_000, integers=True)
  _config.integer(config, "buckets_per_octave", 1)


def search_space(config: Any):
  """The thesis's search space (appendix 11.1.9.1) with a Config's hidden-size, step and
  anneal ranges."""
  from jaxthesis.rex import search
  return dataclasses.replace(search.THESIS_SPACE, log2_hidden=tuple(config.log2_hidden),
                             steps=tuple(config.steps),
                             penalty_anneal_iters=tuple(config.penalty_anneal_iters))


def add_search_args(p, *, num_configs_help: str) -> None:
  """--num-configs, --log2-hidden, --steps, --anneal-iters, --buckets-per-octave."""
  p.add_argument("--num-configs", type=_cli.positive_int("--num-configs"), default=None,
                 help=num_configs_help)
  p.add_argument("--log2-hidden", type=_cli.number_range("--log2-hidden"), default=None,
                 help="LO,HI of log2 HiddenDim (thesis 7,12)")
  p.add_argument("--steps", type=_cli.number_range("--steps", int), default=None,
                 help="LO,HI of the step count (thesis 201,601)")
  p.add_argument("--anneal-iters", type=_cli.number_range("--anneal-iters", int),
                 dest="penalty_anneal_iters", default=None,
                 help="LO,HI of PenaltyAnnealIters (thesis 50,250)")
  p.add_argument("--buckets-per-octave", type=_cli.positive_int("--buckets-per-octave"),
                 default=None, help="width buckets per doubling (default 2)")


def sample_search(key, config: Any):
  """`(configs, buckets, width_limit)`: the Config's random configurations (drawn with
  `fold_in(key, 200)`), grouped by width bucket."""
  import jax
  from jaxthesis.rex import search
  configs = search.sample_configs(jax.random.fold_in(key, 200), config.num_configs,
                                  search_space(config))
  buckets = search.group_by_bucket(configs["hidden"], config.buckets_per_octave)
  return configs, buckets, max(buckets)


def train_buckets(method: str, configs: dict, datasets, buckets: dict, width_limit: int, key,
                  *, input_dim: int, num_domains: int, sample_train: Callable,
                  sample_eval: Callable, noise: str, eval_every: Optional[int] = None,
                  common_length: bool = False, progress: bool = True, description: str = "",
                  checkpoint_dir: Optional[str] = None, fingerprint: Any = None):
  """Every configuration on every dataset, one compiled program per width bucket.

  Per bucket, the restart axis is configurations × datasets (configuration-major): the
  bucket's masked-width MLP, each restart's own learning rate / L2 / penalty weight /
  anneal step, its own step count (`sweeps.with_step_limit`) and its dataset
  (`sweeps.index_data`); keys `split(fold_in(key, width), restarts)`.

  Args:
    configs: `sample_configs` output, `[C]` each.
    datasets: D datasets of one structure (stacked here).
    eval_every: evaluation spacing (None: only at the end).
    common_length: scan every bucket to the largest step count of all configurations
      (so all buckets share the checkpoints); else each bucket to its own largest.

  Returns:
    `({eval name: [C, D, K]}, eval_steps [K])`.
  """
  import jax
  from jaxthesis import engine, sweeps
  from jaxthesis.rex import search

  stacked = sweeps.stack_data(list(datasets))
  d = len(datasets)
  evals, eval_steps = {}, None
  for width, idx in buckets.items():
    sub = {k: np.repeat(v[idx], d) for k, v in configs.items()}
    index = np.tile(np.arange(d, dtype=np.int32), len(idx))
    task = search.make_search_task(method, width=width, width_limit=width_limit,
                                   input_dim=input_dim, num_domains=num_domains,
                                   sample_train=sample_train, sample_eval=sample_eval,
                                   population=(noise == "population"))
    task = sweeps.index_data(sweeps.with_step_limit(task))
    hparams = sweeps.indexed_hparams(
        sweeps.step_limited_hparams(search.search_hparams(sub), sub["steps"]), index, d)
    total = int((configs if common_length else sub)["steps"].max())
    runner = engine.Runner(task, total, eval_every=eval_every or total,
                           chunk_size=max(1, total // 5), progress=progress,
                           description=f"{description} width {width} ({len(index)} runs)")
    result = train(runner, jax.random.split(jax.random.fold_in(key, width), len(index)),
                   hparams, stacked, checkpoint_dir, f"{description}-w{width}",
                   {"bucket": width, "configs": idx.tolist(), **(fingerprint or {})})
    for name, values in result.history.evals.items():
      if name not in evals:
        evals[name] = np.full((len(configs["hidden"]), d, values.shape[1]), np.nan)
      evals[name][idx] = np.asarray(values).reshape(len(idx), d, -1)
    eval_steps = np.asarray(result.history.eval_steps)
  return evals, eval_steps


# ----------------------------------------------------------------- runs and results


def train(runner, keys, hparams, data, checkpoint_dir: Optional[str], name: str,
          fingerprint: Any):
  """`runner.run`, checkpointed under `checkpoint_dir/name` when a directory is given."""
  path = None
  if checkpoint_dir is not None:
    path = os.path.join(checkpoint_dir, name.replace(" ", "_").replace("/", "_"))
    if os.path.isdir(os.path.join(path, "checkpoints")) and os.listdir(
        os.path.join(path, "checkpoints")):
      log(f"  {name}: resuming from {path}")
  return runner.run(keys, hparams, data, checkpoint_dir=path,
                    fingerprint=_results.to_jsonable(fingerprint) if path else None)


def fingerprint(config: Any, noise: str, **extra: Any) -> dict[str, Any]:
  """What a checkpoint must match to be resumed: the Config, the noise and `extra`."""
  return {"config": dataclasses.asdict(config), "noise": noise, **extra}


def results(experiment: str, config: Any, source: str, noise: str, metrics: dict,
            reference: dict, clock: _results.Stopwatch, arrays: Optional[dict] = None,
            **extra: Any) -> dict[str, Any]:
  """The results dict of a sweep study (`_results.SHARED_KEYS` + noise, devices, extra)."""
  return {"experiment": experiment, "data": source, "noise": noise,
          "config": dataclasses.asdict(config), "metrics": metrics, "reference": reference,
          **extra, "devices": _results.devices(), "wall_seconds": clock(),
          "arrays": arrays or {}}


def log(message: str) -> None:
  print(message, file=sys.stderr, flush=True)
