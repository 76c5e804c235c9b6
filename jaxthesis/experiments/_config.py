"""Config validation shared by every study: one exception, checks that name `config.field`.

A study's frozen `Config` validates itself in `__post_init__` with these helpers, so a bad
value is caught once, before any data is loaded or anything is compiled. The CLI prints a
`UsageError` as one line and replaces `config.<field>` by the flag that sets it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Iterable, Optional, Sequence


class UsageError(ValueError):
  """A mistake in what the user asked for; the CLI prints it as one line, no traceback.

  Attributes:
    field: the Config field at fault (None when it is not one field).
  """

  def __init__(self, message: str, field: Optional[str] = None):
    super().__init__(message)
    self.field = field


def fail(field: str, expected: str, got: Any) -> None:
  raise UsageError(f"config.{field} must be {expected}, got {got!r}", field)


def integer(config: Any, field: str, minimum: int = 0) -> None:
  value = getattr(config, field)
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    fail(field, f"an integer >= {minimum}", value)


def number(config: Any, field: str, minimum: float = 0.0, maximum: float = math.inf,
           strict: bool = False) -> None:
  """`minimum <= value <= maximum` (`minimum < value` when strict), finite."""
  value = getattr(config, field)
  ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        and (value > minimum if strict else value >= minimum) and value <= maximum)
  if not ok:
    low = f"> {minimum:g}" if strict else f">= {minimum:g}"
    fail(field, f"a finite number {low}" + (f" and <= {maximum:g}" if maximum < math.inf else ""),
         value)


def fraction(config: Any, field: str) -> None:
  number(config, field, 0.0, 1.0)


def one_of(config: Any, field: str, choices: Sequence[Any]) -> None:
  value = getattr(config, field)
  if value not in choices:
    fail(field, f"one of {', '.join(map(str, choices))}", value)


def names(config: Any, field: str, allowed: Sequence[str], *, allow_empty: bool = False) -> None:
  """A tuple of distinct names from `allowed`."""
  value = getattr(config, field)
  if not isinstance(value, (tuple, list)) or (not value and not allow_empty):
    fail(field, f"a non-empty tuple of names from {','.join(allowed)}", value)
  unknown = [v for v in value if v not in allowed]
  if unknown:
    raise UsageError(f"config.{field}: unknown {', '.join(map(repr, unknown))}; choose from "
                     f"{','.join(allowed)}", field)
  if len(set(value)) != len(value):
    fail(field, "a tuple of distinct names", value)


def numbers(config: Any, field: str, minimum: float = -math.inf, maximum: float = math.inf,
            *, integers: bool = False, distinct: bool = False) -> None:
  """A non-empty tuple of finite numbers (integers) in [minimum, maximum]; `distinct`: no
  value twice (for sweep values that key the results, where a repeat would overwrite)."""
  value = getattr(config, field)
  kind = int if integers else (int, float)
  if (not isinstance(value, (tuple, list)) or not value
      or any(isinstance(v, bool) or not isinstance(v, kind) or not math.isfinite(v)
             or not minimum <= v <= maximum for v in value)):
    fail(field, f"a non-empty tuple of {'integers' if integers else 'numbers'} in "
                f"[{minimum:g}, {maximum:g}]", value)
  if distinct and len({f"{v:g}" for v in value}) != len(value):
    fail(field, "a tuple of distinct numbers", value)


def boolean(config: Any, field: str) -> None:
  value = getattr(config, field)
  if not isinstance(value, bool):
    fail(field, "True or False", value)


def directory(config: Any, field: str) -> None:
  value = getattr(config, field)
  if value is not None and not os.path.isdir(value):
    raise UsageError(f"config.{field} {value!r} does not exist", field)


def replace(config: Any, **overrides: Any) -> Any:
  """`dataclasses.replace` that names an unknown field instead of a TypeError."""
  fields = {f.name for f in dataclasses.fields(config)}
  unknown = sorted(set(overrides) - fields)
  if unknown:
    raise UsageError(f"{type(config).__qualname__} has no field(s) {', '.join(unknown)}; "
                     f"fields: {', '.join(sorted(fields))}", unknown[0])
  return dataclasses.replace(config, **overrides)


def config_fields(config_type: type) -> Iterable[str]:
  return [f.name for f in dataclasses.fields(config_type)]
