"""Progress output for long runs: a tqdm bar on a terminal, short lines elsewhere.

When stderr is not a terminal (CI, log files, `nohup`), tqdm's carriage-return stream
turns into one very long line; there a line is printed every `every_percent` instead.
"""
from __future__ import annotations

import sys
import time
from typing import Optional


class LineProgress:
  """The subset of tqdm's interface the engine uses, printing `desc: 40% (200/500) 12 s`."""

  def __init__(self, total: int, initial: int = 0, desc: str = "", every_percent: float = 10.0,
               file=None):
    self.total, self.n, self.desc = max(int(total), 1), int(initial), desc
    self.every = max(1, int(round(self.total * every_percent / 100)))
    self.file = file or sys.stderr
    self._start = time.perf_counter()
    self._last_printed = self.n
    self._postfix = ""

  def update(self, n: int = 1) -> None:
    self.n += int(n)
    if self.n - self._last_printed >= self.every or self.n >= self.total:
      self._last_printed = self.n
      print(f"{self.desc}: {100 * self.n / self.total:.0f}% ({self.n}/{self.total}) "
            f"{time.perf_counter() - self._start:.0f} s{self._postfix}", file=self.file,
            flush=True)

  def set_postfix(self, **values) -> None:
    self._postfix = "".join(f" {k}={v}" for k, v in values.items())

  def close(self) -> None:
    pass


def progress_bar(total: int, description: str, enabled: bool = True, initial: int = 0,
                 unit: str = "step") -> Optional[object]:
  """A tqdm bar when stderr is a terminal, a `LineProgress` otherwise, None when disabled."""
  if not enabled:
    return None
  if sys.stderr.isatty():
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=description, unit=unit, file=sys.stderr,
                dynamic_ncols=True, leave=False)
  return LineProgress(total, initial, description)
