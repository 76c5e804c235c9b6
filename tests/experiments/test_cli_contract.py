"""What the command line promises for every study: one-line usage errors naming the flag,
--out checked before anything runs, real bugs keep their traceback."""
import io

import pytest

from jaxthesis import _progress, cli
from jaxthesis.experiments import registry

CMNIST = registry.load(registry.find("rex", "cmnist"))


def _no_run(*args, **kwargs):
  raise AssertionError("run() must not start")


def test_unwritable_out_fails_before_anything_runs(monkeypatch, capsys):
  monkeypatch.setattr(CMNIST, "run", _no_run)
  code = cli.main(["rex", "cmnist", "--quick", "--out", "/proc/forbidden/x"])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert "--out '/proc/forbidden/x' is not a writable directory" in err
  assert len(err.splitlines()) == 1


def test_config_error_names_the_flag(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(CMNIST, "run", _no_run)
  code = cli.main(["rex", "cmnist", "--data-dir", str(tmp_path / "absent"),
                   "--out", str(tmp_path / "out")])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert err.endswith(f"--data-dir {str(tmp_path / 'absent')!r} does not exist")
  assert "config." not in err and len(err.splitlines()) == 1


def test_other_exceptions_keep_their_traceback(monkeypatch, tmp_path):
  def broken(*args, **kwargs):
    raise ValueError("a bug, not a usage error")
  monkeypatch.setattr(CMNIST, "run", broken)
  with pytest.raises(ValueError, match="a bug"):
    cli.main(["rex", "cmnist", "--quick", "--out", str(tmp_path)])


def test_progress_prints_short_lines_when_not_a_terminal():
  stream = io.StringIO()
  bar = _progress.LineProgress(total=200, desc="train", every_percent=10, file=stream)
  for _ in range(200):
    bar.update(1)
  lines = stream.getvalue().splitlines()
  assert len(lines) == 10 and "\r" not in stream.getvalue()
  assert lines[0].startswith("train: 10% (20/200)") and lines[-1].startswith("train: 100% (200/200)")


def test_a_checkpoint_of_another_configuration_is_one_line(tmp_path, capsys):
  meta_dir = tmp_path / "checkpoints" / "erm-population"
  meta_dir.mkdir(parents=True)
  (meta_dir / "run_meta.json").write_text('{"fingerprint": "another run"}')
  code = cli.main(["rex", "cmnist", "--quick", "--methods", "erm", "--data", "builtin",
                   "--out", str(tmp_path), "--no-progress"])
  assert code == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err
  last = err.strip().splitlines()[-1]
  assert last.startswith("jaxthesis rex cmnist: error:") and "another configuration" in last
  assert "--fresh" in last
