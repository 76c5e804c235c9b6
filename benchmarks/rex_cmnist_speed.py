"""Speed of V-REx on Colored MNIST: jaxthesis vs a PyTorch eager baseline, side by side.

The workload of `jaxthesis rex cmnist` for V-REx on the built-in data: 10 restarts × 501
full-batch Adam steps of a 392→390→390→1 MLP on two domains of 2,000 digits, population
noise redrawn every step. jaxthesis runs all restarts as one compiled program (vmap over
restarts, lax.scan over steps); the baseline (benchmarks/torch_rex_cmnist.py) runs them one
after another in eager PyTorch, as the reference scripts do. Also measured: the machine's
dense float32 matmul roof in JAX, and the GFLOP/s the jaxthesis run achieves.

    python benchmarks/rex_cmnist_speed.py            # the full comparison (minutes)
    python benchmarks/rex_cmnist_speed.py --quick    # a smoke run: 2 restarts x 10 steps

Prints a table and writes benchmarks/results/rex_cmnist_speed.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _bench  # noqa: E402
from jaxthesis import engine  # noqa: E402
from jaxthesis.data import load_mnist  # noqa: E402
from jaxthesis.experiments.rex.cmnist import METHOD_HPARAMS  # noqa: E402
from jaxthesis.rex import colored_mnist, train  # noqa: E402


def mlp_step_flops(n: int, d_in: int, hidden: int) -> float:
  """FLOPs of one forward + backward pass of the d_in→H→H→1 MLP on n examples.

  Forward: 2n(d_in·H + H·H + H). Backward: the weight gradients cost the same again, and the
  input gradients of layers 2 and 3 cost 2n(H·H + H) (the first layer's input gradient is
  not needed and XLA removes it). Elementwise work is not counted.
  """
  forward = 2.0 * n * (d_in * hidden + hidden * hidden + hidden)
  return 2 * forward + 2.0 * n * (hidden * hidden + hidden)


def gemm_formulations(restarts: int, n: int, d_in: int, hidden: int, repeats: int = 3,
                      steps_gemms: bool = True) -> dict:
  """GFLOP/s of the first layer's product `[R, n, d] @ [R, d, H]` in every formulation.

  * ``batched_dot``: `vmap(matmul)`, one batched dot (what `restart_axis="vmap"` runs);
  * ``batched_dot_wT``: the same with the weights stored transposed ([R, H, d]);
  * ``lax_map``: `lax.map` of plain GEMMs (what `restart_axis="map"` runs);
  * ``unrolled``: R plain GEMMs unrolled in one program;
  * ``one_gemm``: a single [n, d] @ [d, H] GEMM (the rate a plain GEMM reaches);
  * ``batched_dot_highest``: `precision=HIGHEST` (XLA:CPU's default float32 is already
    full precision, so it should not differ there);
  * with `steps_gemms`: ``step_gemms_vmap`` / ``step_gemms_map``, the step's five large
    products (forward `X W1`, `H1 W2`; backward `H1ᵀ G`, `G W2ᵀ`, `Xᵀ G`) batched and
    mapped: the ceiling the whole step could reach if elementwise work were free. Every
    product's output is returned, as in the step, where each is used: reduced to a scalar
    inside the program, XLA:CPU fused the sum into the `H1 W2` product (one YNNPACK
    fusion with a scalar output, no [n, H] result written), which made this "ceiling"
    faster than a plain GEMM.

  Returns `gemm_rates` of `formulation_calls`.
  """
  return gemm_rates(*formulation_calls(restarts, n, d_in, hidden, steps_gemms), repeats=repeats)


def gemm_rates(fns: dict, flops: dict, repeats: int = 3) -> tuple[dict, dict]:
  """Times `formulation_calls`'s calls interleaved (`_bench.time_interleaved`). Returns
  `(best, median)`: each `{formulation: GFLOP/s}`, from the fastest and from the median of
  `repeats` calls."""
  timings = _bench.time_interleaved(fns, repeats=repeats)
  return tuple({name: flops[name] / t[stat] / 1e9 for name, t in timings.items()}
               for stat in ("best", "median"))


def formulation_calls(restarts: int, n: int, d_in: int, hidden: int,
                      steps_gemms: bool = True):
  """`({formulation: call}, {formulation: FLOPs of one call})` of `gemm_formulations`."""
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (restarts, n, d_in))
  w1 = jax.random.normal(keys[1], (restarts, d_in, hidden))
  w1t = jnp.swapaxes(w1, 1, 2)
  w2 = jax.random.normal(keys[2], (restarts, hidden, hidden))
  g = jax.random.normal(keys[3], (restarts, n, hidden))
  highest = jax.lax.Precision.HIGHEST
  layer = {
      "batched_dot": (jax.jit(jax.vmap(jnp.matmul)), (x, w1)),
      "batched_dot_wT": (jax.jit(lambda a, b: jnp.einsum("rnd,rhd->rnh", a, b)), (x, w1t)),
      "lax_map": (jax.jit(lambda a, b: jax.lax.map(lambda ab: ab[0] @ ab[1], (a, b))), (x, w1)),
      "unrolled": (jax.jit(lambda a, b: jnp.stack([a[i] @ b[i] for i in range(restarts)])),
                   (x, w1)),
      "one_gemm": (jax.jit(jnp.matmul), (x[0], w1[0])),
      "batched_dot_highest": (jax.jit(lambda a, b: jnp.einsum("rnd,rdh->rnh", a, b,
                                                              precision=highest)), (x, w1)),
  }
  fns = {name: (lambda f=f, a=a: f(*a)) for name, (f, a) in layer.items()}
  flops = {name: 2.0 * restarts * n * d_in * hidden for name in layer}
  flops["one_gemm"] /= restarts
  if steps_gemms:
    def products(x, w1, w2, g):
      h1 = x @ w1
      return h1 @ w2, h1.T @ g, x.T @ (g @ w2.T)

    step_vmap = jax.jit(jax.vmap(products))
    step_map = jax.jit(lambda *a: jax.lax.map(lambda t: products(*t), a))
    fns["step_gemms_vmap"] = lambda: step_vmap(x, w1, w2, g)
    fns["step_gemms_map"] = lambda: step_map(x, w1, w2, g)
    flops["step_gemms_vmap"] = flops["step_gemms_map"] = (
        restarts * 2.0 * n * (2 * d_in * hidden + 3 * hidden * hidden))
  return fns, flops


def sustained(call: Callable[[], Any], calls: int) -> Callable[[], Any]:
  """`call` made `calls` times in a row (dispatched asynchronously; the caller waits for
  the last result): a formulation timed over as many FLOPs as a whole run."""
  if calls < 1:
    raise ValueError(f"calls must be >= 1, got {calls}")

  def run():
    out = None
    for _ in range(calls):
      out = call()
    return out

  return run


XLA_FLAG_PROBES = ("", "--xla_cpu_use_xnnpack=true", "--xla_cpu_use_xnnpack=false",
                   "--xla_cpu_experimental_xnn_fusion_type=dot",
                   "--xla_cpu_use_onednn=true", "--xla_cpu_experimental_ynn_fusion_type=dot")


def probe_xla_flags(restarts: int, n: int, d_in: int, hidden: int) -> dict:
  """`gemm_formulations` in a fresh process per XLA:CPU flag of the installed jaxlib.

  XLA reads XLA_FLAGS once, when the backend starts, hence one process each. A flag this
  jaxlib does not know ends that process; it is recorded as such.
  """
  out = {}
  for flag in XLA_FLAG_PROBES:
    env = {**os.environ, "XLA_FLAGS": flag, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, os.path.abspath(__file__), "--gemm-probe",
           f"{restarts},{n},{d_in},{hidden}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("GEMM ")]
    out[flag or "(none)"] = (json.loads(lines[-1][5:]) if proc.returncode == 0 and lines
                             else {"error": proc.stderr.strip().splitlines()[-1:]})
  return out


def time_formulations(data, restarts: int, steps: int, hp, repeats: int = 2):
  """ms per step of the same V-REx run under each `restart_axis`, interleaved, and the
  largest difference between their losses (they compute the same program).

  Returns the measurements and `{restart_axis: (runner, seconds of its first run)}` (the
  first run includes compiling), so that a run of as many steps can reuse a runner."""
  task, hparams, keys = _task(hp), _hparams(restarts, hp), _keys(restarts)
  runners = {how: engine.Runner(task, steps, eval_every=steps, chunk_size=steps,
                                progress=False, restart_axis=how) for how in ("vmap", "map")}
  first, first_seconds = {}, {}
  for how, r in runners.items():
    start = time.perf_counter()
    first[how] = r.run(keys, hparams, data)
    first_seconds[how] = time.perf_counter() - start
  timings = _bench.time_interleaved(
      {how: (lambda r=r: r.run(keys, hparams, data).history.losses["loss"])
       for how, r in runners.items()}, repeats=repeats, warmup=0)
  diff = float(np.max(np.abs(first["map"].history.losses["loss"]
                             - first["vmap"].history.losses["loss"])))
  return ({"steps": steps, "max_abs_loss_difference": diff,
           **{how: {"ms_per_step": 1e3 * t["median"] / steps,
                    "ms_per_step_each": [1e3 * x / steps for x in t["times"]]}
              for how, t in timings.items()}},
          {how: (r, first_seconds[how]) for how, r in runners.items()})


def _task(hp):
  return train.make_domain_task("vrex", hidden=hp.hidden, input_dim=392, num_domains=2,
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=colored_mnist.sample_eval_sets, population=True)


def _hparams(restarts, hp):
  return train.domain_hparams(restarts, learning_rate=hp.learning_rate,
                              l2_weight=hp.l2_weight, penalty_weight=hp.penalty_weight,
                              penalty_anneal_iters=hp.penalty_anneal_iters)


def _keys(restarts):
  return jax.random.split(jax.random.PRNGKey(0), restarts)


def time_jax(data, restarts: int, steps: int, hp, restart_axis: str = "auto",
             compiled=None, *, ceiling: Callable[[], Any], repeats: int = 2) -> dict:
  """The timed run (restarts x steps), with and without compiling. `compiled`: an
  optional `{restart_axis: (runner, seconds of its first run)}` of runners built for the
  same restarts and steps (`time_formulations`'s), used instead of compiling again.

  The steady-state run is timed `repeats` times, interleaved with `ceiling` (a GEMM
  formulation made as many FLOPs long as the run, `sustained`), so that the two share the
  machine's load and clock over the same minutes; `seconds` and `ceiling_seconds` are the
  medians."""
  runner = engine.Runner(_task(hp), steps, eval_every=steps, chunk_size=steps, progress=False,
                         restart_axis=restart_axis)
  keys, hparams = _keys(restarts), _hparams(restarts, hp)
  if compiled and runner.restart_axis in compiled:
    runner, with_compile = compiled[runner.restart_axis]
    first = runner.run(keys, hparams, data)
  else:
    start = time.perf_counter()
    first = runner.run(keys, hparams, data)
    with_compile = time.perf_counter() - start
  results = []

  def run():
    results.append(runner.run(keys, hparams, data))
    return results[-1].history.losses["loss"]

  timings = _bench.time_interleaved({"run": run, "ceiling": ceiling}, repeats=repeats,
                                    warmup=0)
  for result in results:
    np.testing.assert_array_equal(first.history.losses["loss"], result.history.losses["loss"])
  return {"seconds": timings["run"]["median"], "seconds_each": timings["run"]["times"],
          "ceiling_seconds": timings["ceiling"]["median"],
          "ceiling_seconds_each": timings["ceiling"]["times"],
          "seconds_with_compile": with_compile, "restart_axis": runner.restart_axis,
          "train_acc": float(np.mean(results[-1].history.evals["train_acc"][:, -1]))}


def time_torch(data, restarts: int, steps: int, hp, threads: int) -> dict:
  torch, missing = _bench.import_torch()
  if torch is None:
    return {"skipped": missing}
  from torch_rex_cmnist import train_vrex

  device, note = _bench.torch_device(torch)
  torch.set_num_threads(threads)
  start = time.perf_counter()
  accs = train_vrex(np.asarray(data.train_pixels), np.asarray(data.train_digits),
                    [0.2, 0.1], restarts=restarts, steps=steps, hidden=hp.hidden,
                    lr=hp.learning_rate, l2=hp.l2_weight, penalty_weight=hp.penalty_weight,
                    anneal=hp.penalty_anneal_iters, device=device)
  return {"seconds": time.perf_counter() - start, "train_acc": float(np.mean(accs)),
          "torch_version": torch.__version__, "threads": threads, "device": device,
          "note": note}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _bench.add_common_args(parser)
  parser.add_argument("--restarts", type=int, default=10)
  parser.add_argument("--steps", type=int, default=501)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                      help="PyTorch intra-op threads (default: all cores)")
  parser.add_argument("--formulation-steps", type=int, default=30,
                      help="steps of the short runs that compare restart_axis='vmap'/'map'")
  parser.add_argument("--no-flag-probes", action="store_true",
                      help="skip the XLA:CPU flag probes (one process per flag)")
  parser.add_argument("--gemm-probe", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.gemm_probe:  # the child process of probe_xla_flags
    r, n, d, h = (int(v) for v in args.gemm_probe.split(","))
    print("GEMM " + json.dumps(gemm_formulations(r, n, d, h, steps_gemms=False)[0]))
    return 0
  if min(args.restarts, args.steps, args.threads, args.formulation_steps) < 1:
    parser.error("--restarts, --steps, --threads and --formulation-steps must be >= 1")
  restarts, steps = (2, 10) if args.quick else (args.restarts, args.steps)
  # quick: the formulations' runs are as long as the timed run, whose compiled runner
  # is then reused (compiling the step is most of a quick run's time)
  formulation_steps = steps if args.quick else args.formulation_steps
  hp = METHOD_HPARAMS["vrex"]

  tr, te = load_mnist("train", "builtin"), load_mnist("test", "builtin")
  data = colored_mnist.make_colored_mnist(tr.images, tr.labels, te.images, te.labels,
                                          shuffle_key=jax.random.PRNGKey(0))
  n = int(data.train_mask.sum())
  roof = _bench.matmul_peak("float32", size=1024 if args.quick else 4096) / 1e9
  # kept for the sustained ceiling below, so that it times the same compiled calls
  calls, call_flops = formulation_calls(restarts, 500 if args.quick else n, 392, hp.hidden)
  gemms, gemms_median = gemm_rates(calls, call_flops, repeats=2 if args.quick else 5)
  probes = ({} if args.quick or args.no_flag_probes or jax.default_backend() != "cpu"
            else probe_xla_flags(restarts, n, 392, hp.hidden))
  formulations, compiled = time_formulations(data, restarts, formulation_steps, hp,
                                             repeats=1 if args.quick else 2)
  flops = mlp_step_flops(n, 392, hp.hidden) * restarts * steps
  # The fastest formulation (by its median call), made as many FLOPs long as the run and
  # timed interleaved with it: the run's rate is a mean over minutes of restarts x steps,
  # and this machine's GEMM rate drifts by +-10 % from minute to minute.
  candidates = {k: v for k, v in gemms_median.items() if k != "batched_dot_highest"}
  fastest_name = max(candidates, key=candidates.get)
  ceiling_calls = max(1, round(flops / call_flops[fastest_name]))
  jax_result = time_jax(data, restarts, steps, hp,
                        compiled=compiled if formulation_steps == steps else None,
                        ceiling=sustained(calls[fastest_name], ceiling_calls))
  del calls
  torch_result = time_torch(data, restarts, steps, hp, args.threads)
  jax_result["gflops"] = flops / jax_result["seconds"] / 1e9
  jax_result["roof_fraction"] = jax_result["gflops"] / roof
  sustained_gemm = ceiling_calls * call_flops[fastest_name] / jax_result["ceiling_seconds"] / 1e9
  jax_result["fraction_of_fastest_gemm_sustained"] = jax_result["gflops"] / sustained_gemm
  # As before, also against the formulation's median and best single call.
  fastest_gemm, fastest_gemm_best = candidates[fastest_name], gemms[fastest_name]
  jax_result["fraction_of_fastest_gemm"] = jax_result["gflops"] / fastest_gemm
  jax_result["fraction_of_fastest_gemm_best"] = jax_result["gflops"] / fastest_gemm_best
  summary = [_bench.summary_row(
      f"V-REx CMNIST, {restarts} restarts x {steps} steps", jax_result["seconds"], unit="run",
      flops=flops, torch_seconds=torch_result.get("seconds"),
      note=torch_result.get("skipped") or torch_result.get("note") or "")]
  results = {
      "benchmark": "rex_cmnist_speed", "quick": bool(args.quick), "restarts": restarts,
      "steps": steps, "hidden": hp.hidden, "train_examples": n, "model_flops": flops,
      "matmul_roof_gflops": roof, "gemm_formulations_gflops": gemms,
      "gemm_formulations_gflops_median": gemms_median,
      "fastest_gemm": fastest_name, "fastest_gemm_gflops": fastest_gemm,
      "fastest_gemm_gflops_best": fastest_gemm_best,
      "fastest_gemm_gflops_sustained": sustained_gemm,
      "fastest_gemm_sustained_calls": ceiling_calls,
      "xla_flag_probes_gflops": probes,
      "restart_axis_formulations": formulations, "jax": jax_result, "torch": torch_result,
      "targets": {"speedup_vs_torch": 1.0, "fraction_of_fastest_gemm": 0.9},
      "summary": summary,
  }
  if "seconds" in torch_result:
    torch_result["gflops"] = flops / torch_result["seconds"] / 1e9
    results["speedup_vs_torch"] = torch_result["seconds"] / jax_result["seconds"]
    results["speedup_vs_torch_incl_compile"] = (torch_result["seconds"]
                                                / jax_result["seconds_with_compile"])
  machine = _bench.machine_info()
  results["machine"] = machine

  rows = [["matmul roof (float32)", "-", f"{roof:.0f}", "100%", "-"]]
  rows += [[f"GEMM formulation: {k} (best / median call)", "-",
            f"{v:.0f} / {gemms_median[k]:.0f}", f"{v / roof:.0%}", "-"]
           for k, v in gemms.items()]
  for how in ("vmap", "map"):
    ms = formulations[how]["ms_per_step"]
    rate = mlp_step_flops(n, 392, hp.hidden) * restarts / (ms / 1e3) / 1e9
    rows.append([f"run, restart_axis={how!r} ({formulation_steps} steps)",
                 f"{ms:.0f} ms/step", f"{rate:.0f}", f"{rate / roof:.0%}", "-"])
  torch_s = torch_result.get("seconds")
  ratio = lambda s: f"{torch_s / s:.2f}x" if torch_s else "-"
  rows += [
      [f"{fastest_name} x {ceiling_calls} calls, as many FLOPs as the run, interleaved with it",
       f"{jax_result['ceiling_seconds']:.1f}", f"{sustained_gemm:.0f}",
       f"{sustained_gemm / roof:.0%}", "-"],
      [f"jaxthesis ({jax_result['restart_axis']}, steady state)", f"{jax_result['seconds']:.1f}",
       f"{jax_result['gflops']:.0f}", f"{jax_result['roof_fraction']:.0%}",
       ratio(jax_result["seconds"])],
      ["jaxthesis (incl. compile)", f"{jax_result['seconds_with_compile']:.1f}",
       f"{flops / jax_result['seconds_with_compile'] / 1e9:.0f}",
       f"{flops / jax_result['seconds_with_compile'] / 1e9 / roof:.0%}",
       ratio(jax_result["seconds_with_compile"])],
  ]
  if torch_s:
    rows.append([f"PyTorch eager ({torch_result['device']})", f"{torch_s:.1f}",
                 f"{torch_result['gflops']:.0f}", f"{torch_result['gflops'] / roof:.0%}",
                 "1.00x"])
  print(f"V-REx on Colored MNIST: {restarts} restarts x {steps} steps, H={hp.hidden}, "
        f"{n} training digits; {machine['processor']}, {os.cpu_count()} CPU cores; "
        f"{_bench.loaded_note(machine)}")
  print(_bench.format_table(["run", "seconds", "GFLOP/s", "of roof", "vs PyTorch"], rows))
  for flag, rates in probes.items():
    print(f"XLA flag {flag}: " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else
                                           f"{k} {v}" for k, v in rates.items()))
  print(f"restart_axis 'map' vs 'vmap' losses differ by at most "
        f"{formulations['max_abs_loss_difference']:.2e}")
  if torch_s:
    print(f"targets: >= 1.0x PyTorch: {results['speedup_vs_torch']:.2f}x; run >= 90% of the "
          f"fastest GEMM formulation, {fastest_name}, timed for as many FLOPs interleaved "
          f"with the run ({sustained_gemm:.0f} GFLOP/s): "
          f"{jax_result['fraction_of_fastest_gemm_sustained']:.0%} (of its median single call, "
          f"{fastest_gemm:.0f} GFLOP/s: {jax_result['fraction_of_fastest_gemm']:.0%}; of its "
          f"best call, {fastest_gemm_best:.0f}: "
          f"{jax_result['fraction_of_fastest_gemm_best']:.0%}); train accuracy jax "
          f"{jax_result['train_acc']:.3f} / torch {torch_result['train_acc']:.3f}")
  else:
    print(f"PyTorch reference skipped: {torch_result['skipped']}")
  name = "rex_cmnist_speed_quick" if args.quick else "rex_cmnist_speed"
  path = _bench.write_json(results, args.out, name)
  labels = ["jaxthesis", "jaxthesis\n(incl. compile)"] + (["PyTorch eager"] if torch_s else [])
  secs = [jax_result["seconds"], jax_result["seconds_with_compile"]] + ([torch_s] if torch_s else [])
  _bench.bar_plot(os.path.join(args.out, name + ".png"), labels, {"seconds": secs},
                  ylabel="seconds", title=f"V-REx CMNIST, {restarts} restarts x {steps} steps; "
                  f"{jax_result['roof_fraction']:.0%} of the float32 matmul roof")
  print(f"wrote {path} and {name}.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
