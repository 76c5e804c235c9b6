"""The study contract, over every registered study: a quick run writes the shared layout,
and `plot` redraws the figures from the saved files alone."""
import ast
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import pytest

from jaxthesis import cli
from jaxthesis.experiments import _config, _results, registry

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUDIES = registry.STUDIES
IDS = [f"{s.group}-{s.command}" for s in STUDIES]


@pytest.mark.parametrize("study", STUDIES, ids=IDS)
def test_study_follows_the_contract(study, tmp_path):
  module = registry.load(study)
  assert dataclasses.is_dataclass(module.Config)
  assert module.Config.__dataclass_params__.frozen
  assert isinstance(module.REFERENCE.get("source"), str) and module.REFERENCE["source"]
  config = module.get_config(True, **study.smoke)
  assert isinstance(config, module.Config)
  with pytest.raises(_config.UsageError, match="no field"):
    module.get_config(True, no_such_field=1)

  results = module.run(config, progress=False, checkpoint_dir=None)
  assert not any(tmp_path.iterdir())  # run writes nothing
  out = str(tmp_path / "out")
  written = module.save(results, out)
  saved = json.loads((tmp_path / "out" / "results.json").read_text())
  for key in _results.SHARED_KEYS:
    assert key in saved, key
  assert saved["experiment"] == f"{study.group}/{study.command}"
  assert saved["reference"]["source"] == module.REFERENCE["source"]
  # The config in results.json is the one that ran (quick settings included).
  assert saved["config"]["seed"] == config.seed
  for name, value in dataclasses.asdict(config).items():
    assert saved["config"][name] == _results.to_jsonable(value), name
  assert all(os.path.exists(p) for p in written)

  paths = module.plot(out)
  assert paths and all(p.endswith(".png") and os.path.getsize(p) > 0 for p in paths)
  for p in paths:
    os.remove(p)
  assert module.plot(out) == paths  # redrawn from the files alone
  text = module.table(results)
  assert module.REFERENCE["source"] in text  # the table names what it is compared with


def test_registry_names_are_unique_and_groups_known():
  keys = [(s.group, s.command) for s in STUDIES]
  assert len(set(keys)) == len(keys)
  assert {s.group for s in STUDIES} <= set(registry.GROUPS)


def test_cli_lists_every_registered_command(capsys):
  for group in {s.group for s in STUDIES}:
    with pytest.raises(SystemExit):
      cli.main([group, "--help"])
    listed = capsys.readouterr().out
    for study in registry.studies(group):
      assert study.command in listed


def _library_files():
  for path in (ROOT / "jaxthesis").rglob("*.py"):
    rel = path.relative_to(ROOT / "jaxthesis")
    if rel.parts[0] != "experiments" and rel.name != "cli.py":
      yield path


def test_library_never_imports_experiments():
  offenders = []
  for path in _library_files():
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      if any(n.startswith("jaxthesis.experiments") for n in names):
        offenders.append(str(path.relative_to(ROOT)))
  assert not offenders, offenders
  modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                   for p in _library_files())
  code = ("import sys, importlib\n"
          f"for name in {modules!r}:\n"
          "  importlib.import_module(name)\n"
          "print(sorted(k for k in sys.modules if k.startswith('jaxthesis.experiments')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.strip() == "[]"
