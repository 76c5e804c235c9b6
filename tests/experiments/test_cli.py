"""The command line: bad input is one line naming the option; a quick run writes results."""
import json
import os

import pytest

from jaxthesis import cli


@pytest.mark.parametrize("argv,needle", [
    (["rex", "cmnist", "--methods", "erm,foo"], "--methods: unknown 'foo'"),
    (["rex", "cmnist", "--methods", ""], "--methods is empty"),
    (["rex", "cmnist", "--restarts", "0"], "--restarts must be >= 1"),
    (["rex", "cmnist", "--restarts", "ten"], "--restarts must be an integer"),
    (["rex", "cmnist", "--seed", "-1"], "--seed must be >= 0"),
    (["rex", "cmnist", "--noise", "sometimes"], "--noise"),
    (["rex", "cmnist", "--data", "web"], "--data"),
    (["rex", "nothing"], "invalid choice"),
])
def test_bad_options_exit_nonzero_with_one_line(argv, needle, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code != 0
  err = capsys.readouterr().err.strip()
  assert needle in err
  assert "Traceback" not in err and len(err.splitlines()) == 1


def test_missing_data_dir_is_one_line(tmp_path, capsys):
  code = cli.main(["rex", "cmnist", "--data", "tfds", "--data-dir", str(tmp_path / "absent"),
                   "--out", str(tmp_path / "out")])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert "--data-dir" in err and "does not exist" in err and len(err.splitlines()) == 1


def test_quick_cmnist_run_writes_the_shared_results_layout(tmp_path, capsys):
  out = tmp_path / "run"
  code = cli.main(["rex", "cmnist", "--quick", "--methods", "erm,grayscale", "--data", "builtin",
                   "--out", str(out), "--no-progress"])
  assert code == 0
  printed = capsys.readouterr().out
  assert "Table 5.II" in printed and "Grayscale oracle" in printed
  results = json.loads((out / "results.json").read_text())
  assert results["experiment"] == "rex/cmnist" and results["data"] == "builtin"
  assert results["noise"] == "population"  # the built-in default, reported
  assert set(results["metrics"]) == {"erm", "grayscale"}
  for m in results["metrics"].values():
    for key in ("train_acc_mean", "train_acc_std", "test_acc_mean", "test_acc_std"):
      assert 0.0 <= m[key] <= 100.0
  assert results["reference"]["erm"]["test_acc"]["mean"] == 17.1
  assert results["wall_seconds"] > 0
  assert os.path.exists(out / "training_curves.png")
  assert os.path.exists(out / "accuracy_per_domain.png")
