"""End-to-end smoke runs of the chapter-5 sweep commands at the smallest size.

Each command runs from the CLI on the built-in digits, writes results.json in the shared
layout and its plot, and prints its table beside the thesis figure it reproduces. The
sizes are cut to seconds (tiny widths, one level, few steps); the full-size results are
in the README.
"""
import json
import os

import pytest

from jaxthesis import cli

COMMON = ["--quick", "--no-progress", "--data", "builtin"]

CASES = {
    "covariate-shift": (["--variant", "color-thesis", "--levels", "0.2", "--methods", "erm,vrex",
                         "--hidden", "8"], "rex/covariate-shift/color-thesis",
                        "covariate_shift_color-thesis.png", "V-REx test"),
    "risk-plane": (["--betas", "0,100", "--hidden", "8"], None, "risk_plane.png", "risk slope"),
    "waterfall": (["--hidden", "8", "--steps", "40", "--anneal-stride", "20", "--anneal-max", "20"],
                  None, "waterfall.png", "anneal step"),
    "search": (["--variant", "class", "--levels", "0.1", "--methods", "vrex", "--num-configs", "2",
                "--log2-hidden", "3,4", "--steps", "21,31", "--anneal-iters", "5,10"],
               None, "search_class.png", "satisfactory"),
    "selection": (["--methods", "vrex", "--num-configs", "2", "--trials", "1",
                   "--log2-hidden", "3,3", "--steps", "21,21", "--anneal-iters", "5,5",
                   "--eval-every", "10"], None, "selection.png", "oracle"),
}


@pytest.mark.parametrize("command", sorted(CASES))
def test_sweep_command_writes_results_plot_and_table(command, tmp_path, capsys):
  extra, experiment, plot, needle = CASES[command]
  out = str(tmp_path / command)
  assert cli.main(["rex", command, *COMMON, *extra, "--out", out]) == 0
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  assert {"experiment", "data", "config", "metrics", "reference", "wall_seconds"} <= set(results)
  assert results["data"] == "builtin"
  if experiment is not None:
    assert results["experiment"] == experiment
  assert os.path.exists(os.path.join(out, plot)), os.listdir(out)
  printed = capsys.readouterr().out
  assert needle.lower() in printed.lower(), printed
  assert "thesis" in printed.lower()
