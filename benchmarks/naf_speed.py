"""Speed of one DSF training step: jaxthesis vs Pyro's NeuralAutoregressive, side by side.

One step = the MAF-direction negative log-likelihood of a batch under a one-layer deep
sigmoidal flow (eq. 9.8 of the thesis; 16 sigmoid units, a MADE conditioner with two hidden
layers of the same width in both libraries), its gradient, and an Adam update. jaxthesis
runs it as one jitted function; Pyro (benchmarks/pyro_naf.py) in PyTorch eager. Both see
the same batch, D, hidden sizes and DSF width. Cases: D in {2, 8, 64} x batch in {64, 1024}
(hidden 64, 64, 256 for D = 2, 8, 64). Also: steps/s of a 2,000-step 2-D toy training run
(a 2 x 2 Gaussian grid, a fresh batch of 64 every step), where jaxthesis runs every step in
one `lax.scan`.

flowjax is not included as a JAX peer: it installs beside our pins, but has no sigmoidal
(DSF) transformer, so it has no equivalent of this workload.

    python benchmarks/naf_speed.py            # the full comparison (minutes on a CPU)
    python benchmarks/naf_speed.py --quick    # a smoke run: D in {2, 8}, batch 64
    python benchmarks/naf_speed.py --torch-threads 1   # if other jobs share the cores
    python benchmarks/naf_speed.py --malloc-heap-only  # see below

Memory: XLA allocates all temporaries of a compiled step as one block (about 65 MB at
D = 64, batch 1024). glibc's malloc maps any block over 32 MiB freshly from the kernel and
unmaps it on free, so every call page-faults that block in again, which on a virtual
machine costs tens of milliseconds per step; PyTorch's separately allocated tensors stay
under that size and are recycled. `--malloc-heap-only` calls glibc's
`mallopt(M_MMAP_MAX, 0)` (and keeps freed memory with `M_TRIM_THRESHOLD`) before anything
runs, so both libraries allocate from the recycled heap; the default leaves the
process's allocator alone. The JSON records which was used.

Prints a table and writes benchmarks/results/naf_speed.{json,png}. Targets (issue 4):
>= 5x Pyro on the 2-D batch-64 case, >= 1.8x on the largest.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from jaxthesis import flows  # noqa: E402
from jaxthesis.experiments._common import format_table  # noqa: E402

import pyro_naf  # noqa: E402

HIDDEN = {2: 64, 8: 64, 64: 256}
DSF_UNITS = 16
LEARNING_RATE = 1e-3


def make_jax_step(num_dims: int, hidden: int):
  """`(params, opt_state, x) -> (params, opt_state, loss)`, jitted, plus initial state."""
  flow = flows.autoregressive_flow(num_dims, "dsf", transformer_kwargs={"hidden_units": DSF_UNITS},
                                   hidden_sizes=(hidden, hidden), num_layers=1, direction="maf")
  optimizer = optax.adam(LEARNING_RATE)

  def loss_fn(params, x):
    return -flow.distribution(params).log_prob(x).mean()

  def step(params, opt_state, x):
    loss, grads = jax.value_and_grad(loss_fn)(params, x)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = flow.init(jax.random.PRNGKey(0))
  return flow, step, params, optimizer.init(params)


def time_jax_step(num_dims: int, hidden: int, batch: np.ndarray, repeats: int,
                  warmup: int = 3) -> dict:
  _, step, params, opt_state = make_jax_step(num_dims, hidden)
  step = jax.jit(step, donate_argnums=(0, 1))
  x = jnp.asarray(batch)
  start = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, x)
  loss.block_until_ready()
  compile_seconds = time.perf_counter() - start
  for _ in range(warmup):
    params, opt_state, loss = step(params, opt_state, x)
  loss.block_until_ready()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, x)
    loss.block_until_ready()
    times.append(time.perf_counter() - start)
  return {"seconds_per_step": float(np.median(times)), "compile_seconds": compile_seconds}


def jax_toy_training(num_steps: int, batch_size: int, hidden: int) -> dict:
  """The 2-D toy fit as one compiled `lax.scan`; timed with and without compilation."""
  _, step, params, opt_state = make_jax_step(2, hidden)
  centers = jnp.array([[-2.0, -2.0], [-2.0, 2.0], [2.0, -2.0], [2.0, 2.0]])

  @jax.jit
  def train(params, opt_state, key):
    def body(carry, k):
      params, opt_state = carry
      k1, k2 = jax.random.split(k)
      x = centers[jax.random.randint(k1, (batch_size,), 0, 4)] + 0.5 * jax.random.normal(
          k2, (batch_size, 2))
      params, opt_state, loss = step(params, opt_state, x)
      return (params, opt_state), loss
    _, losses = jax.lax.scan(body, (params, opt_state), jax.random.split(key, num_steps))
    return losses

  start = time.perf_counter()
  losses = train(params, opt_state, jax.random.PRNGKey(0)).block_until_ready()
  with_compile = time.perf_counter() - start
  start = time.perf_counter()
  losses = train(params, opt_state, jax.random.PRNGKey(0)).block_until_ready()
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "seconds_with_compile": with_compile,
          "steps_per_second": num_steps / seconds,
          "final_loss": float(np.mean(np.asarray(losses)[-50:]))}


def use_heap_only_malloc() -> None:
  """glibc: no mmap-backed blocks, no returning freed memory to the kernel."""
  import ctypes
  libc = ctypes.CDLL("libc.so.6")
  m_trim_threshold, m_mmap_max = -1, -4  # from glibc's <malloc.h>
  if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 1 << 30)):
    raise RuntimeError("mallopt failed: --malloc-heap-only needs glibc")


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cases = results["cases"]
  labels = [f"D={c['num_dims']}\nB={c['batch_size']}" for c in cases]
  x = np.arange(len(cases))
  fig, ax = plt.subplots(figsize=(1.4 * len(cases) + 2, 3.4))
  ax.bar(x - 0.2, [1e3 * c["jaxthesis_seconds"] for c in cases], 0.4, label="jaxthesis (jit)")
  ax.bar(x + 0.2, [1e3 * c["pyro_seconds"] for c in cases], 0.4, label="Pyro (eager)")
  for i, c in enumerate(cases):
    ax.text(i, 1e3 * max(c["jaxthesis_seconds"], c["pyro_seconds"]) * 1.15,
            f"{c['speedup']:.1f}x", ha="center", fontsize=8)
  ax.set_yscale("log")
  ax.set_xticks(x, labels, fontsize=8)
  ax.set_ylabel("ms per training step")
  title = ("DSF training step" + (" (QUICK)" if results["quick"] else "")
           + (", heap-only malloc" if results["environment"]["malloc_heap_only"] else ""))
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="D in {2, 8}, batch 64, few steps")
  parser.add_argument("--out", default=os.path.join(HERE, "results"))
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's choice). On a machine "
                           "whose cores are busy with other work, PyTorch's spinning thread "
                           "pool can slow a small step 100x; 1 gives Pyro its fair number")
  parser.add_argument("--malloc-heap-only", action="store_true",
                      help="glibc mallopt: serve large blocks from the heap and keep freed "
                           "memory, instead of mapping and page-faulting them on every call "
                           "(see the module docstring); applies to both libraries")
  args = parser.parse_args(argv)
  if args.malloc_heap_only:
    use_heap_only_malloc()
  import torch
  if args.torch_threads is not None:
    if args.torch_threads < 1:
      parser.error(f"--torch-threads must be >= 1, got {args.torch_threads}")
    torch.set_num_threads(args.torch_threads)

  dims = (2, 8) if args.quick else (2, 8, 64)
  batches = (64,) if args.quick else (64, 1024)
  repeats = 10 if args.quick else 50
  toy_steps = 200 if args.quick else 2000
  rng = np.random.default_rng(0)

  cases = []
  for d in dims:
    for b in batches:
      batch = rng.normal(size=(b, d)).astype(np.float32)
      ours = time_jax_step(d, HIDDEN[d], batch, repeats)
      theirs = pyro_naf.time_step(d, HIDDEN[d], batch, repeats)
      cases.append({"num_dims": d, "batch_size": b, "hidden": [HIDDEN[d]] * 2,
                    "dsf_units": DSF_UNITS, "jaxthesis_seconds": ours["seconds_per_step"],
                    "jaxthesis_compile_seconds": ours["compile_seconds"],
                    "pyro_seconds": theirs["seconds_per_step"],
                    "speedup": theirs["seconds_per_step"] / ours["seconds_per_step"]})
  toy_ours = jax_toy_training(toy_steps, 64, HIDDEN[2])
  toy_theirs = pyro_naf.toy_training(toy_steps, 64, HIDDEN[2])
  results = {
      "quick": bool(args.quick), "cases": cases,
      "toy": {"num_steps": toy_steps, "batch_size": 64, "jaxthesis": toy_ours,
              "pyro": toy_theirs,
              "speedup": toy_ours["steps_per_second"] / toy_theirs["steps_per_second"]},
      "targets": {"small_case_min_speedup": 5.0, "largest_case_min_speedup": 1.8},
      "environment": {"jax": jax.__version__, "torch": torch.__version__,
                      "torch_threads": torch.get_num_threads(),
                      "malloc_heap_only": bool(args.malloc_heap_only),
                      "devices": [str(d) for d in jax.devices()],
                      "cpu_count": os.cpu_count(), "platform": platform.platform()},
  }
  small, largest = cases[0], cases[-1]
  results["targets"]["small_case_met"] = bool(small["speedup"] >= 5.0)
  results["targets"]["largest_case_met"] = bool(largest["speedup"] >= 1.8)

  rows = [[c["num_dims"], c["batch_size"], f"{c['hidden'][0]}x2",
           f"{1e3 * c['jaxthesis_seconds']:.3f}", f"{1e3 * c['pyro_seconds']:.3f}",
           f"{c['speedup']:.1f}x"] for c in cases]
  print(format_table(("D", "batch", "MADE", "jaxthesis ms/step", "Pyro ms/step",
                      "speedup"), rows))
  print(f"toy 2-D run, {toy_steps} steps of batch 64: jaxthesis "
        f"{toy_ours['steps_per_second']:.0f} steps/s "
        f"({toy_ours['seconds_with_compile']:.1f} s with compilation), Pyro "
        f"{toy_theirs['steps_per_second']:.0f} steps/s -> {results['toy']['speedup']:.1f}x")
  print(f"targets: small case (D={small['num_dims']}, B={small['batch_size']}) "
        f"{small['speedup']:.1f}x vs >= 5x: {'met' if results['targets']['small_case_met'] else 'NOT met'}; "
        f"largest (D={largest['num_dims']}, B={largest['batch_size']}) "
        f"{largest['speedup']:.1f}x vs >= 1.8x: "
        f"{'met' if results['targets']['largest_case_met'] else 'NOT met'}"
        + (" (QUICK run: largest case not measured)" if args.quick else ""))
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "naf_speed.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot(results, os.path.join(args.out, "naf_speed.png"))
  print(f"wrote {os.path.join(args.out, 'naf_speed.json')} and naf_speed.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
