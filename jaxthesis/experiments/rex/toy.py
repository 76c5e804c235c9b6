"""`jaxthesis rex toy`: the toy examples of appendices 11.1.4 and 11.1.5 vs closed forms."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from jaxthesis.experiments import _common as common


@dataclasses.dataclass(frozen=True)
class ToyConfig:
  """Parameters of the two toy examples."""
  six_d: tuple[float, ...] = (0.1, 0.05, 0.2, 0.25, 0.15, 0.25, 0.1)  # a, b, c, d, e, f, k
  penalty_weight: float = 1e4
  num_steps: int = 6000
  q_pairs: tuple[tuple[float, float], ...] = ((0.1, 0.2), (0.2, 0.5), (0.5, 0.8), (0.1, 0.5))
  u: float = 2.0
  v: float = 4.0
  beta: float = 1e4


def get_config(quick: bool = False) -> ToyConfig:
  return ToyConfig(num_steps=2000) if quick else ToyConfig()


def run(config: ToyConfig) -> dict[str, Any]:
  import numpy as np
  from jaxthesis.rex import toy

  params = toy.SixDParams(*config.six_d)
  closed = toy.six_d_closed_forms(params)
  six_d = {}
  for method in toy.SIX_D_METHODS:
    solved = toy.six_d_solve(params, method, penalty_weight=config.penalty_weight,
                             num_steps=config.num_steps)
    six_d[method] = {"computed": {"p_y1": np.asarray(solved.p_y1).tolist(),
                                  "capacity": np.asarray(solved.capacity).tolist()},
                     "closed_form": {"p_y1": closed[method].p_y1.tolist(),
                                     "capacity": closed[method].capacity.tolist()}}
  shift = []
  for q1, q2 in config.q_pairs:
    solved = toy.covariate_shift_solve(q1, q2, u=config.u, v=config.v, beta=config.beta)
    shift.append({"q1": q1, "q2": q2,
                  "computed": {k: float(getattr(solved, k)) for k in
                               ("erm", "risk_interpolation", "vrex", "minimax")},
                  "worst_case_risk": np.asarray(solved.worst_case_risk).tolist(),
                  "closed_form": toy.covariate_shift_closed_forms(q1, q2, u=config.u,
                                                                 v=config.v, beta=config.beta)})
  return {"six_d": six_d, "covariate_shift": shift}


def _fmt(values) -> str:
  return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def format_report(metrics) -> str:
  rows = [[m, _fmt(r["computed"]["p_y1"]), _fmt(r["closed_form"]["p_y1"]),
           _fmt(r["computed"]["capacity"]), _fmt(r["closed_form"]["capacity"])]
          for m, r in metrics["six_d"].items()]
  six = common.format_table(["method", "P̂(Y=1|X=0,1,2)", "closed form", "capacity κ_0,1,2",
                             "closed form"], rows)
  rows = []
  for r in metrics["covariate_shift"]:
    c, cf = r["computed"], r["closed_form"]
    rows.append([f"{r['q1']:g}, {r['q2']:g}", f"{c['erm']:.4f} ({cf['erm']:.4f})",
                 f"{c['risk_interpolation']:.4f} ({cf['risk_interpolation']:.4f})",
                 f"{c['vrex']:.4f} ({cf['vrex']:.4f})", f"{c['minimax']:.4f} ({cf['minimax']:.4f})",
                 _fmt(r["worst_case_risk"])])
  shift = common.format_table(["q1, q2", "ERM p (closed)", "RI p (closed)", "V-REx p (closed)",
                               "minimax p (closed)", "max_q R_q: ERM, RI, REx, minimax"], rows)
  return ("Appendix 11.1.4, 6-D example (computed vs closed form)\n" + six +
          "\n\nAppendix 11.1.5, COSTLY/CHEAP covariate shift (computed, closed form in brackets)\n"
          + shift)


def _plot(config: ToyConfig, metrics, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  from jaxthesis.rex import toy

  p = np.linspace(0, 1, 201)
  omega = config.u / (config.u + config.v)
  fig, ax = plt.subplots(figsize=(5.5, 4))
  for q in np.linspace(0, 1, 11):
    ax.plot(p, toy.covariate_shift_risk(p, q, config.u, config.v), color="0.75", lw=0.8)
  ax.plot(p, toy.covariate_shift_risk(p, omega, config.u, config.v), color="tab:blue",
          label="q = ω")
  worst = np.maximum(toy.covariate_shift_risk(p, 0.0, config.u, config.v),
                     toy.covariate_shift_risk(p, 1.0, config.u, config.v))
  ax.plot(p, worst, color="tab:red", lw=2, label="max_q R_q(p)")
  ax.plot([omega], [config.u * config.v / (config.u + config.v)], marker="*", ms=15,
          color="purple", ls="", label="saddle p = ω")
  first = metrics["covariate_shift"][1]
  for name, marker in (("erm", "o"), ("risk_interpolation", "s"), ("vrex", "^")):
    pv = first["computed"][name]
    ax.plot([pv], [float(np.maximum(config.u * (1 - pv), config.v * pv))], marker=marker,
            ls="", label=f"{name} (q1={first['q1']:g}, q2={first['q2']:g})")
  ax.set_xlabel("p (probability of predicting COSTLY)")
  ax.set_ylabel("R_q(p)")
  ax.set_title("Figure 11.2: covariate shift example")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def toy_command(args) -> int:
  watch = common.Stopwatch()
  config = get_config(args.quick)
  metrics = run(config)
  print(format_report(metrics))
  os.makedirs(args.out, exist_ok=True)
  plot_path = os.path.join(args.out, "covariate_shift.png")
  _plot(config, metrics, plot_path)
  path = common.write_results(
      args.out, experiment="rex/toy", data="closed-form toy distributions",
      config=config, metrics=metrics,
      reference={"six_d": "appendix 11.1.4: P̂(Y=1|X=2) = 1/2 for IRM and REx, (3f+k)/(3e+3f) "
                          "for ERM; REx equalizes capacity across X = 0/1",
                 "covariate_shift": "appendix 11.1.5: REx -> ω = u/(u+v); ERM 0 or 1; RI as "
                                    "described"},
      wall_seconds=watch(), plots=[plot_path])
  print(f"wrote {path} and {plot_path}")
  return 0


def add_commands(subparsers) -> None:
  p = subparsers.add_parser("toy", help="toy examples of appendices 11.1.4 and 11.1.5")
  common.add_output_args(p, default_out="runs/rex_toy")
  p.set_defaults(func=toy_command)
