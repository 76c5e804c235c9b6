"""The ReLU MLP of the Colored-MNIST experiments and the L2 norm of its parameters."""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxthesis.typing import Array, PyTree


class MLP(nn.Module):
  """ReLU multilayer perceptron with Xavier-uniform weights and zero biases.

  The architecture of the IRM/REx Colored-MNIST experiments (thesis 5.4.1):
  `in → H → H → out` for `hidden=(H, H)`.
  """
  hidden: Sequence[int]
  out: int = 1

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    dense = lambda n: nn.Dense(n, kernel_init=nn.initializers.xavier_uniform(),
                               bias_init=nn.initializers.zeros)
    for width in self.hidden:
      x = nn.relu(dense(width)(x))
    return dense(self.out)(x)


def squared_norm(params: PyTree) -> Array:
  """`Σ ‖θ‖²` over every leaf: the L2 term of the reference code (biases included)."""
  return sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))
