"""Matplotlib set-up shared by the studies' `plot(out)` functions (Agg, no display)."""
from __future__ import annotations

import os


def pyplot():
  """`matplotlib.pyplot` on the Agg backend, with the project's small-figure style."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  plt.rcParams.update({"axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 9,
                       "legend.fontsize": 8})
  return plt


def savefig(fig, out: str, name: str, dpi: int = 120) -> str:
  """Saves `fig` as `out/name`, closes it and returns the path."""
  import matplotlib.pyplot as plt
  path = os.path.join(out, name)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path
