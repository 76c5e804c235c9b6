"""jaxthesis/_runtime.py: the allocator setting the package applies for XLA:CPU temporaries.

The effect is measured as page faults, not time: a compiled step whose temporaries
exceed glibc's mmap threshold (41 MB here) faults its block in afresh on every call under
glibc's default setting, and reuses the heap under the package's. Each check runs in its
own process so that the allocator starts from the state the package leaves it in.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from jaxthesis import _runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAULTS_SCRIPT = textwrap.dedent("""
    import json, resource
    import jax, jax.numpy as jnp
    from jaxthesis import _runtime
    mode_at_import = _runtime.allocator_mode()
    x = jnp.ones((10000, 16))
    w = jnp.full((16, 1024), 0.01)
    step = jax.jit(lambda x, w: jnp.tanh(x @ w).T @ x)  # a [10000, 1024] temporary
    step(x, w).block_until_ready()
    faults = {"default": 0, "heap": 0}
    for _ in range(3):
      for mode in ("default", "heap"):
        assert _runtime.set_allocator(mode)
        step(x, w).block_until_ready()  # the first call after a switch settles the heap
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
          step(x, w).block_until_ready()
        faults[mode] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print("FAULTS " + json.dumps({"mode_at_import": mode_at_import, **faults}))
""")


def run_python(code, **env):
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu", **env})
  return out


@pytest.mark.skipif(_runtime._libc() is None, reason="needs glibc")
def test_heap_setting_stops_the_per_call_page_faults():
  # Before M_ARENA_MAX = 1 joined the heap setting, XLA's threads allocated from arenas of
  # their own that the other two settings do not reach, and the counts varied from run to
  # run (more faults than the default in 2 of 5 runs); with it, 3 runs here gave
  # 122,523 / 29,374, 127,539 / 18,746 and 127,540 / 18,747 (default / heap).
  out = run_python(FAULTS_SCRIPT)
  assert out.returncode == 0, out.stderr[-2000:]
  faults = json.loads(out.stdout.split("FAULTS ")[-1])
  assert faults["mode_at_import"] == "heap"  # importing jaxthesis applied it
  print(f"page faults over 12 calls: glibc default {faults['default']:,}, heap "
        f"{faults['heap']:,} ({faults['default'] / max(faults['heap'], 1):.1f}x fewer)")
  # 12 calls map and fault in ~41 MB each under glibc's default (up to ~10,000 pages of
  # 4 KiB per call; fewer where the kernel backs the block with huge pages); from the heap
  # they reuse the pages of the previous call.
  assert faults["default"] > 12 * 200, faults
  assert faults["heap"] < faults["default"] / 2, faults


@pytest.mark.skipif(_runtime._libc() is None, reason="needs glibc")
def test_opt_out_and_bad_values_are_named():
  out = run_python("import jaxthesis, jaxthesis._runtime as r; print(r.allocator_mode())",
                   JAXTHESIS_MALLOC="default")
  assert out.returncode == 0 and out.stdout.strip() == "None", out.stderr[-2000:]
  out = run_python("import jaxthesis", JAXTHESIS_MALLOC="jemalloc")
  assert out.returncode != 0 and "JAXTHESIS_MALLOC must be one of" in out.stderr
  with pytest.raises(ValueError, match="mode must be one of"):
    _runtime.set_allocator("mmap")
