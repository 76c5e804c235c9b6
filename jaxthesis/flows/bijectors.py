"""Autoregressive flows and permutations as distrax bijectors.

The autoregressive map `T: x -> y`, `y_t = tau(c(x_{1:t-1}), x_t)` (Eq. 9.4 of the thesis),
is computed for all t in one parallel pass; its inverse needs the dimensions one after the
other. Which of the two is the distrax *forward* (base noise -> data) is the `direction`:

* ``"maf"`` (density estimation, Papamakarios et al.): `T` maps data to noise, so
  `inverse` / `log_prob` are one parallel pass and `forward` / `sample` run the sequential
  inverse.
* ``"iaf"`` (variational inference, Kingma et al.): `T` maps noise to samples, so
  `forward` / `sample_and_log_prob` are parallel and `inverse` (evaluating external points)
  is sequential.

Differentiability: both directions are differentiable. The parallel direction is plain
autodiff (or the transformers' closed-form derivatives). The sequential direction solves
each dimension by bisection (or in closed form for affine transformers); the transformers
attach implicit-function-theorem derivatives to each scalar solve
(`dx = (dy - d_theta tau) / tau'`, see `transformers._implicit_inverse`), and the D sweeps
are differentiated as written: after sweep i the first i dimensions of the ordering and
their derivatives are exact, so after D sweeps the derivative is that of the exact inverse
`T^{-1}`. MAF-direction samples can therefore be trained through (e.g. a reverse-KL
objective on a MAF). Its log-determinant is recomputed by one parallel pass at the solved
point, differentiable through that point as well.

Points that cannot be inverted: with the default (surjective) transformers every point has
an inverse; with the thesis's bounded DSF / DDSF (`surjective=False`) a point outside the
image gives NaN in every dimension at or after the first that cannot be solved (and a NaN
log-det): NaN is the flag, never a far-away finite value.

Argument names in errors follow the distrax method the caller used: `forward(x)` and
`inverse(y)` name `x` and `y` respectively, whichever of them runs `T` or `T^{-1}`.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import distrax
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.flows.transformers import Transformer
from jaxthesis.typing import Array, Params

DIRECTIONS = ("maf", "iaf")

# (params, x [..., D], context [..., C] or None) -> pseudo-parameters [..., D, K]
ConditionerFn = Callable[[Params, Array, Optional[Array]], Array]


class AutoregressiveBijector(distrax.Bijector):
  """An autoregressive flow layer: a conditioner plus a transformer (Eq. 9.4).

  Args:
    conditioner: `(conditioner_params, x [..., D], context) -> pseudo [..., D, K]`, e.g.
      `MADE(...).apply`. Must be autoregressive (output block t depends only on inputs
      earlier in its ordering); the sequential inverse relies on it.
    conditioner_params: its parameters.
    transformer: a `Transformer` with `K = transformer.num_pseudo_params`.
    transformer_params: the transformer's own parameters (`transformer.init(key)`).
    num_dims: D, the event size.
    direction: "maf" (parallel inverse) or "iaf" (parallel forward); see the module doc.
    context: optional conditioning input [..., C] broadcast against the event batch, for
      amortized / conditional flows; its batch shape must broadcast against that of every
      point the bijector is applied to (checked, naming `context`).
  """

  def __init__(self, conditioner: ConditionerFn, conditioner_params: Params,
               transformer: Transformer, transformer_params: Params, num_dims: int, *,
               direction: str = "maf", context: Optional[Array] = None):
    if not callable(conditioner):
      raise TypeError(f"conditioner must be callable, got {type(conditioner).__name__}")
    if not isinstance(transformer, Transformer):
      raise TypeError(f"transformer must be a jaxthesis.flows.Transformer, got "
                      f"{type(transformer).__name__}")
    _checks.check_positive_int("num_dims", num_dims)
    _checks.check_choice("direction", direction, DIRECTIONS)
    if context is not None:
      _checks.check_floating("context", context)
      if np.ndim(context) < 1:
        raise ValueError(f"context must have shape [..., C], got {np.shape(context)}")
    super().__init__(event_ndims_in=1)
    self.conditioner = conditioner
    self.conditioner_params = conditioner_params
    self.transformer = transformer
    self.transformer_params = transformer_params
    self.num_dims = int(num_dims)
    self.direction = direction
    self.context = context

  # The two maps of `T`.

  def _check_event(self, name: str, x: Array) -> None:
    _checks.check_floating(name, x)
    if np.ndim(x) < 1 or np.shape(x)[-1] != self.num_dims:
      raise ValueError(f"{name} must have shape [..., {self.num_dims}], got {np.shape(x)}")
    if self.context is not None:
      batch, context_batch = np.shape(x)[:-1], np.shape(self.context)[:-1]
      try:
        np.broadcast_shapes(batch, context_batch)
      except ValueError:
        raise ValueError(f"context's batch shape {context_batch} (context shape "
                         f"{np.shape(self.context)}) must broadcast against the batch shape "
                         f"{batch} of {name} {np.shape(x)}") from None

  def _pseudo(self, x: Array) -> Array:
    return self.conditioner(self.conditioner_params, x, self.context)

  def transform_and_log_det(self, x: Array, *, name: str = "x") -> tuple[Array, Array]:
    """`T(x)` and `log|det dT/dx|` in one parallel pass (differentiable).

    Args:
      x: points [..., D].
      name: what to call `x` in error messages (the caller's argument name).
    """
    self._check_event(name, x)
    return self._transform_and_log_det(x)

  def _transform_and_log_det(self, x: Array) -> tuple[Array, Array]:
    pseudo = self._pseudo(x)
    # With a batched context the pseudo-parameters may carry more batch axes than x.
    x = jnp.broadcast_to(x, pseudo.shape[:-1])
    y, log_dy = self.transformer.forward_and_log_det(self.transformer_params, pseudo, x)
    return y, log_dy.sum(-1)

  def solve_and_log_det(self, y: Array, *, name: str = "y") -> tuple[Array, Array]:
    """`T^{-1}(y)` and `log|det dT^{-1}/dy|`, one dimension after another.

    Sweeps D times; sweep i re-runs the conditioner on the current solution and solves
    every scalar transformer equation, which fixes the i-th dimension of the ordering (the
    earlier ones are already exact), so after D sweeps all are. The sweeps are a
    `fori_loop`, the scalar solves bisection, so this jits; it is differentiable (see the
    module docstring). NaN where `y` has no inverse (bounded transformers only). A
    float16 / bfloat16 `y` is promoted with the conditioner's outputs (float32), as the
    parallel direction promotes it, and the result has that dtype.

    Args:
      y: points [..., D].
      name: what to call `y` in error messages (the caller's argument name).
    """
    self._check_event(name, y)
    tp = self.transformer_params
    # Broadcast y against the context's batch shape, and promote it as the parallel
    # direction does (a float16 / bfloat16 y meets the conditioner's float32 outputs), so
    # the loop carry keeps one shape and dtype and every solve runs in that dtype.
    pseudo = jax.eval_shape(self._pseudo, y)
    dtype = jnp.promote_types(pseudo.dtype, jnp.result_type(y))
    y = jnp.broadcast_to(jnp.asarray(y, dtype), pseudo.shape[:-1])

    def sweep(_, x):
      return self.transformer.inverse(tp, self._pseudo(x), y).astype(dtype)

    x = jax.lax.fori_loop(0, self.num_dims, sweep, jnp.zeros_like(y))
    _, log_det = self._transform_and_log_det(x)
    return x, -log_det

  # distrax interface.

  def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
    if self.direction == "iaf":
      return self.transform_and_log_det(x, name="x")
    return self.solve_and_log_det(x, name="x")

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    if self.direction == "maf":
      return self.transform_and_log_det(y, name="y")
    return self.solve_and_log_det(y, name="y")

  def same_as(self, other: distrax.Bijector) -> bool:
    return other is self


class Permute(distrax.Bijector):
  """Permutes the last axis: `y = x[..., permutation]` (volume preserving, log-det 0).

  Footnote 7 of chapter 9: a permutation between autoregressive layers lets later layers
  condition on other variables first.

  Args:
    permutation: a permutation of range(D), D >= 1 (ints, not bools).
  """

  def __init__(self, permutation: Sequence[int]):
    perm = np.asarray(permutation)
    if (perm.ndim != 1 or perm.size == 0 or perm.dtype == bool
        or sorted(perm.tolist()) != list(range(perm.size))):
      raise ValueError(f"permutation must be a permutation of range(D), got {permutation!r}")
    super().__init__(event_ndims_in=1, is_constant_jacobian=True)
    self.permutation = tuple(int(i) for i in perm)
    self.inverse_permutation = tuple(int(i) for i in np.argsort(perm))

  def _check(self, name: str, x: Any) -> None:
    if np.ndim(x) < 1 or np.shape(x)[-1] != len(self.permutation):
      raise ValueError(f"{name} must have shape [..., {len(self.permutation)}], "
                       f"got {np.shape(x)}")

  def forward_and_log_det(self, x: Array) -> tuple[Array, Array]:
    self._check("x", x)
    return x[..., self.permutation], jnp.zeros(jnp.shape(x)[:-1], jnp.result_type(x))

  def inverse_and_log_det(self, y: Array) -> tuple[Array, Array]:
    self._check("y", y)
    return y[..., self.inverse_permutation], jnp.zeros(jnp.shape(y)[:-1], jnp.result_type(y))

  def same_as(self, other: distrax.Bijector) -> bool:
    return isinstance(other, Permute) and other.permutation == self.permutation
