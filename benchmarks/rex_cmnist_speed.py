"""Speed of V-REx on Colored MNIST: jaxthesis vs a PyTorch eager baseline, side by side.

The workload of `jaxthesis rex cmnist` for V-REx on the built-in data: 10 restarts × 501
full-batch Adam steps of a 392→390→390→1 MLP on two domains of 2,000 digits, population
noise redrawn every step. jaxthesis runs all restarts as one compiled program (vmap over
restarts, lax.scan over steps); the baseline (benchmarks/torch_rex_cmnist.py) runs them one
after another in eager PyTorch, as the reference scripts do. Also measured: the machine's
dense float32 matmul roof in JAX, and the GFLOP/s the jaxthesis run achieves.

    python benchmarks/rex_cmnist_speed.py            # the full comparison (minutes)
    python benchmarks/rex_cmnist_speed.py --quick    # a smoke run

Prints a table and writes benchmarks/results/rex_cmnist_speed.{json,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import engine
from jaxthesis.data import load_mnist
from jaxthesis.experiments._common import format_table
from jaxthesis.experiments.rex.cmnist import METHOD_HPARAMS
from jaxthesis.rex import colored_mnist, train

HERE = os.path.dirname(os.path.abspath(__file__))


def mlp_step_flops(n: int, d_in: int, hidden: int) -> float:
  """FLOPs of one forward + backward pass of the d_in→H→H→1 MLP on n examples.

  Forward: 2n(d_in·H + H·H + H). Backward: the weight gradients cost the same again, and the
  input gradients of layers 2 and 3 cost 2n(H·H + H) (the first layer's input gradient is
  not needed and XLA removes it). Elementwise work is not counted.
  """
  forward = 2.0 * n * (d_in * hidden + hidden * hidden + hidden)
  return 2 * forward + 2.0 * n * (hidden * hidden + hidden)


def matmul_roof(size: int = 4096, repeats: int = 5) -> float:
  """Best-of-`repeats` GFLOP/s of a float32 [size, size] @ [size, size] matmul in JAX."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), jnp.float32)
  mm = jax.jit(jnp.matmul)
  mm(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    mm(a, b).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best / 1e9


def gemm_ceiling(restarts: int, n: int, d_in: int, hidden: int, repeats: int = 3) -> float:
  """GFLOP/s of the step's matrix products alone, batched over restarts as in the run.

  Forward `X W1`, `H1 W2`; backward `H1ᵀ G`, `G W2ᵀ`, `Xᵀ G` (the largest products of one
  training step; the 1-unit output layer is left out). This is the ceiling the whole step
  could reach if every elementwise operation were free.
  """
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  x = jax.random.normal(keys[0], (n, d_in))
  w1 = jax.random.normal(keys[1], (restarts, d_in, hidden))
  w2 = jax.random.normal(keys[2], (restarts, hidden, hidden))
  g = jax.random.normal(keys[3], (restarts, n, hidden))

  @jax.jit
  def products(x, w1, w2, g):
    h1 = jnp.einsum("nd,rdh->rnh", x, w1)
    h2 = jnp.einsum("rnh,rhk->rnk", h1, w2)
    dw2 = jnp.einsum("rnh,rnk->rhk", h1, g)
    dh1 = jnp.einsum("rnk,rhk->rnh", g, w2)
    dw1 = jnp.einsum("nd,rnh->rdh", x, dh1)
    return h2.sum() + dw2.sum() + dw1.sum()

  products(x, w1, w2, g).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    products(x, w1, w2, g).block_until_ready()
    best = min(best, time.perf_counter() - start)
  flops = restarts * 2.0 * n * (2 * d_in * hidden + 3 * hidden * hidden)
  return flops / best / 1e9


def time_jax(data, restarts: int, steps: int, hp) -> dict:
  task = train.make_domain_task("vrex", hidden=hp.hidden, input_dim=392, num_domains=2,
                                sample_train=colored_mnist.sample_train_domains,
                                sample_eval=colored_mnist.sample_eval_sets, population=True)
  hparams = train.domain_hparams(restarts, learning_rate=hp.learning_rate,
                                 l2_weight=hp.l2_weight, penalty_weight=hp.penalty_weight,
                                 penalty_anneal_iters=hp.penalty_anneal_iters)
  runner = engine.Runner(task, steps, eval_every=steps, chunk_size=steps, progress=False)
  keys = jax.random.split(jax.random.PRNGKey(0), restarts)
  start = time.perf_counter()
  first = runner.run(keys, hparams, data)
  with_compile = time.perf_counter() - start
  start = time.perf_counter()
  second = runner.run(keys, hparams, data)
  steady = time.perf_counter() - start
  np.testing.assert_array_equal(first.history.losses["loss"], second.history.losses["loss"])
  return {"seconds": steady, "seconds_with_compile": with_compile,
          "train_acc": float(np.mean(second.history.evals["train_acc"][:, -1]))}


def time_torch(data, restarts: int, steps: int, hp, threads: int) -> dict:
  import torch
  sys.path.insert(0, HERE)
  from torch_rex_cmnist import train_vrex

  torch.set_num_threads(threads)
  start = time.perf_counter()
  accs = train_vrex(np.asarray(data.train_pixels), np.asarray(data.train_digits),
                    [0.2, 0.1], restarts=restarts, steps=steps, hidden=hp.hidden,
                    lr=hp.learning_rate, l2=hp.l2_weight, penalty_weight=hp.penalty_weight,
                    anneal=hp.penalty_anneal_iters)
  return {"seconds": time.perf_counter() - start, "train_acc": float(np.mean(accs)),
          "torch_version": torch.__version__, "threads": threads}


def plot(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
  names = ["jaxthesis", "jaxthesis\n(incl. compile)", "PyTorch eager"]
  secs = [results["jax"]["seconds"], results["jax"]["seconds_with_compile"],
          results["torch"]["seconds"]]
  axes[0].bar(names, secs, color=["C0", "C9", "C3"])
  axes[0].set_ylabel("seconds")
  axes[0].set_title(f"V-REx CMNIST, {results['restarts']} restarts × {results['steps']} steps",
                    fontsize=9)
  axes[1].bar(["matmul roof", "jaxthesis V-REx"],
              [results["matmul_roof_gflops"], results["jax"]["gflops"]], color=["gray", "C0"])
  axes[1].set_ylabel("GFLOP/s")
  axes[1].set_title(f"{results['jax']['roof_fraction']:.0%} of the float32 matmul roof",
                    fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="2 restarts × 20 steps")
  parser.add_argument("--restarts", type=int, default=10)
  parser.add_argument("--steps", type=int, default=501)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                      help="PyTorch intra-op threads (default: all cores)")
  parser.add_argument("--out", default=os.path.join(HERE, "results"))
  args = parser.parse_args(argv)
  if args.restarts < 1 or args.steps < 1 or args.threads < 1:
    parser.error("--restarts, --steps and --threads must be >= 1")
  restarts, steps = (2, 20) if args.quick else (args.restarts, args.steps)
  hp = METHOD_HPARAMS["vrex"]

  tr, te = load_mnist("train", "builtin"), load_mnist("test", "builtin")
  data = colored_mnist.make_colored_mnist(tr.images, tr.labels, te.images, te.labels,
                                          shuffle_key=jax.random.PRNGKey(0))
  n = int(data.train_mask.sum())
  roof = matmul_roof()
  ceiling = gemm_ceiling(restarts, n, 392, hp.hidden)
  jax_result = time_jax(data, restarts, steps, hp)
  torch_result = time_torch(data, restarts, steps, hp, args.threads)
  flops = mlp_step_flops(n, 392, hp.hidden) * restarts * steps
  jax_result["gflops"] = flops / jax_result["seconds"] / 1e9
  jax_result["roof_fraction"] = jax_result["gflops"] / roof
  torch_result["gflops"] = flops / torch_result["seconds"] / 1e9
  results = {
      "benchmark": "rex_cmnist_speed", "restarts": restarts, "steps": steps, "hidden": hp.hidden,
      "train_examples": n, "model_flops": flops, "matmul_roof_gflops": roof,
      "step_gemms_only_gflops": ceiling, "step_gemms_only_roof_fraction": ceiling / roof,
      "jax": jax_result, "torch": torch_result,
      "speedup_vs_torch": torch_result["seconds"] / jax_result["seconds"],
      "speedup_vs_torch_incl_compile": torch_result["seconds"] / jax_result["seconds_with_compile"],
      "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                  "jax": jax.__version__, "devices": str(jax.devices())},
      "targets": {"speedup_vs_torch": 1.8, "roof_fraction": 0.85},
  }
  rows = [
      ["matmul roof (4096² float32)", "-", f"{roof:.0f}", "100%", "-"],
      ["the step's GEMMs alone (ceiling)", "-", f"{ceiling:.0f}", f"{ceiling / roof:.0%}", "-"],
      ["jaxthesis (steady state)", f"{jax_result['seconds']:.1f}", f"{jax_result['gflops']:.0f}",
       f"{jax_result['roof_fraction']:.0%}", f"{results['speedup_vs_torch']:.2f}x"],
      ["jaxthesis (incl. compile)", f"{jax_result['seconds_with_compile']:.1f}",
       f"{flops / jax_result['seconds_with_compile'] / 1e9:.0f}",
       f"{flops / jax_result['seconds_with_compile'] / 1e9 / roof:.0%}",
       f"{results['speedup_vs_torch_incl_compile']:.2f}x"],
      ["PyTorch eager", f"{torch_result['seconds']:.1f}", f"{torch_result['gflops']:.0f}",
       f"{torch_result['gflops'] / roof:.0%}", "1.00x"],
  ]
  print(f"V-REx on Colored MNIST: {restarts} restarts × {steps} steps, H={hp.hidden}, "
        f"{n} training digits; {os.cpu_count()} CPU cores")
  print(format_table(["run", "seconds", "GFLOP/s", "of roof", "vs PyTorch"], rows))
  print(f"targets: >= 1.8x PyTorch, >= 85% of roof; train accuracy jax "
        f"{jax_result['train_acc']:.3f} / torch {torch_result['train_acc']:.3f}")
  os.makedirs(args.out, exist_ok=True)
  name = "rex_cmnist_speed_quick" if args.quick else "rex_cmnist_speed"
  with open(os.path.join(args.out, name + ".json"), "w") as f:
    json.dump(results, f, indent=2)
  plot(results, os.path.join(args.out, name + ".png"))
  print(f"wrote {os.path.join(args.out, name)}.json and .png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
