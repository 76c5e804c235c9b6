"""The `jaxthesis` command line: `jaxthesis GROUP COMMAND [options]`.

Each command group lives in its experiments module, which exposes
`add_commands(subparsers)`; commands set `func(args) -> int` as their default.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Sequence

# Group name -> (module, help). Modules are imported when the parser is built; they must
# defer heavy imports (jax, matplotlib) to the command functions.
COMMAND_GROUPS = {
    "rex": ("jaxthesis.experiments.rex._cli", "Risk Extrapolation (thesis chapter 5)"),
    "naf": ("jaxthesis.experiments.naf._cli", "Neural autoregressive flows (thesis chapter 9)"),
}


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # one line, exit 2, no usage dump
    sys.stderr.write(f"{self.prog}: error: {message}\n")
    sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxthesis", description=__doc__.splitlines()[0])
  groups = parser.add_subparsers(dest="group", metavar="GROUP", parser_class=_Parser)
  groups.required = True
  for name, (module_name, help_text) in COMMAND_GROUPS.items():
    try:
      module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
      if e.name != module_name:
        raise
      continue  # group not built yet
    group_parser = groups.add_parser(name, help=help_text)
    commands = group_parser.add_subparsers(dest="command", metavar="COMMAND",
                                           parser_class=_Parser)
    commands.required = True
    module.add_commands(commands)
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  from jaxthesis.experiments._common import UsageError
  from jaxthesis.data import DataSourceError

  args = build_parser().parse_args(argv)
  try:
    return int(args.func(args) or 0)
  except (UsageError, DataSourceError, ValueError, TypeError, FloatingPointError) as e:
    if os.environ.get("JAXTHESIS_TRACEBACK"):
      raise
    sys.stderr.write(f"jaxthesis {args.group} {args.command}: error: {e}\n")
    return 2
  except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    return 130


if __name__ == "__main__":
  sys.exit(main())
