"""benchmarks/_bench.py's arithmetic and benchmarks/device_suite.py --quick end to end.

The suite runs on the CPU in quick mode as a subprocess; its JSON must hold the measured
peaks, one row per case of each benchmark that exists (REx CMNIST, NAF, the sharding
line), the rates and ratios computed from the row's own seconds, and a skip line for
every benchmark script that is not there.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import _bench  # noqa: E402
import device_suite  # noqa: E402


def test_summary_row_rates_and_ratios():
  row = _bench.summary_row("w", 0.02, flops=4e9, torch_seconds=0.05)
  assert row["flops_per_second"] == pytest.approx(2e11)
  assert row["speedup_vs_torch"] == pytest.approx(2.5)
  table = _bench.summary_table([row], {"float32": 4e11, "bfloat16": 8e11}, ["src"])
  assert "50%" in table and "25%" in table and "2.50x" in table and "20 /step" in table
  no_torch = _bench.summary_row("w", 1.5, unit="run", note="PyTorch not installed")
  assert no_torch["speedup_vs_torch"] is None and no_torch["flops_per_second"] is None
  assert "PyTorch not installed" in _bench.summary_table([no_torch])
  with pytest.raises(ValueError, match="seconds must be > 0"):
    _bench.summary_row("w", 0.0)
  with pytest.raises(ValueError, match="unit must be"):
    _bench.summary_row("w", 1.0, unit="epoch")


def test_format_table_pads_columns():
  text = _bench.format_table(["a", "bb"], [[1, "x"], ["long", 2.5]])
  lines = text.splitlines()
  assert lines[0] == "a     bb" and lines[1] == "----  ---" and lines[3] == "long  2.5"


def test_time_interleaved_measures_each_variant():
  def sleeper(seconds):
    return lambda: time.sleep(seconds)

  timings = _bench.time_interleaved({"short": sleeper(0.002), "long": sleeper(0.02)},
                                    repeats=3, warmup=0)
  assert len(timings["short"]["times"]) == 3
  assert 0.002 <= timings["short"]["best"] <= timings["short"]["median"]
  assert timings["long"]["median"] >= 0.02
  assert timings["long"]["median"] > timings["short"]["median"]


def test_run_benchmarks_runs_jobs_at_a_time_and_kills_at_the_deadline(tmp_path):
  """Two scripts at a time: one writes its JSON and passes, one fails naming its error, one
  sleeps past the deadline and is killed; a missing script is skipped."""
  scripts = {
      "ok.py": "import json, os, sys; out = sys.argv[sys.argv.index('--out') + 1]\n"
               "json.dump({'summary': []}, open(os.path.join(out, 'ok.json'), 'w'))",
      "bad.py": "raise SystemExit('bad: no device')",
      "slow.py": "import time; time.sleep(60)",
  }
  for name, code in scripts.items():
    (tmp_path / name).write_text(code)
  tasks = [(str(tmp_path / name), [], str(tmp_path / name[:-3])) for name in scripts]
  tasks.append((str(tmp_path / "absent.py"), [], str(tmp_path / "absent")))
  start = time.perf_counter()
  records = device_suite.run_benchmarks(tasks, quick=True, deadline=start + 8, jobs=2)
  assert time.perf_counter() - start < 30
  by_name = {os.path.basename(k): v for k, v in records.items()}
  assert by_name["ok.py"]["status"] == "ok" and "ok.json" in by_name["ok.py"]["json"]
  assert by_name["bad.py"]["status"] == "failed"
  assert "bad: no device" in by_name["bad.py"]["reason"]
  assert by_name["slow.py"]["status"] == "timed out"
  assert by_name["absent.py"]["status"] == "skipped"


def test_quick_suite_runs_every_present_benchmark(tmp_path):
  out = tmp_path / "suite"
  # A generous --budget: quick mode takes under a minute on an idle 2-core CPU, but the
  # shared development machines can be many times slower (the 8-minute budget is the full
  # run's, on an accelerator).
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, os.path.join(BENCH, "device_suite.py"), "--quick",
                         "--out", str(out), "--budget", "1500"], capture_output=True,
                        text=True, timeout=1800,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  wall = time.perf_counter() - start
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "device_suite.json") as f:
    suite = json.load(f)
  assert (out / "device_suite.txt").read_text().startswith("device suite (QUICK)")
  assert suite["quick"] and suite["backend"] == "cpu"
  assert suite["peaks_flops"]["float32"] > 1e8 and suite["peaks_flops"]["bfloat16"] > 1e7
  statuses = suite["benchmarks"]
  for script, _ in device_suite.BENCHMARKS:
    present = os.path.exists(os.path.join(BENCH, script))
    assert statuses[script]["status"] == ("ok" if present else "skipped"), (
        script, statuses[script].get("reason"))
    if not present:
      assert f"{script}: skipped: benchmarks/{script} not found" in proc.stdout
  sources = suite["row_sources"]
  assert sources.count("rex_cmnist_speed") == 1
  assert sources.count("naf_speed") == 2  # quick: D in {2, 8}, batch 64
  assert sources.count("sharding_speed") == 2  # quick: 1 and 8 simulated devices
  assert suite["jobs"] == device_suite.quick_jobs() == (os.cpu_count() or 1) + 1
  # quick on a CPU: the scripts compile with XLA's cheap settings unless XLA_FLAGS is set
  assert suite["xla_flags"] == os.environ.get("XLA_FLAGS", device_suite.QUICK_CPU_XLA_FLAGS)
  for row in suite["rows"]:
    assert row["seconds"] > 0
    if row["flops"] is not None:
      np.testing.assert_allclose(row["flops_per_second"], row["flops"] / row["seconds"])
    if row["torch_seconds"] is not None:
      np.testing.assert_allclose(row["speedup_vs_torch"], row["torch_seconds"] / row["seconds"])
    else:
      assert row["note"]  # says why there is no PyTorch ratio
  # Every sharding line trains the same model on the same data: the same final loss.
  sharding = statuses["sharding_speed.py"]["json"]["sharding_speed_quick.json"]
  assert sharding["max_final_loss_spread"] < 1e-4
  assert suite["wall_seconds"] <= wall
