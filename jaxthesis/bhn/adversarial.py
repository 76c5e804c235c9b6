"""The fast gradient sign method (Goodfellow et al.) against a sampled posterior (Section 7.4.5).

`x_adv = clip(x + epsilon sign(grad_x L), 0, 1)` with `L` the cross-entropy of the
plain (unclipped) softmax averaged over `num_samples` posterior samples: one sample in
Fig. 7.5, 32 in Fig. 11.13 (a better gradient estimate, a stronger attack).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis import _checks
from jaxthesis.bhn.methods import Method
from jaxthesis.bhn.primary import check_inputs
from jaxthesis.typing import Array, ArrayLike, Params, PRNGKey


def fgsm(method: Method, params: Params, key: PRNGKey, x: ArrayLike, y: ArrayLike,
         epsilon: ArrayLike, *, num_samples: int = 1, clip_range: tuple[float, float] = (0.0, 1.0)
         ) -> Array:
  """Adversarial examples by one signed-gradient step of size `epsilon`.

  Args:
    method: a trained `Method` (its `sample_outputs` gives the logits).
    params: its parameters.
    key: draws the posterior samples (or dropout masks) used for the gradient.
    x: inputs [B, ...]; y: integer labels [B].
    epsilon: step size >= 0 (scalar; vmap over it for a grid).
    num_samples: posterior samples averaged in the loss (>= 1).
    clip_range: the valid input range.

  Returns:
    `x_adv` with the shape of `x`.
  """
  if not isinstance(method, Method):
    raise TypeError(f"method must be a Method, got {type(method).__name__}")
  check_inputs(method.primary, x)
  if not jnp.issubdtype(jnp.result_type(y), jnp.integer) or np.shape(y) != np.shape(x)[:1]:
    raise ValueError(f"y must be integer labels of shape [{np.shape(x)[0]}], got "
                     f"{jnp.result_type(y)}{list(np.shape(y))}")
  _checks.check_scalar("epsilon", epsilon)
  _checks.check_nonnegative("epsilon", epsilon)
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")

  def loss(x_in):
    logits = method.sample_outputs(params, key, x_in, num_samples)
    log_p = jax.nn.log_softmax(logits, -1)
    picked = jnp.take_along_axis(log_p, jnp.asarray(y)[None, :, None], -1)
    return -jnp.sum(jnp.mean(picked, 0))

  grad = jax.grad(loss)(jnp.asarray(x))
  return jnp.clip(x + epsilon * jnp.sign(grad), *clip_range)
