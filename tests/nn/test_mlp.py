"""jaxthesis.nn.MLP: the same function, parameters and gradients as a stack of nn.Dense.

Its layers take their products on the input flattened to 2-D (speed on XLA:CPU, issue 12);
these tests pin that this changes nothing else, for the [domains, examples, d] inputs of
REx, at initialization and at parameters drawn at moderate scale.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxthesis.nn import MLP


class _DenseStack(nn.Module):
  """The reference: the same MLP written with flax's nn.Dense."""
  hidden: tuple
  out: int = 1

  @nn.compact
  def __call__(self, x):
    dense = lambda n: nn.Dense(n, kernel_init=nn.initializers.xavier_uniform(),
                               bias_init=nn.initializers.zeros)
    for width in self.hidden:
      x = nn.relu(dense(width)(x))
    return dense(self.out)(x)


def _moderate(params, key):
  """Every leaf redrawn at scale 0.3 (biases included, so no unit sits at zero)."""
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [0.3 * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def test_mlp_matches_dense_stack_in_init_values_and_gradients():
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  ours, reference = MLP(hidden=(24, 24), out=3), _DenseStack(hidden=(24, 24), out=3)
  x = jax.random.normal(keys[0], (2, 50, 10))
  params = ours.init(keys[1], jnp.zeros((1, 10)))
  ref_params = reference.init(keys[1], jnp.zeros((1, 10)))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(ref_params)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref_params)):
    np.testing.assert_array_equal(a, b)
  for p in (params, _moderate(params, keys[2])):
    np.testing.assert_allclose(ours.apply(p, x), reference.apply(p, x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours.apply(p, x[0]), reference.apply(p, x[0]), rtol=1e-6,
                               atol=1e-6)
    assert ours.apply(p, x).shape == (2, 50, 3)

    def loss(model):
      return lambda q: jnp.sum(jnp.sin(model.apply(q, x)) * jnp.arange(3.0))

    grads, ref_grads = jax.grad(loss(ours))(p), jax.grad(loss(reference))(p)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
      assert float(jnp.max(jnp.abs(b))) > 0
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mlp_weight_gradient_needs_no_transposed_copy():
  """For a [m, n, d] input the compiled gradient has no transposing copy of an [m, n, H]
  output gradient (the copy the flattened product removes)."""
  model = MLP(hidden=(32, 32))
  x = jnp.ones((2, 40, 16))
  params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))
  grad = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))
  hlo = grad.lower(params).compile().as_text()
  transposed = [line for line in hlo.splitlines()
                if "f32[32,80]" in line and ("copy" in line or "transpose" in line)]
  assert not transposed, transposed
