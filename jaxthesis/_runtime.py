"""Process setup that the package applies once, when it is imported.

The allocator for XLA:CPU's temporaries. A compiled XLA:CPU program allocates all of
its temporaries as one block per call (about 65 MB for a DSF training step at D = 64,
batch 1024). glibc's malloc serves any block above its mmap threshold (at most 32 MiB)
with a fresh `mmap` and unmaps it on `free`, so every call faults the whole block in
again, page by page; on a virtual machine that costs tens of milliseconds per step, as
much as the step's arithmetic (benchmarks/naf_speed.py measures both settings side by
side). With ``mallopt(M_MMAP_MAX, 0)`` large blocks come from the heap instead, and with
a high ``M_TRIM_THRESHOLD`` the freed memory stays in the process for the next call.
Both settings act on glibc's main arena; XLA's worker threads, though, each allocate from
an arena of their own (up to 8 per core), whose memory glibc maps and returns to the
kernel in sub-heaps of at most 64 MB, so most of the faults remained (measured: 17,000
faults per D = 64 DSF step with the first two settings alone). ``mallopt(M_ARENA_MAX, 1)``
puts the threads that start after the import (XLA's pools start with the first
computation) on the main arena, where the two settings hold: 4 to 7 times fewer faults
and, on a 2-core VM, a D = 64 DSF step about 1.7x faster than under glibc's default setting
(`benchmarks/naf_speed.py`, both settings in one run). The costs: up to `TRIM_THRESHOLD`
bytes of freed memory stay mapped in the process, and threads share one allocator lock
(XLA:CPU's temporaries are few large blocks per call, so it is rarely contended).

Set the environment variable ``JAXTHESIS_MALLOC=default`` (before importing jaxthesis)
to leave the process's allocator as it was. Elsewhere than glibc (macOS, musl) nothing is
changed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Optional

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_GLIBC_DEFAULT_ARENA_MAX = 0  # 0: glibc's own limit, 8 arenas per core
_GLIBC_DEFAULT_MMAP_MAX = 65536
_GLIBC_DEFAULT_TRIM_THRESHOLD = 128 * 1024

TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of freed heap for the next call
ALLOCATOR_MODES = ("heap", "default")
ENV_VAR = "JAXTHESIS_MALLOC"

_state = {"mode": None}


def _libc() -> Optional[ctypes.CDLL]:
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
  except OSError:
    return None
  return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def set_allocator(mode: str) -> bool:
  """Switches glibc's malloc between ``"heap"`` (large blocks from the recycled heap) and
  ``"default"`` (glibc's own settings: large blocks mapped and unmapped per call).

  Returns:
    True if glibc accepted the setting, False where the C library is not glibc.
  """
  if mode not in ALLOCATOR_MODES:
    raise ValueError(f"mode must be one of {ALLOCATOR_MODES}, got {mode!r}")
  libc = _libc()
  if libc is None:
    return False
  if mode == "heap":
    ok = (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
          and libc.mallopt(_M_ARENA_MAX, 1))
  else:  # threads already on the main arena stay there (glibc never moves them)
    ok = (libc.mallopt(_M_MMAP_MAX, _GLIBC_DEFAULT_MMAP_MAX)
          and libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_TRIM_THRESHOLD)
          and libc.mallopt(_M_ARENA_MAX, _GLIBC_DEFAULT_ARENA_MAX))
  if ok:
    _state["mode"] = mode
  return bool(ok)


def allocator_mode() -> Optional[str]:
  """``"heap"`` or ``"default"`` as last set by this module; None if it never set one."""
  return _state["mode"]


def configure_process() -> Optional[str]:
  """Applies the package's process setup (once; later calls do nothing).

  Returns:
    the allocator mode in force ("heap", or "default" when ``JAXTHESIS_MALLOC=default``),
    None where the C library is not glibc.
  """
  if _state.get("configured"):
    return _state["mode"]
  _state["configured"] = True
  mode = os.environ.get(ENV_VAR, "heap").strip().lower() or "heap"
  if mode not in ALLOCATOR_MODES:
    raise ValueError(f"{ENV_VAR} must be one of {ALLOCATOR_MODES}, got {mode!r}")
  if mode == "default":
    return "default"  # leave the allocator alone entirely
  return mode if set_allocator(mode) else None
