"""Shared code of the benchmarks: timing, machine facts, tables, JSON, plots, torch.

Every benchmark script in this folder

* takes ``--quick`` (a smoke run of seconds) and ``--out DIR`` (`add_common_args`),
* times with `time_call` / `time_interleaved` (medians; interleaving puts several
  variants side by side under the same machine load, which matters on shared machines),
* writes one ``DIR/<name>.json`` with `write_json`, which adds `machine_info` and a
  ``"summary"`` list of `summary_row` entries: what `device_suite.py` collects into one
  table (ms per step, achieved FLOP/s, fraction of the measured matmul peak, ratio
  against the PyTorch reference).

Scripts import it as ``import _bench`` (benchmarks/ is on `sys.path` when a script in it
runs) or, from elsewhere, after ``sys.path.insert(0, "benchmarks")``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


# ------------------------------------------------------------------------------ timing


def block(value: Any) -> Any:
  """Waits for JAX arrays (and synchronizes CUDA, when torch has it) inside `value`."""
  import jax
  jax.block_until_ready(value)
  torch = _torch_if_imported()
  if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
    torch.cuda.synchronize()
  return value


def time_call(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> dict:
  """Seconds per call of `fn()` (outputs waited for): median, best and every repeat."""
  if repeats < 1 or warmup < 0:
    raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  for _ in range(warmup):
    block(fn())
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(fn())
    times.append(time.perf_counter() - start)
  return {"median": float(np.median(times)), "best": float(np.min(times)),
          "times": [float(t) for t in times]}


def repeats_for(call: Callable[[], Any], repeats: int, seconds: float,
                most: int = 3000) -> int:
  """How many timed calls make about `seconds` of `call`: at least `repeats`, at most
  `most`, from the median of 5 probe calls. A fixed 50 calls of a sub-millisecond step are
  a few ms of timing, which moved a speedup by +-20 % between runs."""
  probe = time_call(call, repeats=5, warmup=0)["median"]
  return int(min(most, max(repeats, seconds / probe)))


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int = 5,
                     warmup: int = 1) -> dict[str, dict]:
  """`time_call` for several variants, round-robin, so they share the machine's load."""
  if repeats < 1 or warmup < 0:
    raise ValueError(f"repeats must be >= 1 and warmup >= 0, got {repeats}, {warmup}")
  for _ in range(warmup):
    for fn in fns.values():
      block(fn())
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      block(fn())
      times[name].append(time.perf_counter() - start)
  return {name: {"median": float(np.median(t)), "best": float(np.min(t)),
                 "times": [float(x) for x in t]} for name, t in times.items()}


def matmul_peak(dtype: str = "float32", size: int = 4096, repeats: int = 5) -> float:
  """FLOP/s of the best of `repeats` [size, size] @ [size, size] matmuls in JAX."""
  import jax
  import jax.numpy as jnp
  if dtype not in ("float32", "bfloat16"):
    raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  keys = jax.random.split(jax.random.PRNGKey(0), 2)
  a = jax.random.normal(keys[0], (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(keys[1], (size, size), jnp.float32).astype(dtype)
  mm = jax.jit(jnp.matmul)
  timing = time_call(lambda: mm(a, b), repeats=repeats, warmup=1)
  return 2.0 * size ** 3 / timing["best"]


# ----------------------------------------------------------------------------- machine


def load_average() -> Optional[list[float]]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def machine_info() -> dict:
  """Where a benchmark ran: platform, cores, load, JAX devices and versions."""
  import jax
  info = {"platform": platform.platform(), "processor": _cpu_model(),
          "cpu_count": os.cpu_count(), "load_average_1_5_15": load_average(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()],
          "device_kind": jax.devices()[0].device_kind,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
  torch = _torch_if_imported()
  if torch is not None:
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
  try:
    from jaxthesis import _runtime
    info["malloc"] = _runtime.allocator_mode()
  except ImportError:
    pass
  return info


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor()


def loaded_note(info: Optional[dict] = None) -> str:
  """One line saying how busy the machine was (load average over its cores)."""
  info = info or machine_info()
  load, cores = info.get("load_average_1_5_15"), info.get("cpu_count") or 1
  if not load:
    return "load average unknown"
  state = "LOADED (other jobs share the cores)" if load[0] > 0.75 * cores else "quiet"
  return f"load average {load[0]:.1f} on {cores} cores: {state}"


# ------------------------------------------------------------------------------- torch


def _torch_if_imported():
  import sys
  return sys.modules.get("torch")


def import_torch() -> tuple[Any, Optional[str]]:
  """`(torch, None)`, or `(None, reason)` when torch is not installed."""
  try:
    import torch
  except ImportError as error:
    return None, (f"PyTorch not installed ({error}); pip install 'jaxthesis[torch]' "
                  "(torch==2.13.0, pyro-ppl) for the reference")
  return torch, None


def torch_device(torch, jax_backend: Optional[str] = None) -> tuple[str, Optional[str]]:
  """The torch device matching JAX's backend, and a note when they cannot match.

  JAX on a GPU wants torch on CUDA ("the same device"); with a CPU-only torch build the
  reference runs on the CPU and the note says so, so its ratio is not a same-device one.
  """
  import jax
  backend = jax_backend or jax.default_backend()
  if backend == "cpu":
    return "cpu", None
  if torch.cuda.is_available():
    return "cuda", None
  return "cpu", (f"torch {torch.__version__} has no CUDA here; the PyTorch reference ran on "
                 f"the CPU, so its ratio is not against the same device")


# ----------------------------------------------------------------------- table and JSON


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table with a header rule, columns padded to their widest cell."""
  cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
  lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def summary_row(name: str, seconds: float, *, unit: str = "step", flops: Optional[float] = None,
                torch_seconds: Optional[float] = None, note: str = "") -> dict:
  """One line of the device suite's table.

  Args:
    name: the workload, e.g. "V-REx CMNIST, 10 restarts x 501 steps".
    seconds: seconds per `unit` of the jaxthesis run.
    unit: "step" or "run".
    flops: model FLOPs per `unit` (None where not counted).
    torch_seconds: seconds per `unit` of the PyTorch reference (None where not run).
    note: why the reference is missing; required where `torch_seconds` is None.
  """
  if not seconds > 0:
    raise ValueError(f"seconds must be > 0, got {seconds!r}")
  if unit not in ("step", "run"):
    raise ValueError(f"unit must be 'step' or 'run', got {unit!r}")
  if torch_seconds is None and not note:
    raise ValueError(f"note must say why there is no PyTorch reference for {name!r}")
  return {"name": name, "unit": unit, "seconds": float(seconds),
          "flops": None if flops is None else float(flops),
          "flops_per_second": None if flops is None else float(flops) / seconds,
          "torch_seconds": None if torch_seconds is None else float(torch_seconds),
          "speedup_vs_torch": None if torch_seconds is None else float(torch_seconds) / seconds,
          "note": note}


def summary_table(rows: Sequence[Mapping[str, Any]], peaks: Optional[Mapping[str, float]] = None,
                  source: Optional[Sequence[str]] = None) -> str:
  """The suite's table: ms per unit, GFLOP/s, fraction of fp32/bf16 peak, vs PyTorch."""
  peaks = peaks or {}
  headers = ["benchmark", "workload", "ms / unit", "GFLOP/s", "of fp32 peak",
             "of bf16 peak", "PyTorch ms", "vs PyTorch"]
  table = []
  for i, row in enumerate(rows):
    rate = row.get("flops_per_second")
    frac = lambda key: (f"{rate / peaks[key]:.0%}" if rate and peaks.get(key) else "-")
    torch_s = row.get("torch_seconds")
    table.append([source[i] if source else "", row["name"],
                  f"{1e3 * row['seconds']:.3g} /{row['unit']}",
                  f"{rate / 1e9:.1f}" if rate else "-", frac("float32"), frac("bfloat16"),
                  f"{1e3 * torch_s:.3g}" if torch_s else "-",
                  f"{row['speedup_vs_torch']:.2f}x" if row.get("speedup_vs_torch") else
                  (row.get("note") or "-")[:60]])
  return format_table(headers, table)


def write_json(results: Mapping[str, Any], out: str, name: str) -> str:
  """Writes `out/name.json` with the machine's facts added; returns the path."""
  os.makedirs(out, exist_ok=True)
  payload = dict(results)
  payload.setdefault("benchmark", name)
  payload.setdefault("machine", machine_info())
  path = os.path.join(out, name + ".json")
  with open(path, "w") as f:
    json.dump(payload, f, indent=2, default=_json_default)
  return path


def _json_default(value: Any):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, np.ndarray):
    return value.tolist()
  return str(value)


# -------------------------------------------------------------------------------- plots


def bar_plot(path: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *,
             ylabel: str, title: str = "", log: bool = False,
             annotations: Optional[Sequence[str]] = None) -> str:
  """Grouped bars, one group per label and one bar per series; writes `path`."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  x = np.arange(len(labels))
  width = 0.8 / max(1, len(series))
  fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(labels) + 2), 3.4))
  for i, (name, values) in enumerate(series.items()):
    ax.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
  if annotations:
    tops = np.nanmax(np.array([list(v) for v in series.values()], float), axis=0)
    for i, text in enumerate(annotations):
      ax.text(i, tops[i] * (1.15 if log else 1.03), text, ha="center", fontsize=8)
  if log:
    ax.set_yscale("log")
  ax.set_xticks(x, labels, fontsize=8)
  ax.set_ylabel(ylabel)
  ax.set_title(title, fontsize=9)
  if len(series) > 1:
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------------- CLI


def add_common_args(parser: argparse.ArgumentParser, default_out: str = RESULTS) -> None:
  parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
  parser.add_argument("--out", default=default_out, help="folder for the JSON and the plot")
