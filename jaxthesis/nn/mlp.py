"""The ReLU MLP of the Colored-MNIST experiments and the L2 norm of its parameters."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxthesis import _checks
from jaxthesis.typing import Array, PyTree


class _FlatDense(nn.Module):
  """`x @ kernel + bias` with the product taken on `x` flattened to `[-1, fan_in]`.

  The parameters, their initial draw and every value are those of `nn.Dense` (it is
  named like one); only the product's shape differs. For inputs with several leading
  axes (REx's `[domains, examples, d]`) the kernel's gradient is then one plain
  `[fan_in, N] x [N, fan_out]` product: contracting two axes, XLA's CPU backend copied the
  output gradient to a transposed layout for it in every step (issue 12). The bias is
  added in the input's shape, so its gradient sums in the same order as `nn.Dense`'s.
  """
  features: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param("kernel", nn.initializers.xavier_uniform(),
                        (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    flat = jax.lax.dot_general(x.reshape((-1, x.shape[-1])), kernel, (((1,), (0,)), ((), ())))
    return flat.reshape(x.shape[:-1] + (self.features,)) + bias


class MLP(nn.Module):
  """ReLU multilayer perceptron with Xavier-uniform weights and zero biases.

  The architecture of the IRM/REx Colored-MNIST experiments (thesis 5.4.1):
  `in → H → H → out` for `hidden=(H, H)`. Layers are named `Dense_0`, `Dense_1`, ...
  with `kernel` and `bias` entries, as flax's `nn.Dense` layers would be.
  """
  hidden: Sequence[int]
  out: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    _check_widths(self.hidden, self.out)
    for i, width in enumerate(self.hidden):
      x = nn.relu(_FlatDense(width, name=f"Dense_{i}")(x))
    return _FlatDense(self.out, name=f"Dense_{len(self.hidden)}")(x)


def _check_widths(hidden, out) -> None:
  """Layer widths are positive ints (bools are not widths), checked before any tracing."""
  if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence):
    raise TypeError(f"hidden must be a sequence of positive ints, got {hidden!r}")
  for i, width in enumerate(hidden):
    _checks.check_positive_int(f"hidden[{i}]", width)
  _checks.check_positive_int("out", out)


def squared_norm(params: PyTree) -> Array:
  """`Σ ‖θ‖²` over every leaf: the L2 term of the reference code (biases included)."""
  return sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))
