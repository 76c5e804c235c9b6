"""Speed of one DSF training step: jaxthesis vs Pyro's NeuralAutoregressive, side by side.

One step = the MAF-direction negative log-likelihood of a batch under a one-layer deep
sigmoidal flow (Eq. 9.8 of the thesis; 16 sigmoid units, a MADE conditioner with two hidden
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
    python benchmarks/naf_speed.py --allocator heap    # only the package's setting

Memory: XLA allocates all temporaries of a compiled step as one block (about 65 MB at
D = 64, batch 1024). glibc's malloc maps any block over 32 MiB freshly from the kernel and
unmaps it on free, so every call page-faults that block in again, which on a virtual
machine costs tens of milliseconds per step; PyTorch's separately allocated tensors stay
under that size and are recycled. Importing jaxthesis therefore switches glibc to serving
large blocks from its recycled heap (`jaxthesis/_runtime.py`; `JAXTHESIS_MALLOC=default`
opts out). By default this benchmark times every case under both settings, side by side
in one process (`_runtime.set_allocator` switches between them; the setting is
process-wide, so Pyro runs under the same one); the headline ratio is the package's
setting ("heap").

Also, per case, the step of the default DSF (onto R, with the linear tail) against the
thesis's bounded form (`surjective=False`), alternated in one process: the tail's cost.

Prints a table and writes benchmarks/results/naf_speed.{json,png}. Targets (issue 12):
>= 5x Pyro on the 2-D batch-64 case, >= 1.5x on the largest (D = 64, batch 1024);
(issue 11) the linear tail costs at most 10 % of a step.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _bench  # noqa: E402
from jaxthesis import _runtime, flows  # noqa: E402

import pyro_naf  # noqa: E402

HIDDEN = {2: 64, 8: 64, 64: 256}
DSF_UNITS = 16
LEARNING_RATE = 1e-3


_STEPS = {}


def make_jax_step(num_dims: int, hidden: int, surjective: bool = True):
  """`(params, opt_state, x) -> (params, opt_state, loss)`, plus initial state.

  `surjective=False` is the thesis's bounded DSF (Eq. 9.8 exactly), the form before the
  linear tail; the default is the library's (onto R). Built once per configuration (a
  flow's jitted `init` takes about a second to compile); every call returns a fresh copy
  of the initial state, since the timed steps donate theirs.
  """
  config = (num_dims, hidden, surjective)
  if config not in _STEPS:
    _STEPS[config] = _build_jax_step(num_dims, hidden, surjective)
  flow, step, params, opt_state = _STEPS[config]
  fresh = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)
  return flow, step, fresh(params), fresh(opt_state)


def _build_jax_step(num_dims: int, hidden: int, surjective: bool):
  flow = flows.autoregressive_flow(num_dims, "dsf",
                                   transformer_kwargs={"hidden_units": DSF_UNITS,
                                                       "surjective": surjective},
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


_COMPILED = {}


def compiled_step(num_dims: int, hidden: int, batch_shape: tuple, surjective: bool = True):
  """`make_jax_step`'s step jitted with its state donated, and a fresh initial state;
  the jitted step is built once per configuration and batch shape, so the tail-cost
  comparison reuses the headline step's compilation. `fresh`: whether this call built it."""
  _, step, params, opt_state = make_jax_step(num_dims, hidden, surjective)
  config = (num_dims, hidden, surjective, tuple(batch_shape))  # one compilation each
  fresh = config not in _COMPILED
  if fresh:
    _COMPILED[config] = jax.jit(step, donate_argnums=(0, 1))
  return _COMPILED[config], params, opt_state, fresh


def time_jax_step(num_dims: int, hidden: int, batch: np.ndarray, repeats: int,
                  warmup: int = 3, seconds: float = 1.0) -> dict:
  """Median seconds per compiled step over at least `repeats` calls and about `seconds`."""
  step, params, opt_state, fresh = compiled_step(num_dims, hidden, batch.shape)
  x = jnp.asarray(batch)
  start = time.perf_counter()
  params, opt_state, loss = step(params, opt_state, x)
  loss.block_until_ready()
  compile_seconds = time.perf_counter() - start
  state = [params, opt_state]

  def call():
    state[0], state[1], loss = step(state[0], state[1], x)
    loss.block_until_ready()

  for _ in range(warmup):
    call()
  repeats = _bench.repeats_for(call, repeats, seconds)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  # The first call's time includes compiling only where this call built the step.
  return {"seconds_per_step": float(np.median(times)), "repeats": repeats,
          "compile_seconds": compile_seconds if fresh else None}


def time_tail_cost(num_dims: int, hidden: int, batch: np.ndarray, repeats: int,
                   seconds: float = 1.5) -> dict:
  """Step time of the default (surjective) DSF against the thesis's bounded form.

  The two steps alternate (`_bench.time_interleaved`), so they share the machine's load;
  the ratio is the cost of the linear tail (issue 11's target: at most 1.10). Each form
  runs at least `repeats` times and about `seconds` in all (at most 3,000 calls): a
  median of 50 sub-millisecond steps moved by +-10 % between runs.
  """
  x = jnp.asarray(batch)
  calls = {}
  for form, surjective in (("surjective", True), ("bounded", False)):
    step, params, opt_state, _ = compiled_step(num_dims, hidden, batch.shape, surjective)
    state = [params, opt_state]

    def call(step=step, state=state):
      state[0], state[1], loss = step(state[0], state[1], x)
      return loss
    calls[form] = call
  for _ in range(3):
    calls["bounded"]()
  repeats = _bench.repeats_for(calls["bounded"], repeats, seconds)
  timing = _bench.time_interleaved(calls, repeats=repeats, warmup=3)
  medians = {form: t["median"] for form, t in timing.items()}
  return {"seconds_per_step": medians, "repeats": repeats,
          "surjective_over_bounded": medians["surjective"] / medians["bounded"]}


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


def step_flops(num_dims: int, hidden: int, batch_size: int) -> float:
  """Matmul FLOPs of one step: the MADE's three dense layers (masked weights are still
  dense products), forward and backward (x3); the DSF's elementwise work is not counted."""
  out = 3 * DSF_UNITS * num_dims  # a, b, w of every sigmoid unit per dimension
  forward = 2.0 * batch_size * (num_dims * hidden + hidden * hidden + hidden * out)
  return 3 * forward


def plot(results: dict, path: str) -> None:
  cases = results["cases"]
  _bench.bar_plot(
      path, [f"D={c['num_dims']}\nB={c['batch_size']}" for c in cases],
      {"jaxthesis (jit)": [1e3 * c["jaxthesis_seconds"] for c in cases],
       # Pyro's bars are absent (NaN) where torch/pyro is not installed.
       "Pyro (eager)": [1e3 * c["pyro_seconds"] if c["pyro_seconds"] is not None
                        else float("nan") for c in cases]},
      ylabel="ms per training step", log=True,
      annotations=[f"{c['speedup']:.1f}x" if c.get("speedup") is not None else "no Pyro"
                   for c in cases],
      title="DSF training step" + (" (QUICK)" if results["quick"] else "")
      + f", malloc {results['allocator']}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _bench.add_common_args(parser)
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's choice). On a machine "
                           "whose cores are busy with other work, PyTorch's spinning thread "
                           "pool can slow a small step 100x; 1 gives Pyro its fair number")
  parser.add_argument("--allocator", choices=("both", "heap", "default"), default="both",
                      help="glibc malloc setting(s) to time (see the module docstring)")
  args = parser.parse_args(argv)
  torch, missing = _bench.import_torch()
  if torch is not None and args.torch_threads is not None:
    if args.torch_threads < 1:
      parser.error(f"--torch-threads must be >= 1, got {args.torch_threads}")
    torch.set_num_threads(args.torch_threads)
  torch_device = _bench.torch_device(torch)[0] if torch is not None else None
  modes = ("default", "heap") if args.allocator == "both" else (args.allocator,)
  if _runtime.set_allocator("heap") is False:
    modes = ("unchanged",)  # not glibc: nothing to switch

  dims = (2, 8) if args.quick else (2, 8, 64)
  batches = (64,) if args.quick else (64, 1024)
  repeats = 10 if args.quick else 50
  seconds = 0.05 if args.quick else 1.0  # of timed calls per step and side (at least repeats)
  toy_steps = 200 if args.quick else 2000
  rng = np.random.default_rng(0)

  cases = []
  for d in dims:
    for b in batches:
      batch = rng.normal(size=(b, d)).astype(np.float32)
      per_mode = {}
      for mode in modes:
        if mode != "unchanged":
          _runtime.set_allocator(mode)
        ours = time_jax_step(d, HIDDEN[d], batch, repeats, seconds=seconds)
        theirs = (pyro_naf.time_step(d, HIDDEN[d], batch, repeats, device=torch_device,
                                     seconds=seconds)
                  if torch is not None else None)
        per_mode[mode] = {"jaxthesis_seconds": ours["seconds_per_step"],
                          "jaxthesis_repeats": ours["repeats"],
                          "jaxthesis_compile_seconds": ours["compile_seconds"],
                          "pyro_seconds": theirs and theirs["seconds_per_step"],
                          "pyro_repeats": theirs and theirs["repeats"]}
      headline = per_mode["heap" if "heap" in per_mode else modes[0]]
      case = {"num_dims": d, "batch_size": b, "hidden": [HIDDEN[d]] * 2,
              "dsf_units": DSF_UNITS, "flops_per_step": step_flops(d, HIDDEN[d], b),
              **headline, "by_allocator": per_mode}
      case["speedup"] = (headline["pyro_seconds"] / headline["jaxthesis_seconds"]
                         if headline["pyro_seconds"] else None)
      case["tail_cost"] = time_tail_cost(d, HIDDEN[d], batch, repeats,
                                         seconds=0.2 if args.quick else 1.5)
      cases.append(case)
  if modes != ("unchanged",):
    _runtime.set_allocator("heap")  # the package's setting for the rest of the run
  toy_ours = jax_toy_training(toy_steps, 64, HIDDEN[2])
  toy_theirs = (pyro_naf.toy_training(toy_steps, 64, HIDDEN[2], device=torch_device)
                if torch is not None else None)
  allocator = "heap" if "heap" in modes else modes[0]
  results = {
      "quick": bool(args.quick), "cases": cases, "allocator": allocator,
      "allocators_timed": list(modes),
      "toy": {"num_steps": toy_steps, "batch_size": 64, "jaxthesis": toy_ours,
              "pyro": toy_theirs,
              "speedup": (toy_ours["steps_per_second"] / toy_theirs["steps_per_second"]
                          if toy_theirs else None)},
      "targets": {"small_case_min_speedup": 5.0, "largest_case_min_speedup": 1.5,
                  "max_surjective_over_bounded": 1.10,
                  "tail_cost_met": bool(all(c["tail_cost"]["surjective_over_bounded"] <= 1.10
                                            for c in cases))},
      "summary": [_bench.summary_row(
          f"DSF step D={c['num_dims']} B={c['batch_size']}", c["jaxthesis_seconds"],
          flops=c["flops_per_step"], torch_seconds=c["pyro_seconds"],
          note="" if torch is not None else missing) for c in cases],
  }
  small, largest = cases[0], cases[-1]
  if torch is not None:
    results["targets"]["small_case_met"] = bool(small["speedup"] >= 5.0)
    results["targets"]["largest_case_met"] = bool(largest["speedup"] >= 1.5)

  fmt = lambda x: "-" if x is None else f"{1e3 * x:.3f}"
  rows = []
  for c in cases:
    for mode, m in c["by_allocator"].items():
      rows.append([c["num_dims"], c["batch_size"], f"{c['hidden'][0]}x2", mode,
                   fmt(m["jaxthesis_seconds"]), fmt(m["pyro_seconds"]),
                   f"{m['pyro_seconds'] / m['jaxthesis_seconds']:.1f}x"
                   if m["pyro_seconds"] else "-"])
  machine = _bench.machine_info()
  print(f"DSF training step; {machine['processor']}, {machine['cpu_count']} cores; "
        f"{_bench.loaded_note(machine)}")
  print(_bench.format_table(("D", "batch", "MADE", "malloc", "jaxthesis ms/step",
                             "Pyro ms/step", "speedup"), rows))
  print("cost of the linear tail (surjective DSF / the thesis's bounded DSF, alternated): "
        + ", ".join(f"D={c['num_dims']} B={c['batch_size']} "
                    f"{c['tail_cost']['surjective_over_bounded']:.2f}x" for c in cases)
        + f" vs <= 1.10x: {'met' if results['targets']['tail_cost_met'] else 'NOT met'}")
  if torch is None:
    print(f"Pyro reference skipped: {missing}")
  else:
    print(f"toy 2-D run, {toy_steps} steps of batch 64: jaxthesis "
          f"{toy_ours['steps_per_second']:.0f} steps/s "
          f"({toy_ours['seconds_with_compile']:.1f} s with compilation), Pyro "
          f"{toy_theirs['steps_per_second']:.0f} steps/s -> {results['toy']['speedup']:.1f}x")
    print(f"targets (malloc {allocator}): small case (D={small['num_dims']}, "
          f"B={small['batch_size']}) {small['speedup']:.1f}x vs >= 5x: "
          f"{'met' if results['targets']['small_case_met'] else 'NOT met'}; largest "
          f"(D={largest['num_dims']}, B={largest['batch_size']}) {largest['speedup']:.1f}x "
          f"vs >= 1.5x: {'met' if results['targets']['largest_case_met'] else 'NOT met'}"
          + (" (QUICK run: largest case not measured)" if args.quick else ""))
  name = "naf_speed_quick" if args.quick else "naf_speed"
  path = _bench.write_json(results, args.out, name)
  plot(results, os.path.join(args.out, name + ".png"))
  print(f"wrote {path} and {name}.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
