"""Every benchmark in benchmarks/ on whatever device JAX sees, in one command.

    python benchmarks/device_suite.py            # full size, at most --budget seconds (480)
    python benchmarks/device_suite.py --quick    # every benchmark's smoke run (CPU: < 1 min)

1. Measures the device's peak: the best of a few large matmuls in float32 and bfloat16
   (8192² on an accelerator, 4096² on a CPU, 512² with --quick).
2. Runs each benchmark script as its own process (`python benchmarks/X.py [--quick]
   --out DIR`), with what is left of the wall-time budget as its timeout: one at a time
   (each has the machine to itself), or `--jobs` at a time; `--quick` runs one more than
   there are cores at a time (`quick_jobs`), since a quick run checks that everything
   works and its times are smoke figures. Scripts that are
   not there (benchmarks written later) are skipped with a line that says so; so is one
   that fails or runs out of time, with its last error line.
3. Collects the ``"summary"`` rows every script writes into its JSON (`_bench.summary_row`)
   and prints one table: ms per step or per run, achieved GFLOP/s, the fraction of the
   measured fp32 and bf16 peaks, and the ratio against the PyTorch reference on the same
   device (each script runs torch on CUDA when JAX runs on a GPU and torch has CUDA, and
   says so in its row where it has not, or where torch is not installed).

With `--quick` on a CPU, the scripts compile with XLA's cheap CPU settings
(`QUICK_CPU_XLA_FLAGS`, as the test suite does; unless XLA_FLAGS is set): a quick run checks
that every program compiles and runs, and about half of its time was XLA optimizing them.
Its times are smoke figures either way.

Writes DIR/device_suite.json (peaks, machine, every script's status and JSON, the rows)
and DIR/device_suite.txt (the table); DIR is benchmarks/results/device_suite[_quick].
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _bench  # noqa: E402

QUICK_CPU_XLA_FLAGS = ("--xla_backend_optimization_level=0 "
                       "--xla_llvm_disable_expensive_passes=true")

# (script, extra arguments for a full run on an accelerator / on a CPU). The order puts the
# issue's headline workloads first, so a tight budget still measures them.
# "quick" is added to --quick runs on any device.
BENCHMARKS = (
    ("rex_cmnist_speed.py", {"accelerator": [], "cpu": ["--no-flag-probes"], "quick": []}),
    ("naf_speed.py", {"accelerator": ["--allocator", "heap"], "cpu": [],
                      "quick": ["--allocator", "heap"]}),
    ("bhn_speed.py", {"accelerator": [], "cpu": [], "quick": []}),
    ("memorization_speed.py", {"accelerator": [], "cpu": [], "quick": []}),
    ("sharding_speed.py", {"accelerator": [], "cpu": [], "quick": []}),
)


def quick_jobs() -> int:
  """Scripts a --quick run starts at a time: one more than there are cores. A quick script
  is mostly single-threaded XLA compilation, start-up and small steps; two at a time kept
  about 1.6 of 2 cores busy, three kept both (the quick suite took 61-62 s and 53 s on one
  2-core machine)."""
  return (os.cpu_count() or 1) + 1


def _command(script: str, extra: list[str], out: str, quick: bool) -> list[str]:
  return ([sys.executable, os.path.join(HERE, script), "--out", out]
          + (["--quick"] if quick else []) + extra)


def _skip_reason(script: str, timeout: float) -> Optional[str]:
  if not os.path.exists(os.path.join(HERE, script)):
    return f"benchmarks/{script} not found (not written yet)"
  if timeout < 5:
    return "no time left in the budget"
  return None


def _finish(cmd: list[str], out: str, returncode: int, stdout: str, stderr: str,
            seconds: float) -> dict:
  """The record of one finished script: status, wall time, output tail and its JSON."""
  record = {"command": " ".join(cmd), "seconds": seconds, "returncode": returncode,
            "stdout_tail": stdout[-4000:]}
  if returncode != 0:
    last = (stderr.strip().splitlines() or ["(no error output)"])[-1]
    return {**record, "status": "failed", "reason": last[:300]}
  record["json"] = {}
  for found in sorted(glob.glob(os.path.join(out, "*.json"))):
    with open(found) as f:
      record["json"][os.path.basename(found)] = json.load(f)
  record["status"] = "ok"
  return record


def run_benchmarks(tasks: list[tuple[str, list[str], str]], quick: bool, deadline: float,
                   jobs: int = 1) -> dict[str, dict]:
  """Runs `(script, extra arguments, out folder)` tasks, `jobs` processes at a time, in
  order; each may run until `deadline` (a `time.perf_counter()` value), then is killed.

  Returns:
    `{script: record}` (see `_finish`; skipped, timed-out and failed scripts say why).
  """
  records, pending, running = {}, list(tasks), []
  while pending or running:
    while pending and len(running) < jobs:
      script, extra, out = pending.pop(0)
      left = deadline - time.perf_counter()
      reason = _skip_reason(script, left)
      if reason is not None:
        records[script] = {"status": "skipped", "reason": reason}
        continue
      os.makedirs(out, exist_ok=True)
      cmd = _command(script, extra, out, quick)
      logs = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
      proc = subprocess.Popen(cmd, stdout=logs[0], stderr=logs[1], text=True, cwd=HERE)
      running.append((script, cmd, out, proc, logs, time.perf_counter()))
    time.sleep(0.05)
    still = []
    for script, cmd, out, proc, logs, started in running:
      timed_out = proc.poll() is None and time.perf_counter() > deadline
      if timed_out:
        proc.kill()
        proc.wait()
      if proc.poll() is None:
        still.append((script, cmd, out, proc, logs, started))
        continue
      texts = []
      for log in logs:
        log.seek(0)
        texts.append(log.read())
        log.close()
      seconds = time.perf_counter() - started
      if timed_out:
        records[script] = {"status": "timed out", "command": " ".join(cmd),
                           "seconds": seconds, "reason": f"timed out after {seconds:.0f} s",
                           "stdout_tail": texts[0][-2000:]}
      else:
        records[script] = _finish(cmd, out, proc.returncode, texts[0], texts[1], seconds)
    running = still
  return records


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true",
                      help="every benchmark's --quick run (under a minute on a CPU)")
  parser.add_argument("--out", default=None,
                      help="folder (default benchmarks/results/device_suite[_quick])")
  parser.add_argument("--budget", type=float, default=480.0,
                      help="wall-time budget in seconds for the whole suite (default 480)")
  parser.add_argument("--only", default=None,
                      help="comma-separated script names to run (default: all)")
  parser.add_argument("--jobs", type=int, default=None,
                      help="scripts run at a time (default: 1, so that each has the machine "
                           "to itself; with --quick, one more than there are cores, since a "
                           "quick run checks that everything works and its times are smoke "
                           "figures)")
  args = parser.parse_args(argv)
  if args.budget <= 0:
    parser.error(f"--budget must be > 0, got {args.budget}")
  if args.jobs is not None and args.jobs < 1:
    parser.error(f"--jobs must be >= 1, got {args.jobs}")
  jobs = args.jobs or (quick_jobs() if args.quick else 1)
  known = [name for name, _ in BENCHMARKS]
  only = None if args.only is None else [s if s.endswith(".py") else s + ".py"
                                         for s in args.only.split(",")]
  if only is not None and not set(only) <= set(known):
    parser.error(f"--only names unknown scripts {sorted(set(only) - set(known))}; "
                 f"known: {known}")
  out = args.out or os.path.join(_bench.RESULTS,
                                 "device_suite_quick" if args.quick else "device_suite")
  os.makedirs(out, exist_ok=True)
  start = time.perf_counter()

  import jax
  backend = jax.default_backend()
  kind = "cpu" if backend == "cpu" else "accelerator"
  size = 512 if args.quick else (4096 if kind == "cpu" else 8192)
  peaks = {dtype: _bench.matmul_peak(dtype, size=size, repeats=2 if args.quick else 5)
           for dtype in ("float32", "bfloat16")}
  torch, missing = _bench.import_torch()
  torch_line = (missing if torch is None else
                f"torch {torch.__version__}, reference device "
                f"{_bench.torch_device(torch, backend)[0]}"
                + (f" ({_bench.torch_device(torch, backend)[1]})"
                   if _bench.torch_device(torch, backend)[1] else ""))

  xla_flags = os.environ.get("XLA_FLAGS")
  if args.quick and kind == "cpu" and xla_flags is None:
    xla_flags = os.environ["XLA_FLAGS"] = QUICK_CPU_XLA_FLAGS  # the scripts' processes'
  tasks = [(script, extra[kind] + (extra["quick"] if args.quick else []),
            os.path.join(out, script[:-3]))
           for script, extra in BENCHMARKS if only is None or script in only]
  statuses = run_benchmarks(tasks, args.quick, start + args.budget, jobs)
  rows, sources, lines = [], [], []
  for script, _, _ in tasks:
    record = statuses[script]
    if record["status"] != "ok":
      lines.append(f"{script}: {record['status']}: {record['reason']}")
      continue
    found = [(name, row) for name, payload in record["json"].items()
             for row in payload.get("summary", [])]
    if not found:
      lines.append(f"{script}: ran in {record['seconds']:.0f} s, but its JSON has no "
                   f"'summary' rows (see {out}/{script[:-3]})")
    for _, row in found:
      rows.append(row)
      sources.append(script[:-3])
    lines.append(f"{script}: ok in {record['seconds']:.0f} s")

  wall = time.perf_counter() - start
  machine = _bench.machine_info()
  header = (f"device suite{' (QUICK)' if args.quick else ''}: {machine['device_kind']} "
            f"({backend}, {len(jax.devices())} device(s)); {machine['processor']}, "
            f"{machine['cpu_count']} cores, {_bench.loaded_note(machine)}\n"
            f"measured peak ({size}² matmul): float32 {peaks['float32'] / 1e9:.0f} GFLOP/s, "
            f"bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s; PyTorch: {torch_line}"
            + (f"\n{jobs} scripts at a time: they share the machine, so these times are "
               "smoke figures, not measurements" if jobs > 1 else "")
            + (f"\nscripts run with XLA_FLAGS={xla_flags}" if xla_flags else ""))
  table = _bench.summary_table(rows, peaks, sources)
  text = "\n".join([header, table, *lines, f"suite wall time {wall:.0f} s "
                    f"(budget {args.budget:.0f} s)"])
  print(text)
  results = {"quick": bool(args.quick), "backend": backend, "peaks_flops": peaks,
             "peak_matmul_size": size, "torch": torch_line, "wall_seconds": wall,
             "budget_seconds": args.budget, "jobs": jobs, "xla_flags": xla_flags,
             "rows": rows, "row_sources": sources,
             "benchmarks": statuses}
  path = _bench.write_json(results, out, "device_suite")
  with open(os.path.join(out, "device_suite.txt"), "w") as f:
    f.write(text + "\n")
  print(f"wrote {path} and device_suite.txt")
  return 0


if __name__ == "__main__":
  sys.exit(main())
