"""benchmarks/memorization_speed.py --quick end to end, with and without PyTorch.

The script runs in a subprocess on the CPU; its JSON must hold the summary rows of the
device suite (ratios computed from the row's own seconds, a note where PyTorch is
missing) and the checks that the variants computed the same thing.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "memorization_speed.py")


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
  """A persistent XLA cache both runs share: the second compiles nothing (halves the time)."""
  return str(tmp_path_factory.mktemp("xla_cache"))


def run_quick(out, cache, *, without_torch: bool):
  args = [SCRIPT, "--quick", "--repeats", "1", "--out", str(out)]
  if without_torch:  # as on a CI machine without torch: `import torch` raises ImportError
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            f"sys.argv = {args!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')")
    cmd = [sys.executable, "-c", code]
  else:
    cmd = [sys.executable] + args
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                        env={**os.environ, "JAX_PLATFORMS": "cpu",
                             "JAX_COMPILATION_CACHE_DIR": cache,
                             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(out / "memorization_speed_quick.json") as f:
    return json.load(f), proc.stdout


def check_rows(results):
  rows = results["summary"]
  # CSR, then the difficulty study vmapped and as a Python loop (quick: no layout row).
  assert len(rows) == 3
  assert rows[0]["name"].startswith("CSR") and "vmapped" in rows[1]["name"]
  assert "loop" in rows[2]["name"]
  seconds = [results["csr"]["seconds"]["jaxthesis"], results["difficulty"]["seconds"]["vmapped"],
             results["difficulty"]["seconds"]["loop"]]
  for row, s in zip(rows, seconds):
    assert row["unit"] == "run" and row["seconds"] == pytest.approx(s)
    np.testing.assert_allclose(row["flops_per_second"], row["flops"] / row["seconds"])
  return rows


def test_quick_run_with_torch(tmp_path, compile_cache):
  pytest.importorskip("torch")
  results, stdout = run_quick(tmp_path, compile_cache, without_torch=False)
  assert results["quick"] and results["machine"]["backend"] == "cpu"
  for row, torch_s in zip(check_rows(results),
                          [results["csr"]["seconds"]["torch"]]
                          + [results["difficulty"]["seconds"]["torch"]] * 2):
    assert row["torch_seconds"] == pytest.approx(torch_s)
    np.testing.assert_allclose(row["speedup_vs_torch"], row["torch_seconds"] / row["seconds"])
  csr, diff = results["csr"], results["difficulty"]
  # Same network, same Algorithm 1: CSRs within sampling noise; deterministic search equal.
  assert csr["check"]["csr_gap"] <= csr["check"]["csr_tolerance"]
  assert csr["check"]["deterministic_agreement"] >= 0.98
  assert abs(csr["csr"]["jaxthesis"] - csr["csr"]["torch"]) == pytest.approx(
      csr["check"]["csr_gap"])
  assert diff["check"]["jaxthesis_variants_equal"] and diff["check"]["torch_same"]
  assert results["checks"] == {"csr_same": True, "difficulty_same": True}
  assert results["torch_threads"] == 1  # --quick: torch on one thread
  assert "vs torch" in stdout and os.path.getsize(tmp_path / "memorization_speed_quick.png")


def test_quick_run_without_torch(tmp_path, compile_cache):
  results, stdout = run_quick(tmp_path, compile_cache, without_torch=True)
  assert "PyTorch not installed" in stdout
  for row in check_rows(results):
    assert row["torch_seconds"] is None and row["speedup_vs_torch"] is None
    assert "PyTorch not installed" in row["note"]
  assert "torch" not in results["csr"]["seconds"]
  assert "torch" not in results["difficulty"]["seconds"]
  assert results["checks"]["csr_same"] is None  # nothing to compare with
  assert results["difficulty"]["check"]["jaxthesis_variants_equal"]
  assert results["checks"]["difficulty_same"]
  assert os.path.getsize(tmp_path / "memorization_speed_quick.png") > 0
