"""Speed of the chapter-3 workloads: LASS / CSR and the difficulty study, jaxthesis vs PyTorch.

Two workloads (issue 10, section 5), each timed side by side in one run (interleaved, so
the variants share the machine's load):

(a) The critical sample ratio (3.4.1) of the validation digits for a trained MLP (the first
    run of (b), one epoch of SGD on the training digits), by LASS
    (Alg. 1) with the thesis's defaults (α = 0.25, β = 0.2, r = 0.3 on the 0-255 scale,
    100 iterations):

    * ``jaxthesis``: `jaxthesis.memorization.critical_sample_ratio`, jitted: one
      `lax.while_loop` over iterations, batched over samples, early exit once all are done;
    * ``torch``: Alg. 1 in PyTorch eager, written for this benchmark as public
      implementations are: batched over samples, a Python loop over iterations, samples
      that turned critical dropped from the batch.

    Both search the same network (the trained jaxthesis weights, copied). Checks stored in
    the JSON: the two CSRs agree within sampling noise, and with β = 0 (no noise, so the
    search is deterministic) and a larger box both flag the same samples.

(b) The difficulty study (Fig. 3.1): the MLP trained for one epoch from R random
    initializations and shufflings (SGD, lr 0.01, batch 16), on the real digits (the study
    runs this for real, randX and randY data in one program), with the final training
    accuracy of every run:

    * ``vmapped``: `jaxthesis.memorization.make_classifier_task` in one `engine.Runner`
      program over the restart axis, as `jaxthesis memorization difficulty` runs it, with
      the restarts vmapped. The study leaves the layout to the Runner (`lax.map` on a CPU,
      `vmap` on accelerators); where that differs (a CPU) it is timed too ("study layout");
    * ``loop``: the same jaxthesis program for one restart, called R times from Python;
    * ``torch``: PyTorch eager, one initialization after another, a Python loop over steps.

    Check stored in the JSON: the jaxthesis variants give the same accuracies (same keys), and
    PyTorch's mean accuracy over its R runs agrees with jaxthesis's within their spread.

Prints a table, writes results/memorization_speed.json and .png. Targets: >= 5x PyTorch on
(a) and on (b), on a CPU and on a GPU. Both workloads are matrix products, and the run also
measures the float32 matmul roof (a 4096² product in JAX) and prints, per workload, the
GFLOP/s jaxthesis reached (exact matmul FLOP counts: `difficulty_step_flops`, and for LASS
one forward and one input-gradient pass per iteration) and the rate that 5x PyTorch would
need: where that exceeds the roof, no formulation can meet the target on that machine.
For (b) it also times the step's products alone at the step's shapes (batch-16 GEMMs,
`products_only_rates`, in JAX and in PyTorch): the rate one SGD run of this size can reach.

    python benchmarks/memorization_speed.py            # R = 100, width 512; 1,000 points
    python benchmarks/memorization_speed.py --quick    # a smoke run (seconds), torch on 1 thread
    python benchmarks/memorization_speed.py --torch-threads 1   # if other jobs share the cores
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench  # noqa: E402

PIXEL_RANGE = 255.0


def mnist_vectors() -> dict:
  """The built-in digits as [0, 1] vectors: `{"train": (x [4000, 784], y), "test": ...}`."""
  from jaxthesis.data import load_mnist
  return {split: (d.images.reshape(len(d.labels), 784).astype(np.float32) / 255.0,
                  d.labels.astype(np.int32))
          for split, d in (("train", load_mnist("train", "builtin")),
                           ("test", load_mnist("test", "builtin")))}


def mlp_macs(width: int) -> int:
  """Multiply-adds of one 784-width-width-10 forward pass per example."""
  return 784 * width + width * width + width * 10


# ------------------------------------------------------------------------------ (a) CSR


def jax_csr(params):
  """`(params, x, key, radius, beta) -> LASSResult`, jitted (LASS defaults otherwise)."""
  import jax
  from jaxthesis.memorization import critical_samples, models

  @jax.jit
  def search(params, x, key, radius=critical_samples.RADIUS, beta=critical_samples.BETA):
    return critical_samples.lass(lambda z: models.mlp_apply(params, z), x, key,
                                 radius=radius, beta=beta)

  return search


def torch_mlp(torch, params, device):
  """The jaxthesis MLP's weights as torch tensors, and its forward pass."""
  as_tensor = lambda a: torch.tensor(np.asarray(a), device=device)
  weights = [(as_tensor(w), as_tensor(b)) for w, b in params]

  def forward(x):
    for w, b in weights[:-1]:
      x = torch.relu(x @ w + b)
    w, b = weights[-1]
    return x @ w + b

  return forward


def torch_lass(torch, forward, x, *, alpha=0.25, beta=0.2, radius=0.3,
               max_iterations=100, data_range=(0.0, 1.0), generator=None):
  """Alg. 1 in PyTorch eager: `(critical bool[B], points [B, D], iterations)`.

  Batched over samples, a Python loop over iterations; samples that turned critical leave
  the batch. Units as in `jaxthesis.memorization.lass` (0-255 pixels, rescaled to the data).
  """
  low, high = data_range
  scale = (high - low) / PIXEL_RANGE
  alpha, beta, radius = alpha * scale, beta * scale, radius * scale
  with torch.no_grad():
    labels = forward(x).argmax(-1)
  box_low, box_high = (x - radius).clamp(min=low), (x + radius).clamp(max=high)
  points = x.clone()
  critical = torch.zeros(len(x), dtype=torch.bool, device=x.device)
  active = torch.arange(len(x), device=x.device)
  iterations = 0
  for iterations in range(1, max_iterations + 1):
    x_tilde = points[active].requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(forward(x_tilde), labels[active], reduction="sum")
    grad, = torch.autograd.grad(loss, x_tilde)
    with torch.no_grad():
      noise = torch.randn(x_tilde.shape, generator=generator, device=x.device)
      candidate = torch.minimum(torch.maximum(x_tilde + alpha * grad.sign() + beta * noise,
                                              box_low[active]), box_high[active])
      flipped = forward(candidate).argmax(-1) != labels[active]
      points[active] = candidate
      critical[active[flipped]] = True
      active = active[~flipped]
    if len(active) == 0:
      break
  return critical, points, iterations


def csr_case(torch, device, args, digits, params) -> dict:
  """(a) for the MLP `params` (784-width-width-10) on the first validation digits."""
  import jax
  import jax.numpy as jnp
  from jaxthesis.memorization import models
  num_points, width = (200 if args.quick else 1000), int(params[0][0].shape[1])
  vx, vy = (a[:num_points] for a in digits["test"])
  search = jax_csr(params)
  xv, key = jnp.asarray(vx), jax.random.PRNGKey(1)
  calls = {"jaxthesis": lambda: search(params, xv, key).critical}
  case = {"points": num_points, "width": width, "iterations_limit": 100}
  found = search(params, xv, key)
  case["val_acc"] = float(np.mean(np.argmax(np.asarray(models.mlp_apply(params, xv)), -1) == vy))
  case["csr"] = {"jaxthesis": float(np.mean(np.asarray(found.critical)))}
  case["iterations"] = {"jaxthesis": int(found.iterations)}
  if torch is not None:
    forward = torch_mlp(torch, params, device)
    tx = torch.tensor(vx, device=device)
    gen = torch.Generator(device=device).manual_seed(1)
    calls["torch"] = lambda: torch_lass(torch, forward, tx, generator=gen)[0]
    critical, _, iterations = torch_lass(torch, forward, tx, generator=gen)
    case["csr"]["torch"] = float(critical.float().mean())
    case["iterations"]["torch"] = iterations
    # Same CSR within sampling noise: two binomial proportions over the same points.
    p = 0.5 * (case["csr"]["jaxthesis"] + case["csr"]["torch"])
    tolerance = 4 * np.sqrt(2 * max(p * (1 - p), 1 / num_points) / num_points)
    gap = abs(case["csr"]["jaxthesis"] - case["csr"]["torch"])
    # Deterministic search (β = 0) in a box of 8 pixel values: the same samples flagged.
    det_jax = np.asarray(search(params, xv, key, 8.0, 0.0).critical)
    det_torch = torch_lass(torch, forward, tx, beta=0.0, radius=8.0)[0].cpu().numpy()
    agreement = float(np.mean(det_jax == det_torch))
    case["check"] = {
        "csr_gap": gap, "csr_tolerance": float(tolerance),
        "deterministic_csr": {"jaxthesis": float(det_jax.mean()), "torch": float(det_torch.mean())},
        "deterministic_agreement": agreement,
        "same": bool(gap <= tolerance and agreement >= 0.98)}
  t = _bench.time_interleaved(calls, repeats=args.repeats, warmup=0)  # warmed up above
  case["seconds"] = {k: v["median"] for k, v in t.items()}
  # jaxthesis runs the whole batch every iteration: one forward pass at the candidate (the
  # check, and the next gradient's forward) and one backward pass for the input gradient
  # (the same products transposed: no weight gradients); before the loop, the labels'
  # forward pass and the first gradient (forward + backward).
  case["jaxthesis_flops"] = float(2 * mlp_macs(width) * num_points
                                  * (3 + 2 * case["iterations"]["jaxthesis"]))
  return case


# ----------------------------------------------------------------------- (b) difficulty


def jax_difficulty(x, y, config, study_layout: bool = True):
  """`{variant: fn}`: one epoch from `restarts` initializations, each fn returning the final
  training accuracies. ``vmapped``: the restarts batched (`restart_axis="vmap"`);
  ``study layout`` (where it differs, i.e. on a CPU; not with --quick): the Runner's layout
  `jaxthesis memorization difficulty` uses; ``loop``: one restart at a time from Python."""
  import jax
  import jax.numpy as jnp
  from jaxthesis import engine
  from jaxthesis.memorization import models, train

  model = models.mlp(784, 10, config.width)
  task = train.make_classifier_task(model, max_examples=len(y), batch_size=config.batch_size)
  steps = len(y) // config.batch_size
  r = config.restarts
  data = {"train_x": jnp.asarray(x)[None], "train_y": jnp.asarray(y)[None]}
  hp = train.classifier_hparams(r, width=config.width, num_examples=len(y),
                                learning_rate=config.learning_rate)
  keys = jax.random.split(jax.random.PRNGKey(2), r)
  # One compiled chunk per run: the timing is the program's, not the progress updates'.
  runner = lambda axis: engine.Runner(task, steps, eval_every=steps, chunk_size=steps,
                                      progress=False, restart_axis=axis)
  batched, default = runner("vmap"), runner("auto")

  def accuracies(run_with, keys, hp):
    return run_with.run(keys, hp, data).history.evals["train_acc"][:, -1]

  one = jax.tree_util.tree_map(lambda a: a[:1], hp)
  calls = {"vmapped": lambda: accuracies(batched, keys, hp)}
  if study_layout and default.restart_axis != "vmap":
    calls[f"study layout ({default.restart_axis})"] = lambda: accuracies(default, keys, hp)
  calls["loop"] = lambda: np.concatenate([accuracies(default, keys[i:i + 1], one)
                                          for i in range(r)])

  def first_run_params():  # the loop's first run (compiled already)
    return jax.tree_util.tree_map(lambda a: a[0], default.run(keys[:1], one, data).state.params)

  return calls, default.restart_axis, steps, first_run_params


def torch_difficulty(torch, device, x, y, config):
  """The same R one-epoch runs in PyTorch eager, one after another; final train accs."""
  tx, ty = torch.tensor(x, device=device), torch.tensor(y, device=device).long()
  n, batch, width = len(y), config.batch_size, config.width
  steps = n // batch
  gen = torch.Generator(device=device).manual_seed(2)
  sizes = [784, width, width, 10]

  def one_run():
    params = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
      limit = float(np.sqrt(6.0 / (fan_in + fan_out)))  # Glorot uniform, as jaxthesis
      w = (torch.rand(fan_in, fan_out, generator=gen, device=device) * 2 - 1) * limit
      params += [w.requires_grad_(True), torch.zeros(fan_out, device=device, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=config.learning_rate)

    def forward(z):
      for i in range(0, 4, 2):
        z = torch.relu(z @ params[i] + params[i + 1])
      return z @ params[4] + params[5]

    order = torch.randperm(n, generator=gen, device=device)
    for s in range(steps):
      idx = order[s * batch:(s + 1) * batch]
      opt.zero_grad()
      torch.nn.functional.cross_entropy(forward(tx[idx]), ty[idx]).backward()
      opt.step()
    with torch.no_grad():
      return float((forward(tx).argmax(-1) == ty).float().mean())

  return lambda: np.array([one_run() for _ in range(config.restarts)])


def difficulty_step_flops(width: int, batch: int) -> int:
  """Matmul FLOPs of one SGD step of the 784-width-width-10 MLP: the forward pass, every
  layer's weight gradient, and the input gradients of the second and third layers (the
  first layer's is not needed)."""
  return 2 * batch * (2 * mlp_macs(width) + width * width + width * 10)


def products_only_rates(torch, device, width: int, batch: int, steps: int,
                        repeats: int) -> dict:
  """GFLOP/s of the difficulty step's matrix products alone, at the step's shapes.

  One run of `steps` SGD-like updates of a 784-width-width-10 network that keeps only the
  products `difficulty_step_flops` counts (forward `X W1`, `H1 W2`, `H2 W3`; weight
  gradients `XᵀG1`, `H1ᵀG2`, `H2ᵀG3`; input gradients `G3 W3ᵀ`, `G2 W2ᵀ`) with no
  nonlinearity, loss or bias: in JAX as one `lax.scan` (a plain GEMM per product) and in
  PyTorch eager as a Python loop. This is the rate at which batch-`batch` products of these
  shapes run on this machine, which no formulation of one SGD run beats; both libraries'
  rates are returned (`{"jax": ..., "torch": ...}`), so that the needed rate of a target
  can be set beside what the products allow.
  """
  import jax
  import jax.numpy as jnp
  rng = np.random.default_rng(0)
  sizes = [784, width, width, 10]
  weights = [(rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
             for a, b in zip(sizes, sizes[1:])]
  xs = rng.standard_normal((steps, batch, 784)).astype(np.float32)
  lr = np.float32(1e-4)

  def step(ws, x):
    w1, w2, w3 = ws
    h1 = x @ w1
    h2 = h1 @ w2
    g3 = h2 @ w3              # stands in for the output gradient
    g2 = g3 @ w3.T
    g1 = g2 @ w2.T
    return (w1 - lr * (x.T @ g1), w2 - lr * (h1.T @ g2), w3 - lr * (h2.T @ g3)), None

  run = jax.jit(lambda ws, xs: jax.lax.scan(step, ws, xs)[0])
  jws, jxs = tuple(jnp.asarray(w) for w in weights), jnp.asarray(xs)
  fns = {"jax": lambda: run(jws, jxs)}
  if torch is not None:
    tws = [torch.tensor(w, device=device) for w in weights]
    txs = torch.tensor(xs, device=device)

    def torch_run():
      w1, w2, w3 = (w.clone() for w in tws)
      with torch.no_grad():
        for x in txs:
          h1 = x @ w1
          h2 = h1 @ w2
          g3 = h2 @ w3
          g2 = g3 @ w3.T
          g1 = g2 @ w2.T
          w1.sub_(lr * (x.T @ g1))
          w2.sub_(lr * (h1.T @ g2))
          w3.sub_(lr * (h2.T @ g3))
      return w3

    fns["torch"] = torch_run
  timings = _bench.time_interleaved(fns, repeats=repeats)
  flops = difficulty_step_flops(width, batch) * steps
  return {name: flops / t["best"] / 1e9 for name, t in timings.items()}


def difficulty_case(torch, device, args, digits) -> dict:
  from jaxthesis.experiments.memorization import difficulty
  config = difficulty.get_config(args.quick)
  x, y = digits["train"]
  x, y = x[:config.num_train], y[:config.num_train]
  calls, layout, steps, first_run_params = jax_difficulty(x, y, config,
                                                          study_layout=not args.quick)
  if torch is not None:
    calls["torch"] = torch_difficulty(torch, device, x, y, config)
  accs = {name: np.asarray(fn(), np.float64) for name, fn in calls.items()}
  t = _bench.time_interleaved(calls, repeats=args.repeats, warmup=0)  # warmed up above
  r = config.restarts
  case = {"restarts": r, "num_train": config.num_train, "width": config.width,
          "batch_size": config.batch_size, "steps_per_run": steps, "restart_layout": layout,
          "seconds": {k: v["median"] for k, v in t.items()},
          "mean_train_acc": {k: float(v.mean()) for k, v in accs.items()},
          "jaxthesis_flops": float(difficulty_step_flops(config.width, config.batch_size)
                                   * steps * r
                                   + 2 * mlp_macs(config.width) * config.num_train * r)}
  # Same keys, same program: the jaxthesis variants differ by float rounding at most.
  jax_gap = float(max(np.max(np.abs(accs["vmapped"] - v)) for k, v in accs.items()
                      if k != "torch"))
  check = {"jaxthesis_variants_max_gap": jax_gap, "jaxthesis_variants_equal": jax_gap <= 0.01}
  if torch is not None:
    spread = np.sqrt((accs["vmapped"].var() + accs["torch"].var()) / r)
    gap = abs(accs["vmapped"].mean() - accs["torch"].mean())
    check.update({"torch_gap": float(gap), "torch_tolerance": float(4 * spread + 0.02),
                  "torch_same": bool(gap <= 4 * spread + 0.02)})
  check["same"] = bool(check["jaxthesis_variants_equal"] and check.get("torch_same", True))
  case["check"] = check
  case["products_only_gflops"] = products_only_rates(
      torch, device, config.width, config.batch_size, steps, repeats=max(2, args.repeats))
  return case, first_run_params()


# ---------------------------------------------------------------------------------- main


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  _bench.add_common_args(parser)
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed calls per variant (default 3; 1 with --quick, whose times "
                           "are smoke figures)")
  parser.add_argument("--torch-threads", type=int, default=None,
                      help="torch intra-op threads (default: torch's choice; 1 with --quick). "
                           "On a machine whose cores are busy with other work, PyTorch's "
                           "spinning thread pool slows these small ops 10-100x")
  args = parser.parse_args(argv)
  if args.repeats is None:
    args.repeats = 1 if args.quick else 3
  if args.repeats < 1:
    parser.error(f"--repeats must be >= 1, got {args.repeats}")
  torch, why = _bench.import_torch()
  threads = args.torch_threads or (1 if args.quick else None)
  if torch is not None and threads is not None:
    if threads < 1:
      parser.error(f"--torch-threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
  device, device_note = ("cpu", None) if torch is None else _bench.torch_device(torch)
  digits = mnist_vectors()
  # The float32 matmul roof of this machine, measured in this run: what any formulation of
  # these workloads (jaxthesis's or PyTorch's) can at most reach.
  roof = _bench.matmul_peak("float32", size=1024 if args.quick else 4096)
  diff, params = difficulty_case(torch, device, args, digits)
  csr = csr_case(torch, device, args, digits, params)

  ms = lambda s: f"{1e3 * s:.1f}" if s is not None else "-"
  ratio = lambda a, b: f"{b / a:.2f}x" if b is not None else "-"
  cs, ds = csr["seconds"], diff["seconds"]
  csr_name = (f"CSR, LASS {csr['iterations_limit']} it., {csr['points']} points, MLP width "
              f"{csr['width']}")
  diff_name = (f"difficulty, {diff['restarts']} inits x 1 epoch ({diff['steps_per_run']} "
               f"steps), width {diff['width']}")
  variants = {"vmapped": "restarts vmapped", "loop": "Python loop over inits",
              **{k: k for k in ds if k.startswith("study layout")}}
  rows = [[csr_name, "jaxthesis (one while_loop)", ms(cs["jaxthesis"]), ms(cs.get("torch")),
           ratio(cs["jaxthesis"], cs.get("torch"))]]
  rows += [[diff_name if i == 0 else "", f"jaxthesis, {label}", ms(ds[k]), ms(ds.get("torch")),
            ratio(ds[k], ds.get("torch"))] for i, (k, label) in enumerate(variants.items())]
  print(_bench.format_table(["workload", "variant", "ms", "torch ms", "vs torch"], rows))
  print(f"CSR: {csr['csr']}, iterations {csr['iterations']}, validation accuracy "
        f"{csr['val_acc']:.3f}; difficulty: mean train acc "
        f"{ {k: round(v, 4) for k, v in diff['mean_train_acc'].items()} }; "
        f"loop / vmapped {ds['loop'] / ds['vmapped']:.2f}x")
  for name, case in (("CSR", csr), ("difficulty", diff)):
    if "check" in case:
      print(f"{name} check: {case['check']}")
  # The study's own layout (where it differs from vmap, i.e. on a CPU) is its speed.
  study = next((k for k in ds if k.startswith("study layout")), "vmapped")
  ceiling = {}
  for name, case, ours in (("CSR", csr, cs["jaxthesis"]), ("difficulty", diff, ds[study])):
    line = {"jaxthesis_gflops": case["jaxthesis_flops"] / ours / 1e9, "roof_gflops": roof / 1e9}
    if "torch" in case["seconds"]:  # PyTorch does at least the same products
      line["needed_for_5x_torch_gflops"] = (5 * case["jaxthesis_flops"]
                                            / case["seconds"]["torch"] / 1e9)
    if "products_only_gflops" in case:
      line["products_only_gflops"] = case["products_only_gflops"]
    ceiling[name] = line
    products = line.get("products_only_gflops", {})
    print(f"{name}: jaxthesis {line['jaxthesis_gflops']:.0f} GFLOP/s; float32 matmul roof "
          f"measured in this run {line['roof_gflops']:.0f} GFLOP/s"
          + (f"; the step's products alone at its shapes: "
             + ", ".join(f"{k} {v:.0f}" for k, v in products.items()) + " GFLOP/s"
             if products else "")
          + (f"; 5x PyTorch would need {line['needed_for_5x_torch_gflops']:.0f} GFLOP/s"
             if "needed_for_5x_torch_gflops" in line else ""))
  if why:
    print(why)
  else:
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} intra-op thread(s)")
  if device_note:
    print(device_note)
  print(_bench.loaded_note())

  note = why or device_note or ""
  results = {"quick": bool(args.quick), "torch_device": device if torch is not None else None,
             "torch_threads": torch.get_num_threads() if torch is not None else None,
             "csr": csr, "difficulty": diff, "matmul_roof_flops": roof,
             "ceilings": ceiling,
             "checks": {"csr_same": csr.get("check", {}).get("same"),
                        "difficulty_same": diff["check"]["same"]}}
  results["summary"] = [_bench.summary_row(
      csr_name, cs["jaxthesis"], unit="run", flops=csr["jaxthesis_flops"],
      torch_seconds=cs.get("torch"), note=note)]
  results["summary"] += [_bench.summary_row(
      f"{diff_name}, {label}", ds[k], unit="run", flops=diff["jaxthesis_flops"],
      torch_seconds=ds.get("torch"), note=note) for k, label in variants.items()]
  name = "memorization_speed_quick" if args.quick else "memorization_speed"
  print(_bench.write_json(results, args.out, name))
  series = {"jaxthesis": [cs["jaxthesis"], ds["vmapped"]],
            "jaxthesis loop": [np.nan, ds["loop"]]}
  if torch is not None:
    series["torch"] = [cs["torch"], ds["torch"]]
  print(_bench.bar_plot(os.path.join(args.out, f"{name}.png"), ["CSR (LASS)", "difficulty"],
                        {k: [1e3 * v for v in s] for k, s in series.items()},
                        ylabel="ms / run", title="memorization workloads", log=True))
  return 0


if __name__ == "__main__":
  sys.exit(main())
