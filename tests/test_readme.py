"""The README's Python example runs as written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_python_example_runs(capsys, tmp_path, monkeypatch):
  text = open(os.path.join(ROOT, "README.md")).read()
  monkeypatch.chdir(tmp_path)  # the examples write their runs/ folders here
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert blocks, "README has no python example"
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {"__name__": "readme_example"})
  printed = capsys.readouterr().out
  assert printed.count("\n") >= 5
  assert (tmp_path / "runs" / "demo" / "results.json").exists()
  assert (tmp_path / "runs" / "demo" / "training_curves.png").exists()
