"""Acquisition functions for active learning (Section 7.4.3, after Gal et al.).

An acquisition function scores pool points from per-sample class probabilities
`[S, B, C]`; the next batch is the top-k. Registry `ACQUISITIONS`: the uncertainty
`SCORES` ("bald", "variation_ratio", "entropy", "mean_std") and "random" (i.i.d. uniform
scores from a key).
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.bhn.uncertainty import SCORES, _check_probs
from jaxthesis.typing import Array, ArrayLike, PRNGKey

ACQUISITIONS = tuple(SCORES) + ("random",)


def acquisition_scores(name: str, probs: ArrayLike, key: Optional[PRNGKey] = None) -> Array:
  """Scores `[B]` of the pool points; higher = acquire first.

  Args:
    name: one of `ACQUISITIONS`.
    probs: per-sample class probabilities `[S, B, C]`.
    key: required for "random".
  """
  _checks.check_choice("name", name, ACQUISITIONS)
  _check_probs(probs)
  if name == "random":
    if key is None:
      raise ValueError("key is required for the 'random' acquisition function")
    return jax.random.uniform(key, (np.shape(probs)[1],))
  return SCORES[name](probs)


def acquisition_index(name: str) -> int:
  """The position of `name` in `ACQUISITIONS` (to select a function inside a vmap)."""
  _checks.check_choice("name", name, ACQUISITIONS)
  return ACQUISITIONS.index(name)


def scores_by_index(index: Array, probs: Array, key: PRNGKey) -> Array:
  """`acquisition_scores(ACQUISITIONS[index], probs, key)` with a traced `index`.

  Lets several acquisition functions run as one vmapped program (`lax.switch`).
  """
  branches = [lambda p, k, f=f: f(p) for f in SCORES.values()]
  branches.append(lambda p, k: jax.random.uniform(k, (p.shape[1],)))
  return jax.lax.switch(index, branches, probs, key)


def select_top(scores: ArrayLike, available: ArrayLike, k: int) -> Array:
  """Indices of the k highest-scoring available pool points (unavailable ones excluded).

  Args:
    scores: `[B]`.
    available: boolean `[B]` (points not yet acquired).
    k: how many to acquire (1 <= k <= B, and <= `available.sum()` when `available` is
      concrete).

  Under tracing the number of available points cannot be checked: when fewer than k are
  available, the remaining slots hold unavailable points (their scores are -inf).
  """
  if not isinstance(k, (int, np.integer)) or k < 1:
    raise ValueError(f"k must be a positive int, got {k!r}")
  _checks.check_rank("scores", scores, 1)
  if np.shape(available) != np.shape(scores):
    raise ValueError(f"available must have the shape of scores {np.shape(scores)}, "
                     f"got {np.shape(available)}")
  if k > np.shape(scores)[0]:
    raise ValueError(f"k must be <= the pool size {np.shape(scores)[0]}, got {k}")
  if _checks.is_concrete(available):
    num_available = int(np.sum(np.asarray(available, bool)))
    if k > num_available:
      raise ValueError(f"k must be <= the number of available points (available.sum() = "
                       f"{num_available}), got {k}")
  masked = jnp.where(jnp.asarray(available), jnp.asarray(scores), -jnp.inf)
  return jax.lax.top_k(masked, k)[1]
