"""Step time of a data-parallel run on 1, 2, 4 and 8 simulated CPU devices.

One restart of a DSF flow's maximum-likelihood fit (D = 8, MADE 64 x 2, 16 sigmoid units)
on a batch of 4,096 points, with the engine's ``data_shards`` equal to the device count:
the batch is split over the mesh's "data" axis and XLA reduces the gradients. Each device
count runs in its own process, with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
set before JAX starts.

Simulated devices share the machine's cores (2 on the development machines), so this
shows that the sharded program is correct and what the partitioning costs, not a speed-up:
each "device" gets a fraction of the same cores, and the all-reduces are extra work. On a
machine with N real accelerators the same `Runner(..., data_shards=N)` splits the work.

    python benchmarks/sharding_speed.py            # 4,096 points, 40 steps per count
    python benchmarks/sharding_speed.py --quick    # 512 points, 10 steps, 1 and 8 devices

Writes benchmarks/results/sharding_speed.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _bench  # noqa: E402

DEVICE_COUNTS = (1, 2, 4, 8)


def child(num_devices: int, batch: int, steps: int) -> dict:
  """Runs in the child process: times `steps` steps on `num_devices` data shards."""
  import time

  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxthesis import engine, flows
  from jaxthesis.experiments.naf._common import flow_task

  assert jax.device_count() == num_devices, jax.devices()
  num_dims = 8
  flow = flows.autoregressive_flow(num_dims, "dsf", transformer_kwargs={"hidden_units": 16},
                                   hidden_sizes=(64, 64), num_layers=1)
  task = flow_task(flow, lambda p, key, data: -jnp.mean(flow.distribution(p).log_prob(data)),
                   1e-3)

  x = jax.random.normal(jax.random.PRNGKey(0), (batch, num_dims))
  runner = engine.Runner(task, steps, chunk_size=steps, progress=False,
                         data_shards=num_devices)
  keys = jax.random.split(jax.random.PRNGKey(1), 1)
  first = runner.run(keys, None, x)  # compiles
  start = time.perf_counter()
  second = runner.run(keys, None, x)
  seconds = time.perf_counter() - start
  np.testing.assert_array_equal(first.history.losses["loss"], second.history.losses["loss"])
  return {"devices": num_devices, "ms_per_step": 1e3 * seconds / steps,
          "mesh": dict(runner.mesh(1).shape),
          "final_loss": float(second.history.losses["loss"][0, -1])}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _bench.add_common_args(parser)
  parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    n, batch, steps = (int(v) for v in args.child.split(","))
    print("RESULT " + json.dumps(child(n, batch, steps)))
    return 0
  batch, steps = (512, 10) if args.quick else (4096, 40)
  counts = (1, 8) if args.quick else DEVICE_COUNTS  # quick: the two ends of the check
  lines = []
  for n in counts:
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags.strip()}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                           f"{n},{batch},{steps}"], capture_output=True, text=True, env=env,
                          timeout=600)
    found = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
      raise RuntimeError(f"{n} devices failed: {proc.stderr[-2000:]}")
    lines.append(json.loads(found[-1][len("RESULT "):]))
  base = lines[0]["ms_per_step"]
  losses = [l["final_loss"] for l in lines]
  rows = [[l["devices"], f"{l['mesh']['restarts']} x {l['mesh']['data']}",
           f"{l['ms_per_step']:.2f}", f"{l['ms_per_step'] / base:.2f}", f"{l['final_loss']:.6f}"]
          for l in lines]
  machine = _bench.machine_info()
  print(f"DSF fit, batch {batch} split over 'data', {steps} steps; simulated CPU devices "
        f"on {machine['cpu_count']} cores ({_bench.loaded_note(machine)}): this shows "
        f"correctness and partitioning overhead, not speed-up")
  print(_bench.format_table(["devices", "mesh", "ms/step", "vs 1 device", "final loss"], rows))
  print(f"final losses agree to {max(losses) - min(losses):.2e}")
  results = {"quick": bool(args.quick), "batch": batch, "steps": steps, "counts": lines,
             "max_final_loss_spread": max(losses) - min(losses),
             "note": "simulated CPU devices share the same cores: overhead, not speed-up",
             "summary": [_bench.summary_row(
                 f"DSF data-parallel, {l['devices']} simulated CPU devices",
                 l["ms_per_step"] / 1e3, note="simulated devices: overhead, not speed-up")
                 for l in lines]}
  name = "sharding_speed_quick" if args.quick else "sharding_speed"
  print(f"wrote {_bench.write_json(results, args.out, name)}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
