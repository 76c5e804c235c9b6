"""Speed of one BHN ELBO training step: vmapped samples vs a Python loop vs PyTorch eager.

The step (issue 9, section 3): the MNIST MLP of Table 7.I (784-800-800-10, weight norm,
random scales g, D = 1,610) with a RealNVP hypernet of 8 couplings (200 hidden units),
batch 100, S noise samples (one g per minibatch and sample), negative ELBO of Eq. 11.25,
its gradient and an Adam update. Variants, timed interleaved under the same load:

* ``vmap``: `jaxthesis.bhn` as one jitted step, samples vmapped, first layer x.v once;
* ``loop``: the same code with a Python loop over samples (`vectorize=False`), jitted;
* ``torch``: a PyTorch eager implementation written for this benchmark, samples in a
  loop as public implementations do.

Prints a table, writes results/bhn_speed.json and .png, the peak temporary memory of
the compiled vmapped S = 32 step (XLA's memory analysis), and the ratio of the two
compiled steps' arithmetic (XLA's cost analysis): where a device is bound by arithmetic
(a CPU), vmap / loop in time cannot fall below vmap / loop in FLOPs. Targets: vmap S=32 <= 0.35x
loop; >= 2x torch eager at S = 32 on CPU (>= 5x on a GPU).

    python benchmarks/bhn_speed.py            # S in {1, 10, 32}
    python benchmarks/bhn_speed.py --quick    # S in {1, 4}, a narrow net
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench  # noqa: E402


def jax_steps(hidden: int, num_layers: int, batch: int, num_samples: int):
  import jax
  import jax.numpy as jnp
  import optax
  from jaxthesis import bhn

  key = jax.random.PRNGKey(0)
  net = bhn.weightnorm_mlp(784, (hidden, hidden), 10)
  hyper = bhn.make_hypernet("realnvp", net.num_random, num_layers=num_layers, key=key)
  x = jax.random.uniform(key, (batch, 784))
  y = jnp.arange(batch) % 10
  net_params, theta0 = net.init(key, x)
  params = {"net": net_params, "hyper": hyper.init(key, loc=theta0, scale=0.01)}
  opt = optax.adam(1e-3)
  lik = bhn.categorical_likelihood()

  def make(vectorize):
    def loss(p, k):
      return bhn.negative_elbo(k, p["hyper"], p["net"], x, y, primary=net, hypernet=hyper,
                               likelihood=lik, num_train=4000, num_samples=num_samples,
                               vectorize=vectorize)[0]

    @jax.jit
    def step(p, s, k):
      l, g = jax.value_and_grad(loss)(p, k)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s, l
    return step

  state = opt.init(params)
  steps = {"vmap": make(True), "loop": make(False)}
  memory, flops = None, {}
  compiled = {name: f.lower(params, state, key).compile() for name, f in steps.items()}
  try:
    analysis = compiled["vmap"].memory_analysis()
    memory = int(analysis.temp_size_in_bytes + analysis.output_size_in_bytes
                 + analysis.argument_size_in_bytes)
  except Exception:  # memory analysis is not offered by every backend
    pass
  for name, c in compiled.items():  # XLA's count of the compiled step's arithmetic
    try:
      cost = c.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops[name] = float(cost["flops"])
    except Exception:  # not offered by every backend
      pass
  calls = {name: (lambda f=f: f(params, state, key)) for name, f in steps.items()}
  return calls, memory, flops


def torch_step(torch, hidden: int, num_layers: int, batch: int, num_samples: int):
  """The same step in PyTorch eager: weight-norm MLP, RealNVP hypernet, samples looped."""
  gen = torch.Generator().manual_seed(0)
  sizes = [784, hidden, hidden, 10]
  dims = sum(sizes[1:])
  vs = [torch.nn.Parameter(0.05 * torch.randn(a, b, generator=gen)) for a, b in zip(sizes, sizes[1:])]
  bs = [torch.nn.Parameter(torch.zeros(b)) for b in sizes[1:]]
  shift = torch.nn.Parameter(torch.ones(dims))
  log_scale = torch.nn.Parameter(torch.full((dims,), float(np.log(0.01))))
  d1, d2 = dims // 2, dims - dims // 2
  couplings = []
  for _ in range(num_layers):
    w1 = torch.nn.Parameter(torch.randn(d1, 200, generator=gen) * np.sqrt(2 / d1))
    b1 = torch.nn.Parameter(torch.zeros(200))
    w2 = torch.nn.Parameter(torch.zeros(200, 2 * d2))
    b2 = torch.nn.Parameter(torch.zeros(2 * d2))
    perm = torch.randperm(dims, generator=gen)
    couplings.append((w1, b1, w2, b2, perm, torch.argsort(perm)))
  params = vs + bs + [shift, log_scale] + [t for c in couplings for t in c[:4]]
  opt = torch.optim.Adam(params, lr=1e-3)
  x = torch.rand(batch, 784, generator=gen)
  y = torch.arange(batch) % 10

  def step():
    opt.zero_grad()
    total = 0.0
    for _ in range(num_samples):
      eps = torch.randn(dims)
      g = shift + torch.exp(log_scale) * eps
      log_det = log_scale.sum()
      for w1, b1, w2, b2, perm, inv in couplings:
        z = g[perm]
        h = torch.relu(z[:d1] @ w1 + b1) @ w2 + b2
        s = torch.exp(h[:d2]) + 1e-3
        z = torch.cat([z[:d1], z[d1:] * s + h[d2:]])
        log_det = log_det + torch.log(s).sum()
        g = z[inv]
      log_q = -0.5 * (eps ** 2).sum() - log_det
      log_p = -0.5 * (g ** 2).sum()
      gs = torch.split(g, sizes[1:])
      a = x
      for l, (v, b, gl) in enumerate(zip(vs, bs, gs)):
        a = (a @ (v / v.norm(dim=0))) * gl + b
        if l < 2:
          a = torch.relu(a)
      p = torch.clamp(torch.softmax(a, -1), 1e-3, 1 - 1e-3)
      nll = -torch.log(p[torch.arange(batch), y]).mean()
      total = total + (nll + (log_q - log_p) / 4000) / num_samples
    total.backward()
    opt.step()
    return total.detach()

  return step


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _bench.add_common_args(parser)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  # quick: a narrow net and 2 couplings (compiling 8 couplings' vmapped and looped steps
  # is most of a quick run's time)
  hidden, samples, num_layers = (64, (1, 4), 2) if args.quick else (800, (1, 10, 32), 8)
  batch = 100
  torch, why = _bench.import_torch()
  rows, results = [], {"cases": []}
  for s in samples:
    calls, memory, flops = jax_steps(hidden, num_layers, batch, s)
    if torch is not None:
      calls["torch"] = torch_step(torch, hidden, num_layers, batch, s)
    t = _bench.time_interleaved(calls, repeats=args.repeats, warmup=1)
    ms = {k: 1e3 * v["median"] for k, v in t.items()}
    case = {"num_samples": s, "ms": ms, "vmap_over_loop": ms["vmap"] / ms["loop"],
            "torch_over_vmap": ms.get("torch", np.nan) / ms["vmap"],
            "vmap_compiled_bytes": memory, "xla_flops": flops,
            # On a device bound by arithmetic, vmap / loop cannot go below this ratio.
            "vmap_over_loop_flops": (flops["vmap"] / flops["loop"]
                                     if {"vmap", "loop"} <= set(flops) else None)}
    results["cases"].append(case)
    rows.append([s, f"{ms['vmap']:.1f}", f"{ms['loop']:.1f}",
                 f"{ms.get('torch', float('nan')):.1f}", f"{case['vmap_over_loop']:.2f}",
                 f"{case['torch_over_vmap']:.2f}",
                 "-" if case["vmap_over_loop_flops"] is None
                 else f"{case['vmap_over_loop_flops']:.2f}",
                 "-" if memory is None else f"{memory / 2**20:.0f} MiB"])
  print(_bench.format_table(["S", "vmap ms", "loop ms", "torch ms", "vmap/loop",
                             "torch/vmap", "vmap/loop FLOPs (XLA)", "vmap step memory"], rows))
  if why:
    print(why)
  print(_bench.loaded_note())
  results["summary"] = [_bench.summary_row(
      f"BHN ELBO step, {hidden}-unit MLP, realnvp x{num_layers}, batch {batch}, S={c['num_samples']}",
      c["ms"]["vmap"] / 1e3, torch_seconds=c["ms"]["torch"] / 1e3 if "torch" in c["ms"] else None,
      note=why or "") for c in results["cases"]]
  name = "bhn_speed_quick" if args.quick else "bhn_speed"
  print(_bench.write_json(results, args.out, name))
  labels = [f"S={c['num_samples']}" for c in results["cases"]]
  series = {k: [c["ms"].get(k, np.nan) for c in results["cases"]] for k in ("vmap", "loop", "torch")}
  print(_bench.bar_plot(os.path.join(args.out, f"{name}.png"), labels, series, ylabel="ms / step",
                        title="BHN ELBO step"))
  return 0


if __name__ == "__main__":
  sys.exit(main())
