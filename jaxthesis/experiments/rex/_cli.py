"""`jaxthesis rex ...`: the Risk Extrapolation experiments (thesis chapter 5)."""
from __future__ import annotations

import argparse
import importlib

from jaxthesis.experiments import _common as common

# Further `rex` commands live in their own experiment modules, each with add_commands().
_EXTRA_MODULES = (
    "jaxthesis.experiments.rex.covariate_shift",
    "jaxthesis.experiments.rex.risk_plane",
    "jaxthesis.experiments.rex.sem",
    "jaxthesis.experiments.rex.toy",
    "jaxthesis.experiments.rex.waterfall",
    "jaxthesis.experiments.rex.search",
    "jaxthesis.experiments.rex.selection",
)


def _cmnist(args: argparse.Namespace) -> int:
  from jaxthesis.experiments.rex import cmnist as rex_cmnist

  config = rex_cmnist.CMNISTConfig(
      data=args.data, data_dir=args.data_dir, noise=args.noise, methods=args.methods,
      restarts=args.restarts, seed=args.seed, out=args.out, quick=args.quick,
      progress=not args.no_progress, checkpoint=not args.no_checkpoint,
      irm_estimator=args.irm_estimator,
      reset_optimizer_at_anneal=args.reset_optimizer_at_anneal)
  if args.fresh:
    rex_cmnist.clear_checkpoints(args.out)
  results = rex_cmnist.run(config)
  print(rex_cmnist.table(results))
  print(f"wrote {args.out}/results.json and {', '.join(results.get('plots', []))} "
        f"in {results['wall_seconds']:.0f} s")
  return 0


def add_commands(subparsers) -> None:
  from jaxthesis.experiments.rex.cmnist import ALL_METHODS, DEFAULT_METHODS

  p = subparsers.add_parser(
      "cmnist", help="Colored MNIST: ERM / IRMv1 / V-REx / MM-REx / RI / grayscale (Table 5.II)",
      description="Trains every method on Colored MNIST with all restarts as one compiled "
                  "program and prints train/test accuracy beside the thesis's Table 5.II.")
  common.add_data_args(p)
  p.add_argument("--noise", choices=("fixed", "population"), default=None,
                 help="fixed: label noise and colours drawn once (the paper); population: "
                      "redrawn every step. Default: population on built-in data, fixed on TFDS")
  p.add_argument("--methods", type=common.name_list("--methods", ALL_METHODS),
                 default=DEFAULT_METHODS, help=f"comma-separated, from {','.join(ALL_METHODS)}")
  p.add_argument("--restarts", type=common.positive_int("--restarts"), default=10)
  p.add_argument("--irm-estimator", choices=("biased", "unbiased"), default="biased")
  p.add_argument("--reset-optimizer-at-anneal", action="store_true",
                 help="re-initialize Adam when the penalty switches on (DomainBed)")
  p.add_argument("--no-checkpoint", action="store_true",
                 help="do not checkpoint (by default a rerun with the same --out resumes)")
  p.add_argument("--fresh", action="store_true", help="discard checkpoints in --out first")
  common.add_output_args(p, "runs/rex_cmnist")
  p.set_defaults(func=_cmnist)

  for name in _EXTRA_MODULES:
    try:
      module = importlib.import_module(name)
    except ModuleNotFoundError as e:
      if e.name != name:
        raise
      continue
    module.add_commands(subparsers)
