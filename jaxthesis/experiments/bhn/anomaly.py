"""`jaxthesis bhn anomaly`: out-of-distribution detection on MNIST (Table 7.II, Table 11.VII).

Models trained on MNIST score test digits (in-distribution) and out-of-distribution
images with every uncertainty score (higher = more anomalous); AUROC, AUPR-in and
AUPR-out of separating them (Hendrycks and Gimpel's protocol). The OOD sets are those
available offline (`_ood.OOD_SETS`); Table 7.II's notMNIST, Omniglot and CIFAR-bw are not
(photo patches stand in for CIFAR-bw). Held-out-class mode (Table 11.VII): train
without digit k, its test digits are the anomalies.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _cli, _config, _plots, _results
from jaxthesis.experiments.bhn import _common, _ood

TABLE_7_II = {  # variation-ratio score: (ROC, PR+, PR-) for MLP, MC dropout, BHN
    "Uniform": {"mle": (96.99, 97.99, 94.71), "mc-dropout": (98.90, 99.15, 98.63),
                "bhn": (98.97, 99.27, 98.52)},
    "Gaussian": {"mle": (87.70, 87.66, 88.05), "mc-dropout": (97.70, 98.11, 96.94),
                 "bhn": (89.22, 86.62, 89.85)},
    "CIFARbw": {"mle": (95.55, 96.47, 93.72), "mc-dropout": (98.70, 98.98, 98.39),
                "bhn": (96.63, 97.25, 95.78)},
}
REFERENCE = {
    "source": "Table 7.II",
    "expected": "Bayesian nets beat the MLP; MC dropout better than BHN on OOD sets (Table "
                "7.II, variation ratio); held-out classes: BALD / mean std help Bayesian nets "
                "(Table 11.VII, AUROC 75-98)",
    "variation_ratio_percent": TABLE_7_II,
    "our_stand_ins": {"CIFARbw": "photo-patches"},
}


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  data: str = "builtin"
  data_dir: Optional[str] = None
  methods: tuple = ("mle", "mc-dropout", "realnvp:8")
  ood_sets: tuple = _ood.OOD_SETS
  heldout_classes: tuple = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9)
  hidden: int = 800
  num_epochs: int = 50
  batch_size: int = 128
  learning_rate: float = 1e-3
  num_eval_samples: int = 100
  prior_precision: float = 1.0
  hypernet_hidden: int = 200
  train_size: int = 0
  test_size: int = 0

  def __post_init__(self):
    _common.check_mnist_config(self, positive=(
        "hidden", "num_epochs", "batch_size", "num_eval_samples", "hypernet_hidden"))
    _config.names(self, "ood_sets", _ood.OOD_SETS, allow_empty=True)
    if not isinstance(self.heldout_classes, (tuple, list)) or self.heldout_classes:
      _config.numbers(self, "heldout_classes", 0, 9, integers=True, distinct=True)
    if not self.ood_sets and not self.heldout_classes:
      _config.fail("ood_sets", "non-empty when heldout_classes is empty", self.ood_sets)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """Table 7.II and 11.VII; `quick`: a tiny net, 2 epochs, two OOD sets, no held-out class."""
  base = Config(methods=("mle", "gaussian:0"), ood_sets=("uniform", "digits8x8"),
                heldout_classes=(), hidden=32, num_epochs=2, hypernet_hidden=16,
                num_eval_samples=8, train_size=512, test_size=200) if quick else Config()
  return _config.replace(base, **overrides)


def add_arguments(p) -> None:
  _cli.add_data_args(p)
  _common.add_specs_argument(p)
  p.add_argument("--ood-sets", dest="ood_sets", default=None,
                 type=_cli.name_list("--ood-sets", _ood.OOD_SETS))
  p.add_argument("--heldout-classes", dest="heldout_classes", default=None,
                 type=lambda s: tuple(int(x) for x in s.split(",") if x.strip()),
                 help="digits to hold out one at a time (Table 11.VII); '' for none")
  p.add_argument("--hidden", dest="hidden", default=None, type=_cli.positive_int("--hidden"))
  p.add_argument("--epochs", dest="num_epochs", default=None, type=_cli.positive_int("--epochs"))


def _scores(probs: np.ndarray) -> dict[str, np.ndarray]:
  from jaxthesis import bhn
  return {name: np.asarray(fn(probs)) for name, fn in bhn.SCORES.items()}


def _detect(in_scores, out_scores) -> dict[str, dict[str, float]]:
  from jaxthesis import bhn
  return {name: {k: float(v) for k, v in bhn.detection_metrics(in_scores[name],
                                                              out_scores[name]).items()}
          for name in in_scores}


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  import jax

  _ood.check_available(config.ood_sets)
  clock = _results.Stopwatch()
  x_tr, y_tr, x_te, y_te, description = _common.load_config_mnist(config)
  ood = {name: _ood.load(name, len(y_te), config.seed + 17 * i)
         for i, name in enumerate(config.ood_sets)}
  key = jax.random.PRNGKey(config.seed)
  metrics: dict[str, Any] = {"ood": {}, "heldout": {}}
  arrays = {}
  for i, spec in enumerate(config.methods):
    if config.ood_sets:
      _common.log(f"[bhn anomaly] {spec}: OOD sets", progress)
      method, params, _ = _common.train_from_config(
          spec, jax.random.fold_in(key, i), x_tr, y_tr, config, progress=progress,
          checkpoint_dir=_common.checkpoint_path(checkpoint_dir, spec))
      eval_key = jax.random.fold_in(key, 100 + i)
      in_probs = _common.sample_probs(method, params, eval_key, x_te, config.num_eval_samples)[0]
      in_scores = _scores(in_probs)
      metrics["ood"][spec] = {"test_accuracy": _common.classification_metrics(in_probs, y_te)}
      for name, x_out in ood.items():
        out_probs = _common.sample_probs(method, params, eval_key, x_out,
                                         config.num_eval_samples)[0]
        out_scores = _scores(out_probs)
        metrics["ood"][spec][name] = _detect(in_scores, out_scores)
        arrays[f"vr_{i}_{name}"] = out_scores["variation_ratio"]
      arrays[f"vr_{i}_in"] = in_scores["variation_ratio"]
    for k in config.heldout_classes:
      _common.log(f"[bhn anomaly] {spec}: training without digit {k}", progress)
      keep = y_tr != k
      # Labels stay 0..9 (class k unseen), so every model has 10 outputs.
      method, params, _ = _common.train_from_config(
          spec, jax.random.fold_in(key, 1000 * (k + 1) + i), x_tr[keep], y_tr[keep], config,
          progress=progress, checkpoint_dir=_common.checkpoint_path(checkpoint_dir, spec,
                                                                    f"without-{k}"))
      probs = _common.sample_probs(method, params, jax.random.fold_in(key, 7 + k), x_te,
                                   config.num_eval_samples)[0]
      scores = _scores(probs)
      is_k = y_te == k
      metrics["heldout"].setdefault(spec, {})[str(k)] = _detect(
          {n: s[~is_k] for n, s in scores.items()}, {n: s[is_k] for n, s in scores.items()})
  data = (f"{description}; used {len(y_tr)} train / {len(y_te)} test; OOD sets: "
          f"{', '.join(config.ood_sets) or 'none'} ({len(y_te)} images each); "
          f"held-out digits: {', '.join(map(str, config.heldout_classes)) or 'none'}")
  return _common.results("anomaly", data, config, metrics, clock, arrays, REFERENCE)


save = _results.save


def table(results: dict[str, Any]) -> str:
  m = results["metrics"]
  lines = []
  rows = []
  for spec, per in m["ood"].items():
    for name, d in per.items():
      if name == "test_accuracy":
        continue
      for score, v in d.items():
        rows.append([_common.spec_label(spec), name, score, f"{100 * v['auroc']:.2f}",
                     f"{100 * v['aupr_in']:.2f}", f"{100 * v['aupr_out']:.2f}"])
  if rows:
    lines.append(_results.format_table(["method", "OOD set", "score", "ROC", "PR-in", "PR-out"],
                                       rows))
    lines.append("thesis (variation ratio, ROC/PR+/PR-): " + "; ".join(
        f"{s}: " + ", ".join(f"{k} {v[0]:.1f}/{v[1]:.1f}/{v[2]:.1f}" for k, v in d.items())
        for s, d in TABLE_7_II.items()))
  rows = []
  for spec, per in m["heldout"].items():
    for k, d in per.items():
      rows.append([_common.spec_label(spec), k] + [f"{100 * d[s]['auroc']:.2f}" for s in d])
  if rows:
    names = list(next(iter(next(iter(m["heldout"].values())).values())))
    lines.append(_results.format_table(["method", "held-out digit"] + [f"ROC {n}" for n in names],
                                       rows))
  lines.append(f"{REFERENCE['source']} / Table 11.VII (thesis): {REFERENCE['expected']}")
  return "\n".join(lines)


def plot(out: str) -> list[str]:
  results, arrays = _results.load(out)
  plt = _plots.pyplot()
  config = results["config"]
  specs, sets = list(config["methods"]), list(config["ood_sets"])
  paths = []
  if sets:
    fig, axes = plt.subplots(1, len(specs), figsize=(3.4 * len(specs), 3.0), squeeze=False)
    for i, (ax, spec) in enumerate(zip(axes[0], specs)):
      bins = np.linspace(0, 0.9, 31)
      ax.hist(arrays[f"vr_{i}_in"], bins, alpha=0.5, density=True, label="MNIST test")
      for name in sets:
        ax.hist(arrays[f"vr_{i}_{name}"], bins, histtype="step", density=True, label=name)
      ax.set_title(_common.spec_label(spec))
      ax.set_xlabel("variation ratio")
    axes[0][0].legend()
    fig.suptitle(f"{REFERENCE['source']}: scores of in- and out-of-distribution images", fontsize=9)
    paths.append(_plots.savefig(fig, out, "anomaly_scores.png"))
  heldout = results["metrics"]["heldout"]
  if heldout:
    fig, ax = plt.subplots(figsize=(5, 3))
    for spec, per in heldout.items():
      ks = sorted(per, key=int)
      ax.plot([int(k) for k in ks], [100 * per[k]["variation_ratio"]["auroc"] for k in ks], "o-",
              label=_common.spec_label(spec))
    ax.set_xlabel("held-out digit")
    ax.set_ylabel("AUROC (variation ratio)")
    ax.legend()
    ax.set_title("Table 11.VII: unseen-class detection")
    paths.append(_plots.savefig(fig, out, "anomaly_heldout.png"))
  return paths
