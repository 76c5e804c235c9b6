"""Every study of the project, one line each; the CLI and the contract test are built from it.

A study module (`jaxthesis/experiments/<group>/<study>.py`) follows one contract:

* `REFERENCE`: the thesis figure/table it reproduces and the numbers or claim to compare with;
* `Config`: a frozen dataclass that settles every number and validates itself
  (`__post_init__`, raising `_config.UsageError` naming `config.<field>`);
* `get_config(quick=False, **overrides) -> Config` (`quick`: a run of seconds);
* `run(config, *, progress=True, checkpoint_dir=None) -> results`: writes nothing but
  checkpoints; `results` has the keys of `_results.SHARED_KEYS` plus `"arrays"`;
* `save(results, out) -> paths` (results.json + arrays.npz), `plot(out) -> paths` (reads
  only the saved files), `table(results) -> str`;
* `add_arguments(parser)`: the study's own options, `dest` = a Config field, default None.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import NamedTuple, Optional

CONTRACT = ("REFERENCE", "Config", "get_config", "run", "save", "plot", "table",
            "add_arguments")


class Study(NamedTuple):
  group: str     # first word of the command: jaxthesis GROUP COMMAND
  command: str
  module: str    # dotted module path
  help: str
  smoke: dict = {}  # overrides on top of --quick for the registry test (keep it seconds)


GROUPS = {
    "rex": "Risk Extrapolation (thesis chapter 5, appendix 11.1)",
    "naf": "Neural autoregressive flows (thesis chapter 9)",
    "bhn": "Bayesian hypernetworks (thesis chapter 7, appendix 11.2)",
    "memorization": "Memorization in deep networks (thesis chapter 3)",
}

_REX, _NAF = "jaxthesis.experiments.rex.", "jaxthesis.experiments.naf."
STUDIES: tuple[Study, ...] = (
    Study("rex", "cmnist", _REX + "cmnist",
          "Colored MNIST: ERM / IRMv1 / V-REx / MM-REx / RI / grayscale (Table 5.II)",
          smoke=dict(data="builtin", methods=("vrex",), restarts=1, step_fraction=0.05)),
    Study("rex", "covariate-shift", _REX + "covariate_shift",
          "CMNIST with class/digit/colour imbalance (Fig. 5.4, Fig. 11.5)",
          smoke=dict(data="builtin", levels=(0.2,), methods=("vrex",), hidden=8,
                     step_fraction=0.02)),
    Study("rex", "risk-plane", _REX + "risk_plane",
          "V-REx risk plane on Colored MNIST for several β (Fig. 5.2)",
          smoke=dict(data="builtin", betas=(0.0, 100.0), grid=3, hidden=8, step_fraction=0.02)),
    Study("rex", "sem", _REX + "sem", "linear SEMs of IRM (appendix 11.1.9.2, Table 11.II)",
          smoke=dict(tasks=("FOU", "FEU"), num_reps=1, num_steps=200)),
    Study("rex", "toy", _REX + "toy", "toy examples of appendices 11.1.4 and 11.1.5",
          smoke=dict(num_steps=200)),
    Study("rex", "waterfall", _REX + "waterfall",
          "test accuracy vs the step the penalty switches on (Fig. 11.9)",
          smoke=dict(data="builtin", hidden=8, steps=20, anneal_max=10, eval_every=5)),
    Study("rex", "search", _REX + "search",
          "random hyperparameter search on covariate-shift CMNIST (Fig. 11.7)",
          smoke=dict(data="builtin", levels=(0.1,), methods=("vrex",), num_configs=2,
                     log2_hidden=(3.0, 3.0), steps=(11, 21), penalty_anneal_iters=(5, 10))),
    Study("rex", "selection", _REX + "selection",
          "DomainBed model selection on CMNIST: training-domain, LODO, oracle (Table 5.III)",
          smoke=dict(data="builtin", methods=("vrex",), num_configs=2, trials=1,
                     log2_hidden=(3.0, 3.0), steps=(11, 11), penalty_anneal_iters=(5, 5),
                     eval_every=5)),
    Study("naf", "grid", _NAF + "grid", "MAF fits of 2-D Gaussian grids (Fig. 9.6)",
          smoke=dict(models=("affine",), num_steps=10, num_test=100, num_samples=100,
                     image_size=40)),
    Study("naf", "energy", _NAF + "energy",
          "IAF reverse-KL fits of the four 2-D energies (Fig. 9.1)",
          smoke=dict(models=("dsf",), num_steps=10, num_eval=128, num_samples=200,
                     image_size=40, histogram_bins=20)),
    Study("naf", "sine", _NAF + "sine", "DSF posterior over a sine wave's frequency (Fig. 9.8)",
          smoke=dict(num_steps=10, num_samples=500, posterior_grid=500)),
    Study("naf", "convergence", _NAF + "convergence",
          "learning curves over 16 vmapped seeds (Fig. 9.7)",
          smoke=dict(models=("dsf",), num_seeds=2, num_steps=10, num_eval=64)),
    Study("naf", "vae", _NAF + "vae",
          "VAE on binarized MNIST: Gaussian vs IAF-affine vs IAF-DSF posteriors (Table 9.I)",
          smoke=dict(models=("gaussian",), num_steps=6, num_test=20, num_importance=4,
                     eval_chunk=20)),
    Study("naf", "uci", _NAF + "uci",
          "MAF-affine(5) vs MAF-DDSF(5) density estimation (Table 9.II)",
          smoke=dict(models=("affine",), num_layers=1, num_steps=10, max_eval_points=64)),
    Study("memorization", "difficulty", "jaxthesis.experiments.memorization.difficulty",
          "per-example misclassification after one epoch, real vs randX vs randY (Fig. 3.1)",
          smoke=dict(data="builtin", num_train=64, num_scored=32, restarts=2, width=8,
                     batch_size=16)),
    Study("memorization", "csr", "jaxthesis.experiments.memorization.csr",
          "accuracy and validation critical sample ratio through training, 0-80% randX/randY "
          "(Figs. 3.7, 3.9)",
          smoke=dict(data="builtin", noise_levels=(0.8,), num_train=60, num_test=20,
                     width=8, batch_size=20, epochs=2, eval_every=3, csr_points=10,
                     lass_iterations=3)),
    Study("memorization", "sensitivity", "jaxthesis.experiments.memorization.sensitivity",
          "loss-sensitivity through unrolled SGD: Gini over examples, per-class ḡ_ij "
          "(Figs. 3.3, 3.4)",
          smoke=dict(data="builtin", num_train=40, width=4, epochs=1, eval_every=2)),
    Study("memorization", "capacity", "jaxthesis.experiments.memorization.capacity",
          "validation accuracy and epochs to fit against hidden units and data size "
          "(Figs. 3.5, 3.6)",
          smoke=dict(data="builtin", widths=(2, 4), noise_levels=(0.0, 0.8),
                     data_sizes=(40, 60), size_width=4, num_train=60, num_test=20,
                     batch_size=20, epochs=2, eval_every=3)),
    Study("memorization", "regularizers", "jaxthesis.experiments.memorization.regularizers",
          "regularizers: randY training accuracy vs real validation accuracy (Figs. 3.10, 3.11)",
          smoke=dict(data="builtin", methods=("dropout", "dropout+adversarial"),
                     dropout=(0.5,), adversarial_dropout=(0.2,), adversarial_iterations=2,
                     num_train=60, num_test=20, width=8, batch_size=20, epochs=1,
                     eval_every=3)),
    Study("memorization", "rex-onset", "jaxthesis.experiments.memorization.rex_onset",
          "per-example statistics on REx fixed-noise Colored MNIST: when memorization starts vs "
          "when test accuracy peaks (beyond the thesis)",
          smoke=dict(data="builtin", methods=("vrex",), restarts=1, num_train=200,
                     num_test=100, step_fraction=0.05)),
    Study("bhn", "toy-regression", "jaxthesis.experiments.bhn.toy_regression",
          "1-D regression: deterministic net vs BHN on g vs BHN on all weights (Fig. 7.1)",
          smoke=dict(models=("deterministic", "bhn-g"), num_epochs=10)),
    Study("bhn", "multimodal", "jaxthesis.experiments.bhn.multimodal",
          "posterior of y = a b x over both modes a = b = ±1 (Fig. 7.2)",
          smoke=dict(hypernets=("realnvp:1",), num_epochs=10, num_eval_samples=200)),
    Study("bhn", "mnist", "jaxthesis.experiments.bhn.mnist",
          "MNIST 5,000: BHNs with 0-12 couplings, IAF, DSF vs MLE / dropout / BbB "
          "(Table 7.I, Fig. 7.3)",
          smoke=dict(methods=("gaussian:0",), num_trials=1, num_epochs=1, train_size=256,
                     test_size=100)),
    Study("bhn", "anomaly", "jaxthesis.experiments.bhn.anomaly",
          "OOD detection on MNIST with offline OOD sets and held-out digits "
          "(Table 7.II, Table 11.VII)",
          smoke=dict(methods=("gaussian:0",), ood_sets=("uniform",), num_epochs=1,
                     train_size=256, test_size=100)),
    Study("bhn", "adversarial", "jaxthesis.experiments.bhn.adversarial",
          "FGSM attacks: accuracy, uncertainty and detection AUROC vs step size (Fig. 7.5)",
          smoke=dict(methods=("gaussian:0",), epsilons=(0.0, 0.2), num_epochs=1,
                     train_size=256, test_size=50)),
    Study("bhn", "active-learning", "jaxthesis.experiments.bhn.active_learning",
          "active learning on MNIST by BALD / variation ratio / entropy / mean std / random "
          "(Fig. 7.4)",
          smoke=dict(acquisitions=("bald", "random"), num_acquisitions=2, num_repeats=1,
                     hidden=8, hypernet_hidden=8, num_epochs=1, num_eval_samples=4,
                     train_size=200, test_size=50)),
    Study("bhn", "correlations", "jaxthesis.experiments.bhn.correlations",
          "Pearson p-values between posterior scales of a BHN (Fig. 11.12)",
          smoke=dict(hypernets=("gaussian:0",), num_epochs=1, train_size=256)),
)


def find(group: str, command: str) -> Study:
  for study in STUDIES:
    if (study.group, study.command) == (group, command):
      return study
  raise KeyError(f"no study {group} {command}; registered: "
                 f"{', '.join(f'{s.group} {s.command}' for s in STUDIES)}")


def studies(group: Optional[str] = None) -> tuple[Study, ...]:
  return tuple(s for s in STUDIES if group is None or s.group == group)


def load(study: Study) -> ModuleType:
  """Imports a study's module and checks that it has everything the contract names."""
  module = importlib.import_module(study.module)
  missing = [name for name in CONTRACT if not hasattr(module, name)]
  if missing:
    raise AttributeError(f"{study.module} lacks {', '.join(missing)} of the study contract")
  return module
