"""Grouping network widths into a few padded widths, so a width sweep is a few programs.

A sweep over hidden widths (the random search of appendix 11.1.9.1, a capacity study)
changes array shapes, so it cannot be vmapped as it stands. Each width h is rounded up
to its *bucket*, the next point of a geometric grid, and trained in a network of the
bucket's width with the surplus units masked (`jaxthesis.nn.masked_mlp`); one compiled
program then trains every width of a bucket.
"""
from __future__ import annotations

import numpy as np

from jaxthesis import _checks


def bucket_width(hidden, per_octave: int = 2) -> np.ndarray:
  """The padded width of each configuration: the smallest `ceil(2^(j/per_octave)) >= h`.

  With `per_octave = 2` the padding wastes at most a factor √2 in width (2 in the
  hidden-to-hidden layer's cost).

  Args:
    hidden: positive ints, any shape: the true widths.
    per_octave: grid points per doubling of the width.

  Returns:
    `i32` array of the shape of `hidden`, each entry `>= hidden`.
  """
  h = np.asarray(hidden)
  if not np.issubdtype(h.dtype, np.integer) or np.any(h < 1):
    raise ValueError(f"hidden must hold positive ints, got {h}")
  _checks.check_positive_int("per_octave", per_octave)
  grid = lambda j: np.ceil(2.0 ** (j / per_octave))
  # ceil(2^(j/p)) >= h exactly when 2^(j/p) > h - 1: the smallest such j, then one step
  # either way against rounding in the logarithm.
  j = np.where(h > 1, np.floor(per_octave * np.log2(np.maximum(h - 1, 1))) + 1, 0)
  width = np.where(grid(j) < h, grid(j + 1), grid(j))
  width = np.where((j >= 1) & (grid(j - 1) >= h), grid(j - 1), width)
  return width.astype(np.int32)


def group_by_bucket(hidden, per_octave: int = 2) -> dict[int, np.ndarray]:
  """`{bucket width: indices of the configurations in it}`, widths ascending."""
  widths = bucket_width(hidden, per_octave)
  return {int(w): np.flatnonzero(widths == w) for w in np.unique(widths)}
