"""`jaxthesis naf ...`: the chapter-9 experiments (neural autoregressive flows).

Each command builds its experiment config (`get_config(quick)` plus overrides), calls the
experiment's `run(config, out_dir)`, writes `results.json` in the shared layout and prints
a table beside the thesis's result. Heavy imports happen inside the commands.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib

from jaxthesis.experiments import common

# command -> (module, help, thesis reference)
EXPERIMENTS = {
    "grid": ("jaxthesis.experiments.naf_grid",
             "MAF fits of 2-D Gaussian grids (Fig 9.6)",
             {"figure": "9.6", "expected": "affine collapses to few modes; DSF/DDSF "
                                           "recover the grid"}),
    "energy": ("jaxthesis.experiments.naf_energy",
               "IAF reverse-KL fits of the four 2-D energies (Fig 9.1)",
               {"figure": "9.1", "expected": "IAF-DSF fits the multimodal energies that "
                                             "IAF-affine misses"}),
    "sine": ("jaxthesis.experiments.naf_sine",
             "DSF posterior over a sine wave's frequency (Fig 9.8)",
             {"figure": "9.8", "expected": "posterior modes near f = 0, 0.6, 1.2, 1.8"}),
    "convergence": ("jaxthesis.experiments.naf_convergence",
                    "learning curves over 16 vmapped seeds (Fig 9.7)",
                    {"figure": "9.7", "expected": "DSF/DDSF converge faster and lower than "
                                                  "6-layer affine, MAF- and IAF-style"}),
}

MODEL_NAMES = ("affine", "dsf", "ddsf")


def add_commands(subparsers) -> None:
  for name, (_, help_text, _) in EXPERIMENTS.items():
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    common.add_output_args(p, f"runs/naf/{name}")
    p.add_argument("--steps", type=common.positive_int("--steps"), default=None,
                   help="training steps (default: the config's)")
    p.add_argument("--lr", type=common.nonnegative_float("--lr"), default=None,
                   help="Adam learning rate")
    if name in ("grid", "energy", "convergence"):
      p.add_argument("--models", type=common.name_list("--models", MODEL_NAMES),
                     default=None, help=f"comma-separated subset of {','.join(MODEL_NAMES)}")
    if name == "grid":
      p.add_argument("--modes", default=None,
                     help="comma-separated modes per dimension, e.g. 2,5,10")
    if name == "energy":
      p.add_argument("--energies", type=common.name_list("--energies",
                                                         ("u1", "u2", "u3", "u4")),
                     default=None, help="comma-separated subset of u1,u2,u3,u4")
    if name == "convergence":
      p.add_argument("--seeds", type=common.positive_int("--seeds"), default=None,
                     help="number of seeds (a vmap axis; default 16)")
    p.set_defaults(func=lambda args, name=name: _run_experiment(name, args))


def _overrides(name: str, args: argparse.Namespace) -> dict:
  out = {"seed": args.seed}
  if args.steps is not None:
    out["num_steps"] = args.steps
  if args.lr is not None:
    if args.lr <= 0:
      raise common.UsageError(f"--lr must be > 0, got {args.lr}")
    out["learning_rate"] = args.lr
  if getattr(args, "models", None):
    out["models"] = args.models
  if getattr(args, "energies", None):
    out["energies"] = args.energies
  if getattr(args, "seeds", None):
    out["num_seeds"] = args.seeds
  if getattr(args, "modes", None):
    try:
      modes = tuple(int(s) for s in args.modes.split(",") if s.strip())
    except ValueError:
      raise common.UsageError(f"--modes must be comma-separated integers, "
                              f"got {args.modes!r}") from None
    if not modes or any(m < 2 for m in modes):
      raise common.UsageError(f"--modes must list integers >= 2, got {args.modes!r}")
    out["modes"] = modes
  return out


def _run_experiment(name: str, args: argparse.Namespace) -> int:
  module_name, _, reference = EXPERIMENTS[name]
  module = importlib.import_module(module_name)
  config = dataclasses.replace(module.get_config(args.quick), **_overrides(name, args))
  clock = common.Stopwatch()
  metrics = module.run(config, args.out, progress=not args.no_progress)
  path = common.write_results(args.out, experiment=f"naf {name}", data="synthetic (built-in)",
                              config=config, metrics=metrics, reference=reference,
                              wall_seconds=clock(), quick=bool(args.quick))
  print(common.format_table(module.TABLE_HEADERS, module.table_rows(metrics, config)))
  print(f"wrote {path}")
  return 0
