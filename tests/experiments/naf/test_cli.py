"""`jaxthesis naf ...`: every option the commands had, mapped onto Config fields; bad input
is one line naming the option. Quick runs of every study are in tests/experiments/test_registry.py."""
import argparse
import dataclasses

import pytest

from jaxthesis import cli
from jaxthesis.experiments import registry
from jaxthesis.experiments.naf import _common as nc

SHARED = {"--out", "--seed", "--quick", "--no-progress", "--steps", "--lr"}
# The options of each command before the study contract (jaxthesis/experiments/naf_cli.py).
OPTIONS = {
    "grid": {"--models", "--modes"},
    "energy": {"--models", "--energies", "--anneal", "--lr-decay"},
    "sine": {"--anneal", "--lr-decay"},
    "convergence": {"--models", "--anneal", "--lr-decay", "--seeds"},
    "vae": {"--seeds", "--models", "--importance", "--data", "--data-dir"},
    "uci": {"--seeds", "--dataset", "--data-dir", "--models", "--layers", "--bounded"},
}


def _command_parser(command):
  parser = cli.build_parser(["naf", command])
  sub = parser
  for name in ("naf", command):
    action = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction))
    sub = action.choices[name]
  return sub


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_option_is_kept_and_sets_a_config_field(command):
  parser = _command_parser(command)
  flags = {s for a in parser._actions for s in a.option_strings}
  assert SHARED | OPTIONS[command] <= flags
  fields = {f.name for f in dataclasses.fields(registry.load(registry.find("naf", command)).Config)}
  for action in parser._actions:
    if action.option_strings and action.dest not in cli.SHARED_DESTS + ("help",):
      assert action.dest in fields, (command, action.option_strings)
      assert action.default is None, (command, action.option_strings)


@pytest.mark.parametrize("argv,needle", [
    (["naf", "grid", "--models", "spline"], "--models: unknown 'spline'"),
    (["naf", "grid", "--modes", "1"], "--modes must be non-empty finite integers >= 2"),
    (["naf", "sine", "--anneal", "1.5"], "--anneal must be a finite number >= 0 and <= 1"),
    (["naf", "energy", "--energies", "u5"], "--energies: unknown 'u5'"),
    (["naf", "vae", "--models", "flow"], "--models: unknown 'flow'"),
    (["naf", "uci", "--dataset", "cifar"], "--dataset"),
])
def test_bad_options_exit_with_one_line(argv, needle, capsys):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv,needle", [
    # Checked by the Config (before anything is loaded or compiled), reported by flag.
    (["naf", "energy", "--lr", "0"], "--lr must be a finite number > 0"),
    (["naf", "uci", "--dataset", "power"], "--data-dir is required for dataset power"),
    (["naf", "vae", "--data-dir", "/no/such/dir"], "--data-dir '/no/such/dir' does not exist"),
])
def test_config_errors_name_the_flag(argv, needle, tmp_path, capsys):
  assert cli.main(argv + ["--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert needle in err and len(err.splitlines()) == 1


def test_missing_dataset_file_is_one_line(tmp_path, capsys):
  assert cli.main(["naf", "uci", "--dataset", "gas", "--data-dir", str(tmp_path), "--quick",
                   "--no-progress", "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err.strip()
  assert "ethylene_CO.pickle" in err and len(err.splitlines()) == 1


def test_options_reach_the_config_that_runs(tmp_path, monkeypatch):
  from jaxthesis.experiments.naf import sine
  ran = {}

  def fake_run(config, **kwargs):  # stop before training: only the mapping is under test
    ran["config"] = config
    raise KeyboardInterrupt

  monkeypatch.setattr(sine, "run", fake_run)
  assert cli.main(["naf", "sine", "--quick", "--no-progress", "--steps", "5", "--lr", "0.01",
                   "--anneal", "0.4", "--lr-decay", "0", "--seed", "3",
                   "--out", str(tmp_path)]) == 130
  assert ran["config"] == sine.get_config(True, num_steps=5, learning_rate=0.01,
                                          anneal_fraction=0.4, lr_decay_fraction=0.0, seed=3)


def test_energies_match_their_definitions():
  import jax.numpy as jnp
  z = jnp.array([[2.0, 0.0], [0.0, 1.0]])
  # U1 at radius 2 on the x axis: 0.5 * 0 - log(exp(0) + exp(-0.5 (4/0.6)^2)).
  assert abs(float(nc.ENERGIES["u1"](z)[0]) + float(jnp.log1p(jnp.exp(-0.5 * (4 / 0.6) ** 2)))) < 1e-5
  # U2 at z1 = 0 (w1 = 0): 0.5 (z2 / 0.4)^2.
  assert abs(float(nc.ENERGIES["u2"](z)[1]) - 0.5 * (1 / 0.4) ** 2) < 1e-5
  grid = nc.GaussianGrid(2)
  assert grid.centers.shape == (4, 2)
  assert abs(nc.log_normalizer(lambda z: 0.5 * (z ** 2).sum(-1)) - float(jnp.log(2 * jnp.pi))) < 1e-3
