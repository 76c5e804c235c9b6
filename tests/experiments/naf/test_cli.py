"""The `jaxthesis naf` commands: argument handling and a tiny end-to-end run."""
import json
import os

import pytest

from jaxthesis import cli
from jaxthesis.experiments.naf import _common as nc


def test_commands_registered_and_bad_arguments_rejected(capsys):
  parser = cli.build_parser()
  args = parser.parse_args(["naf", "grid", "--quick", "--models", "dsf"])
  assert args.models == ("dsf",) and callable(args.func)
  with pytest.raises(SystemExit):
    parser.parse_args(["naf", "grid", "--models", "spline"])
  assert "unknown 'spline'" in capsys.readouterr().err
  assert cli.main(["naf", "grid", "--quick", "--modes", "1"]) == 2
  assert "--modes" in capsys.readouterr().err
  assert cli.main(["naf", "sine", "--quick", "--anneal", "1.5"]) == 2
  assert "--anneal must be a fraction" in capsys.readouterr().err


def _run_quick(name, tmp_path):
  """Runs `jaxthesis naf NAME --quick` for 20 steps; returns (out folder, results.json)."""
  out = str(tmp_path / name)
  assert cli.main(["naf", name, "--quick", "--no-progress", "--steps", "20",
                   "--out", out]) == 0
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  assert results["experiment"] == f"naf {name}"
  return out, results


def test_sine_quick_writes_results(tmp_path, capsys):
  out, results = _run_quick("sine", tmp_path)
  assert set(results["metrics"]["mode_mass"]) == {"0.0", "0.6", "1.2", "1.8"}
  assert os.path.exists(os.path.join(out, "sine_posterior.png"))
  assert "posterior mass" in capsys.readouterr().out


def test_energy_quick_writes_results(tmp_path, capsys):
  out, results = _run_quick("energy", tmp_path)
  metrics = results["metrics"]["u1"]
  assert set(metrics) == {"log_z", "affine", "dsf"}
  assert set(metrics["dsf"]) == {"kl", "minus_elbo"}
  assert results["config"]["anneal_fraction"] == 0.2
  assert os.path.exists(os.path.join(out, "energy_samples.png"))
  assert "KL(q||p)" in capsys.readouterr().out


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
