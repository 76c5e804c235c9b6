"""What every study writes and reads: results.json + arrays.npz, tables, timing.

`save(results, out)` writes the shared layout; `load(out)` reads it back, so `plot(out)`
redraws a figure from the files without retraining. Library code never imports this.

results.json: `{"experiment", "data", "config", "metrics", "reference", "wall_seconds",
...}` (any other key of the results dict rides along); arrays.npz: `results["arrays"]`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from jaxthesis.experiments._config import UsageError

SHARED_KEYS = ("experiment", "data", "config", "metrics", "reference", "wall_seconds")
RESULTS_FILE, ARRAYS_FILE = "results.json", "arrays.npz"


def to_jsonable(value: Any) -> Any:
  if dataclasses.is_dataclass(value) and not isinstance(value, type):
    return to_jsonable(dataclasses.asdict(value))
  if isinstance(value, Mapping):
    return {str(k): to_jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_jsonable(v) for v in value]
  if isinstance(value, (np.ndarray, np.generic)) or type(value).__module__.startswith("jax"):
    arr = np.asarray(value)
    return to_jsonable(arr.item()) if arr.ndim == 0 else to_jsonable(arr.tolist())
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def prepare_out(out: str, experiment: str | None = None) -> str:
  """Creates `out` and checks that it is writable, before any data is loaded; with
  `experiment`, also that `out` holds no results of another study (which this run's
  results.json would overwrite and whose checkpoints it would mix with its own)."""
  try:
    os.makedirs(out, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
      pass
  except OSError as e:
    raise UsageError(f"--out {out!r} is not a writable directory ({e.strerror})", "out") from None
  path = os.path.join(out, RESULTS_FILE)
  if experiment is not None and os.path.exists(path):
    try:
      with open(path) as f:
        previous = json.load(f).get("experiment")
    except (OSError, ValueError, AttributeError):
      previous = None
    if previous != experiment:
      raise UsageError(f"--out {out!r} holds the {RESULTS_FILE} of "
                       f"{previous or 'something else'}, not of {experiment}; choose "
                       "another --out", "out")
  return out


def save(results: Mapping[str, Any], out: str) -> list[str]:
  """Writes `out/results.json` (every key but "arrays") and `out/arrays.npz`."""
  missing = [k for k in SHARED_KEYS if k not in results]
  if missing:
    raise ValueError(f"results lacks the shared key(s) {missing}")
  os.makedirs(out, exist_ok=True)
  payload = {k: to_jsonable(results[k]) for k in SHARED_KEYS}
  payload.update({k: to_jsonable(v) for k, v in results.items()
                  if k not in SHARED_KEYS and k != "arrays"})
  paths = [os.path.join(out, RESULTS_FILE)]
  with open(paths[0], "w") as f:
    json.dump(payload, f, indent=2)
  arrays = {k: np.asarray(v) for k, v in (results.get("arrays") or {}).items()}
  if arrays:
    paths.append(os.path.join(out, ARRAYS_FILE))
    np.savez_compressed(paths[-1], **arrays)
  return paths


def load(out: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """`(results.json as a dict, {name: array})` of a saved run."""
  path = os.path.join(out, RESULTS_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no {RESULTS_FILE} in {out!r}: run the study first")
  with open(path) as f:
    results = json.load(f)
  arrays_path = os.path.join(out, ARRAYS_FILE)
  arrays = {}
  if os.path.exists(arrays_path):
    with np.load(arrays_path) as z:
      arrays = {k: z[k] for k in z.files}
  return results, arrays


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
  """A plain fixed-width text table."""
  rows = [[str(c) for c in r] for r in rows]
  widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
            for i, h in enumerate(headers)]
  line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))
  return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def mean_std(values: Any, scale: float = 1.0) -> tuple[float, float]:
  arr = np.asarray(values, dtype=np.float64) * scale
  return float(arr.mean()), float(arr.std())


def pm(mean: float, std: float, digits: int = 1) -> str:
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def standard_error(values, axis: int = -1) -> np.ndarray:
  """Sample standard deviation / √n along `axis` (0 when n = 1)."""
  values = np.asarray(values, np.float64)
  n = values.shape[axis]
  if n < 2:
    return np.zeros(np.delete(values.shape, axis if axis >= 0 else values.ndim + axis))
  return values.std(axis=axis, ddof=1) / np.sqrt(n)


class Stopwatch:
  def __init__(self):
    self.start = time.perf_counter()

  def __call__(self) -> float:
    return time.perf_counter() - self.start


def devices() -> str:
  import jax
  return f"{jax.device_count()} x {jax.devices()[0].platform}"
