"""The `jaxthesis` command line: `jaxthesis GROUP COMMAND [options]`.

Every command is a study of `jaxthesis.experiments.registry`: the CLI adds the shared
options (--out, --seed, --quick, --no-progress, --no-checkpoint, --fresh) to the study's
own, builds its Config from the options given, checks that --out is writable, runs it,
saves results.json + arrays.npz, draws the plots and prints the table.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
from typing import Sequence

SHARED_DESTS = ("out", "seed", "quick", "no_progress", "no_checkpoint", "fresh")


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2, no usage dump
    sys.stderr.write(f"{self.prog}: error: {message}\n")
    sys.exit(2)


def _add_shared_options(parser: argparse.ArgumentParser, default_out: str) -> None:
  from jaxthesis.experiments import _cli
  parser.add_argument("--out", default=default_out,
                      help=f"output directory for results.json, arrays.npz and plots "
                           f"(default {default_out})")
  parser.add_argument("--seed", type=_cli.seed("--seed"), default=None,
                      help="base PRNG seed (default 0)")
  parser.add_argument("--quick", action="store_true",
                      help="a seconds-long smoke run (fewer steps, restarts and data)")
  parser.add_argument("--no-progress", action="store_true", help="hide progress output")
  parser.add_argument("--no-checkpoint", action="store_true",
                      help="do not checkpoint (by default a rerun with the same --out resumes)")
  parser.add_argument("--fresh", action="store_true", help="discard checkpoints in --out first")


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
  """The parser; only the study named by `argv`'s first two words is imported (to add its
  own options), so `jaxthesis --help` and a typo cost no heavy imports."""
  from jaxthesis.experiments import registry

  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _Parser(prog="jaxthesis", description=__doc__.splitlines()[0])
  groups = parser.add_subparsers(dest="group", metavar="GROUP", parser_class=_Parser)
  groups.required = True
  for group, help_text in registry.GROUPS.items():
    studies = registry.studies(group)
    if not studies:
      continue
    commands = groups.add_parser(group, help=help_text).add_subparsers(
        dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for study in studies:
      p = commands.add_parser(study.command, help=study.help, description=study.help)
      if argv[:2] == [group, study.command]:
        module = registry.load(study)
        reference = module.REFERENCE.get("source")
        if reference:
          p.description = f"{study.help}. Reproduces {reference} of the thesis."
        module.add_arguments(p)
      _add_shared_options(p, f"runs/{group}/{study.command.replace('-', '_')}")
      p.set_defaults(study=study)
  return parser


def _flag_names(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
  """Config field -> the option that sets it, for the chosen command."""
  sub = parser
  for dest in ("group", "command"):
    action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
    sub = action.choices[getattr(args, dest)]
  return {a.dest: a.option_strings[-1] for a in sub._actions if a.option_strings}


def run_study(args: argparse.Namespace) -> int:
  from jaxthesis.experiments import _results, registry

  module = registry.load(args.study)
  fields = {f.name for f in dataclasses.fields(module.Config)}
  overrides = {k: v for k, v in vars(args).items()
               if k in fields and k not in SHARED_DESTS and v is not None}
  if args.seed is not None:
    overrides["seed"] = args.seed
  config = module.get_config(args.quick, **overrides)
  out = _results.prepare_out(args.out, f"{args.group}/{args.command}")
  checkpoints = os.path.join(out, "checkpoints")
  if args.fresh:
    shutil.rmtree(checkpoints, ignore_errors=True)
  results = module.run(config, progress=not args.no_progress,
                       checkpoint_dir=None if args.no_checkpoint else checkpoints)
  paths = module.save(results, out) + module.plot(out)
  print(module.table(results))
  print(f"wrote {', '.join(paths)} in {results['wall_seconds']:.0f} s")
  return 0


def main(argv: Sequence[str] | None = None) -> int:
  from jaxthesis.data import DataSourceError
  from jaxthesis.engine import CheckpointMismatchError
  from jaxthesis.experiments._config import UsageError

  argv = list(sys.argv[1:] if argv is None else argv)
  parser = build_parser(argv)
  args = parser.parse_args(argv)
  try:
    return run_study(args)
  except (UsageError, DataSourceError, FloatingPointError, CheckpointMismatchError) as e:
    if os.environ.get("JAXTHESIS_TRACEBACK"):
      raise
    message = str(e)
    field = getattr(e, "field", None)
    if field:
      flag = _flag_names(parser, args).get(field)
      message = message.replace(f"config.{field}", flag) if flag else message
    sys.stderr.write(f"jaxthesis {args.group} {args.command}: error: {message}\n")
    return 2
  except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    return 130


if __name__ == "__main__":
  sys.exit(main())
