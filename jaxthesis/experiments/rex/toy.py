"""`jaxthesis rex toy`: the toy examples of appendices 11.1.4 and 11.1.5 against their
closed forms (Fig. 11.2).

The 6-D example (11.1.4) is solved by Adam for ERM, IRMv1 and REx; the COSTLY/CHEAP
covariate-shift example (11.1.5) by exhaustive search over p. Both are deterministic
(no randomness), so `seed` only rides along for the shared command line.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from jaxthesis.experiments import _config, _plots, _results

REFERENCE = {
    "source": "Fig. 11.2",
    "six_d": "appendix 11.1.4: P̂(Y=1|X=2) = 1/2 for IRM and REx, (3f+k)/(3e+3f) for ERM; "
             "REx equalizes capacity across X = 0/1",
    "covariate_shift": "appendix 11.1.5: REx -> ω = u/(u+v) (the saddle point of Fig. 11.2); "
                       "ERM 0 or 1; RI as described",
    "expected": "computed solutions equal the closed forms",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Parameters of the two toy examples."""
  six_d: tuple = (0.1, 0.05, 0.2, 0.25, 0.15, 0.25, 0.1)  # a, b, c, d, e, f, k of 11.1.4
  penalty_weight: float = 1e4
  num_steps: int = 6000
  q_pairs: tuple = ((0.1, 0.2), (0.2, 0.5), (0.5, 0.8), (0.1, 0.5))
  u: float = 2.0
  v: float = 4.0
  beta: float = 1e4
  seed: int = 0                     # unused: both examples are deterministic

  def __post_init__(self):
    _config.numbers(self, "six_d", 0.0, 1.0)
    if len(self.six_d) != 7:
      _config.fail("six_d", "7 probabilities (a, b, c, d, e, f, k)", self.six_d)
    _config.number(self, "penalty_weight", 0.0)
    _config.integer(self, "num_steps", 1)
    if (not isinstance(self.q_pairs, (tuple, list)) or not self.q_pairs
        or any(not isinstance(q, (tuple, list)) or len(q) != 2 for q in self.q_pairs)):
      _config.fail("q_pairs", "a non-empty tuple of (q1, q2) pairs", self.q_pairs)
    for q in self.q_pairs:
      if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 <= x <= 1
             for x in q):
        _config.fail("q_pairs", "pairs of numbers in [0, 1]", self.q_pairs)
    for field in ("u", "v"):
      _config.number(self, field, 0.0, strict=True)
    _config.number(self, "beta", 0.0)
    _config.integer(self, "seed", 0)


def get_config(quick: bool = False, **overrides: Any) -> Config:
  """The appendices' examples; `quick`: 2,000 Adam steps for the 6-D example."""
  return _config.replace(Config(num_steps=2000) if quick else Config(), **overrides)


def add_arguments(p) -> None:
  """No options of its own (the shared --out/--quick/... only)."""


def run(config: Config, *, progress: bool = True,
        checkpoint_dir: Optional[str] = None) -> dict[str, Any]:
  """Solves both examples; returns the results (writes nothing)."""
  from jaxthesis.rex import toy

  clock = _results.Stopwatch()
  params = toy.SixDParams(*config.six_d)
  closed = toy.six_d_closed_forms(params)
  six_d = {}
  for method in toy.SIX_D_METHODS:
    solved = toy.six_d_solve(params, method, penalty_weight=config.penalty_weight,
                             num_steps=config.num_steps)
    six_d[method] = {"computed": {"p_y1": np.asarray(solved.p_y1).tolist(),
                                  "capacity": np.asarray(solved.capacity).tolist()},
                     "closed_form": {"p_y1": np.asarray(closed[method].p_y1).tolist(),
                                     "capacity": np.asarray(closed[method].capacity).tolist()}}
  shift = []
  for q1, q2 in config.q_pairs:
    solved = toy.covariate_shift_solve(q1, q2, u=config.u, v=config.v, beta=config.beta)
    shift.append({"q1": q1, "q2": q2,
                  "computed": {k: float(getattr(solved, k)) for k in
                               ("erm", "risk_interpolation", "vrex", "minimax")},
                  "worst_case_risk": np.asarray(solved.worst_case_risk).tolist(),
                  "closed_form": toy.covariate_shift_closed_forms(q1, q2, u=config.u,
                                                                 v=config.v, beta=config.beta)})
  return {"experiment": "rex/toy", "data": "closed-form toy distributions",
          "config": dataclasses.asdict(config),
          "metrics": {"six_d": six_d, "covariate_shift": shift}, "reference": REFERENCE,
          "wall_seconds": clock(), "arrays": {}}


save = _results.save


def _fmt(values) -> str:
  return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def table(results: dict[str, Any]) -> str:
  metrics = results["metrics"]
  rows = [[m, _fmt(r["computed"]["p_y1"]), _fmt(r["closed_form"]["p_y1"]),
           _fmt(r["computed"]["capacity"]), _fmt(r["closed_form"]["capacity"])]
          for m, r in metrics["six_d"].items()]
  six = _results.format_table(["method", "P̂(Y=1|X=0,1,2)", "closed form", "capacity κ_0,1,2",
                               "closed form"], rows)
  rows = []
  for r in metrics["covariate_shift"]:
    c, cf = r["computed"], r["closed_form"]
    rows.append([f"{r['q1']:g}, {r['q2']:g}"]
                + [f"{c[k]:.4f} ({cf[k]:.4f})" for k in ("erm", "risk_interpolation", "vrex",
                                                          "minimax")]
                + [_fmt(r["worst_case_risk"])])
  shift = _results.format_table(["q1, q2", "ERM p (closed)", "RI p (closed)", "V-REx p (closed)",
                                 "minimax p (closed)", "max_q R_q: ERM, RI, REx, minimax"], rows)
  return ("Appendix 11.1.4, 6-D example (computed vs closed form)\n" + six +
          f"\n\nAppendix 11.1.5, COSTLY/CHEAP covariate shift ({REFERENCE['source']}; "
          "computed, closed form in brackets)\n" + shift)


def plot(out: str) -> list[str]:
  """Fig. 11.2: the risks R_q(p), their upper envelope, the saddle point and the computed
  solutions of the second q pair (from the saved results)."""
  from jaxthesis.rex import toy

  results, _ = _results.load(out)
  config, metrics = results["config"], results["metrics"]
  u, v = config["u"], config["v"]
  p = np.linspace(0, 1, 201)
  omega = u / (u + v)
  plt = _plots.pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for q in np.linspace(0, 1, 11):
    ax.plot(p, toy.covariate_shift_risk(p, q, u, v), color="0.75", lw=0.8)
  ax.plot(p, toy.covariate_shift_risk(p, omega, u, v), color="tab:blue", label="q = ω")
  worst = np.maximum(toy.covariate_shift_risk(p, 0.0, u, v), toy.covariate_shift_risk(p, 1.0, u, v))
  ax.plot(p, worst, color="tab:red", lw=2, label="max_q R_q(p)")
  ax.plot([omega], [u * v / (u + v)], marker="*", ms=15, color="purple", ls="",
          label="saddle p = ω")
  shown = metrics["covariate_shift"][min(1, len(metrics["covariate_shift"]) - 1)]
  for name, marker in (("erm", "o"), ("risk_interpolation", "s"), ("vrex", "^")):
    pv = shown["computed"][name]
    ax.plot([pv], [float(np.maximum(u * (1 - pv), v * pv))], marker=marker, ls="",
            label=f"{name} (q1={shown['q1']:g}, q2={shown['q2']:g})")
  ax.set_xlabel("p (probability of predicting COSTLY)")
  ax.set_ylabel("R_q(p)")
  ax.set_title(f"{REFERENCE['source']}: covariate shift example")
  ax.legend(fontsize=7)
  return [_plots.savefig(fig, out, "covariate_shift.png")]
