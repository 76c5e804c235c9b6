"""The chapter-5 commands beyond the registry's contract test: every option they had
before the study contract is still there and lands in the Config field it names, bad
values are one line naming the flag (before any data is loaded), and the printed tables
carry the thesis's numbers. The quick runs themselves are the registry test's
(tests/experiments/test_registry.py)."""
import numpy as np
import pytest

from jaxthesis import cli
from jaxthesis.experiments import registry
from jaxthesis.experiments.rex import search, selection, sem, waterfall

SHARED = ["--out", "--seed", "--quick", "--no-progress"]
# The options of each command before the study contract (the old add_commands).
OLD_OPTIONS = {
    "cmnist": ["--data", "--data-dir", "--noise", "--methods", "--restarts", "--irm-estimator",
               "--reset-optimizer-at-anneal", "--no-checkpoint", "--fresh"],
    "covariate-shift": ["--variant", "--levels", "--methods", "--restarts", "--data",
                        "--data-dir", "--noise", "--hidden"],
    "risk-plane": ["--betas", "--restarts", "--data", "--data-dir", "--noise", "--hidden"],
    "waterfall": ["--method", "--steps", "--anneal-stride", "--anneal-max", "--data",
                  "--data-dir", "--noise", "--hidden"],
    "search": ["--variant", "--levels", "--methods", "--num-configs", "--log2-hidden", "--steps",
               "--anneal-iters", "--buckets-per-octave", "--data", "--data-dir", "--noise"],
    "selection": ["--methods", "--num-configs", "--trials", "--log2-hidden", "--steps",
                  "--anneal-iters", "--eval-every", "--data", "--data-dir", "--noise"],
    # --no-precondition went with the preconditioned SEM fit of jaxthesis.rex.sem.
    "sem": ["--reps", "--steps", "--tasks"],
    "toy": [],
}


@pytest.mark.parametrize("command", sorted(OLD_OPTIONS))
def test_help_lists_every_option_it_had(command, capsys):
  with pytest.raises(SystemExit) as info:
    cli.main(["rex", command, "--help"])
  assert info.value.code == 0
  text = capsys.readouterr().out
  for option in OLD_OPTIONS[command] + SHARED:
    assert option in text, option


class _Ran(Exception):
  pass


def _config_of(argv, monkeypatch, out):
  """The Config that `jaxthesis rex ...` would run (the run itself is stubbed out)."""
  module = registry.load(registry.find("rex", argv[0]))

  def stub(config, **kwargs):
    raise _Ran(config)

  monkeypatch.setattr(module, "run", stub)
  with pytest.raises(_Ran) as info:
    cli.main(["rex", *argv, "--out", str(out)])
  return info.value.args[0]


@pytest.mark.parametrize("argv,expected", [
    (["covariate-shift", "--variant", "digit", "--levels", "0.1,0.5", "--methods", "irm,vrex",
      "--restarts", "2", "--hidden", "16", "--noise", "fixed", "--seed", "3"],
     dict(variant="digit", levels=(0.1, 0.5), methods=("irm", "vrex"), restarts=2, hidden=16,
          noise="fixed", seed=3, step_fraction=1.0)),
    (["covariate-shift", "--quick"], dict(levels=(0.1, 1.0), restarts=1, hidden=32,
                                          step_fraction=0.1)),
    (["risk-plane", "--betas", "0,10", "--restarts", "3"], dict(betas=(0.0, 10.0), restarts=3)),
    (["waterfall", "--anneal-stride", "20", "--anneal-max", "100", "--steps", "201",
      "--method", "irm"],
     dict(anneal_stride=20, anneal_max=100, steps=201, method="irm",
          anneal_steps=(0, 20, 40, 60, 80, 100))),
    # Only the stride given: the last anneal step stays the (quick) default.
    (["waterfall", "--quick", "--anneal-stride", "20"], dict(anneal_steps=(0, 20, 40))),
    (["search", "--log2-hidden", "5,7", "--steps", "201,301", "--anneal-iters", "50,60",
      "--num-configs", "24", "--buckets-per-octave", "1"],
     dict(log2_hidden=(5.0, 7.0), steps=(201, 301), penalty_anneal_iters=(50, 60),
          num_configs=24, buckets_per_octave=1)),
    (["selection", "--trials", "2", "--eval-every", "25", "--log2-hidden", "6,6"],
     dict(trials=2, eval_every=25, log2_hidden=(6.0, 6.0))),
    (["sem", "--reps", "3", "--steps", "500", "--tasks", "FOU,PES"],
     dict(num_reps=3, num_steps=500, tasks=("FOU", "PES"))),
    (["toy", "--quick", "--seed", "4"], dict(num_steps=2000, seed=4)),
])
def test_options_land_in_their_config_fields(argv, expected, monkeypatch, tmp_path):
  config = _config_of(argv, monkeypatch, tmp_path / "out")
  for field, value in expected.items():
    assert getattr(config, field) == value, field


@pytest.mark.parametrize("argv,needle", [
    (["waterfall", "--anneal-max", "600"], "--anneal-max must be < steps = 501"),
    (["search", "--log2-hidden", "7,5"], "--log2-hidden must be a range LO,HI with LO <= HI"),
    (["search", "--log2-hidden", "12,14"], "--log2-hidden must be a non-empty tuple of numbers in [0, 13]"),
    (["search", "--steps", "201"], "--steps must be LO,HI (integers)"),
    (["selection", "--steps", "0,10"], "--steps must be a non-empty tuple of integers in [1,"),
    (["covariate-shift", "--levels", "0.1,1.5"], "--levels must be non-empty finite numbers"),
    (["covariate-shift", "--variant", "size"], "invalid choice"),
    (["risk-plane", "--betas", "-1"], "--betas must be non-empty finite numbers >= 0"),
    (["sem", "--tasks", "FOU,XYZ"], "--tasks: unknown 'XYZ'"),
])
def test_bad_values_are_one_line_naming_the_flag(argv, needle, capsys, tmp_path):
  out = tmp_path / "out"
  try:
    code = cli.main(["rex", *argv, "--out", str(out)])
  except SystemExit as e:  # argparse's own errors
    code = e.code
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert needle in err, err
  assert "Traceback" not in err and len(err.splitlines()) == 1
  assert not out.exists()  # refused before anything was written


def test_gap_onset_is_the_last_small_gap_before_memorization():
  steps = np.arange(0, 100, 10)
  gap = np.array([0.0, 0.2, 0.5, 0.9, 1.0, 1.4, 2.5, 4.0, 6.0, 9.0])
  assert waterfall.gap_onset(steps, gap) == 40           # last gap <= 1 point
  assert waterfall.gap_onset(steps, np.minimum(gap, 1.5)) is None   # never memorizes
  assert waterfall.gap_onset(steps, gap + 1.5) == 0      # no small gap: the first step


def test_search_table_compares_with_the_thesis_at_the_smallest_level():
  results = {
      "data": "builtin", "noise": "population", "variant": "digit", "levels": [0.1, 1.0],
      "config": dict(num_configs=2, log2_hidden=[3, 4], steps=[11, 21]),
      "reference": search.REFERENCE,
      "metrics": {"vrex": {"satisfactory_pct": [50.0, 0.0], "above_chance_pct": [50.0, 100.0],
                           "best_test_acc": [61.25, 70.0]}},
  }
  text = search.table(results)
  assert "Fig. 11.7" in text
  row = next(line for line in text.splitlines() if line.startswith("0.1 "))
  assert "50 / 50 / 61.2" in row and "V-REx 23.7, IRM 0.0" in row   # digit imbalance, p = 0.1
  row = next(line for line in text.splitlines() if line.startswith("1 "))
  assert row.rstrip().endswith("-")


def test_selection_and_sem_tables_print_the_thesis_numbers():
  rule = {"test_acc_mean": 40.0, "test_acc_std": 2.0}
  results = {"data": "builtin", "noise": "population", "reference": selection.REFERENCE,
             "config": dict(trials=2, num_configs=2),
             "metrics": {"erm": {**{r: rule for r in selection.RULE_NAMES},
                                 "best_possible_last": 55.0}}}
  text = selection.table(results)
  assert "Table 5.III" in text and "52.0 ± 0.1" in text and "40.0 ± 2.0" in text

  cell = {"causal": [0.5, 0.1], "noncausal": [0.25, 0.0]}
  results = {"config": dict(tasks=["FEU"], num_reps=2), "reference": sem.REFERENCE,
             "metrics": {m: {"FEU": cell} for m in sem.METHOD_LABELS}}
  text = sem.table(results)
  assert "Table 11.II" in text
  vrex = next(line for line in text.splitlines() if line.startswith("REx, r_e=0 "))
  assert "0.0390±0.0089" in vrex and "19.1518±3.3012" in vrex and "0.5000±0.1000" in vrex
