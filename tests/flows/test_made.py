"""MADE (the conditioner c(x_{1:t-1}) of eq. 9.4): autoregressive structure and init."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import flows

# XLA's CPU backend at optimization level 0 compiles about twice as fast, same results.
_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})


# Every ordering and every depth (none, one, two hidden layers) appears at least once.
@pytest.mark.parametrize("kind,hidden_sizes", [("natural", (12,)), ("reversed", (10, 7)),
                                               ("random", ()), ("random", (12,))])
def test_jacobian_strictly_triangular_under_ordering(kind, hidden_sizes):
  d, k = 5, 3
  ordering = flows.make_ordering(kind, d, jax.random.PRNGKey(3))
  made = flows.MADE(num_dims=d, num_params=k, hidden_sizes=hidden_sizes, ordering=ordering,
                    activation="tanh", output_init_scale=1.0)
  params = made.init(jax.random.PRNGKey(0), jnp.zeros(d))
  x = jax.random.normal(jax.random.PRNGKey(1), (d,))
  jac = _jit(jax.jacfwd(lambda x: made.apply(params, x)))(x)  # [D, K, D]
  assert jac.shape == (d, k, d)
  order = np.asarray(ordering)
  dependence = np.abs(np.asarray(jac)).max(axis=1)[order][:, order]  # by generation order
  assert np.all(np.triu(dependence) == 0.0)           # strictly lower-triangular
  if hidden_sizes == (12,):  # and generically dense below the diagonal
    assert np.all(np.tril(dependence, -1)[np.tril_indices(d, -1)] > 0.0)


def test_output_starts_near_zero_and_context_enters():
  made = flows.MADE(num_dims=3, num_params=4, hidden_sizes=(8,))
  x, c = jnp.ones((2, 3)), jnp.ones((2, 5))
  params = made.init(jax.random.PRNGKey(0), x[0], c[0])
  out = made.apply(params, x, c)
  assert out.shape == (2, 3, 4)
  assert float(jnp.abs(out).max()) < 0.1
  zero = flows.MADE(num_dims=3, num_params=4, hidden_sizes=(8,), output_init_scale=0.0)
  assert float(jnp.abs(zero.apply(zero.init(jax.random.PRNGKey(0), x[0]), x)).max()) == 0.0
  # The first dimension's block sees the context only.
  big = flows.MADE(num_dims=3, num_params=4, hidden_sizes=(8,), output_init_scale=1.0)
  p = big.init(jax.random.PRNGKey(0), x[0], c[0])
  dc = _jit(jax.jacfwd(lambda c: big.apply(p, x[0], c)))(c[0])
  assert float(jnp.abs(dc[0]).max()) > 0.0


def test_masks_and_validation():
  masks = flows.made_masks(3, (4,), 2, (2, 0, 1))
  assert [m.shape for m in masks] == [(3, 4), (4, 6)]
  # A one-dimensional MADE outputs constants (its hidden units have degree 0).
  one = flows.MADE(num_dims=1, num_params=2, hidden_sizes=(4,), output_init_scale=1.0)
  p = one.init(jax.random.PRNGKey(0), jnp.zeros(1))
  np.testing.assert_allclose(one.apply(p, jnp.ones(1)), one.apply(p, -jnp.ones(1)))
  with pytest.raises(ValueError, match="ordering"):
    flows.made_masks(3, (4,), 2, (0, 0, 1))
  with pytest.raises(ValueError, match="kind"):
    flows.make_ordering("sorted", 3)
  with pytest.raises(ValueError, match="key"):
    flows.make_ordering("random", 3)
  with pytest.raises(ValueError, match=r"x must have shape \[..., 3\]"):
    flows.MADE(num_dims=3, num_params=1).init(jax.random.PRNGKey(0), jnp.zeros(4))


@pytest.mark.parametrize("kind", ["natural", "reversed", "random"])
def test_output_layer_by_dense_runs_equals_the_masked_product(kind):
  """The output layer skips the all-zero rectangles of its mask (natural and reversed
  orderings); the product is the dense masked one, and random orderings keep it."""
  from jaxthesis.flows import made as made_module
  d, k, hidden = 9, 3, (16, 16)
  ordering = flows.make_ordering(kind, d, jax.random.PRNGKey(3))
  deg_in, deg_out = made_module._made_degrees(d, hidden, k, ordering)[-2:]
  mask = flows.made_masks(d, hidden, k, ordering)[-1]
  plan = made_module._output_blocks(deg_in, deg_out, d, k, max_blocks=4)
  if kind == "random":
    assert plan is None
    return
  row_order, blocks = plan
  assert [(lo, hi) for lo, hi, _ in blocks] == [(0, 2), (2, 4), (4, 7), (7, 9)]
  # Each run keeps every unit its dimensions see and skips at least a fifth overall.
  for lo, hi, n in blocks:
    assert mask[row_order[n:], lo * k:hi * k].sum() == 0
  assert sum((hi - lo) * n for lo, hi, n in blocks) < 0.8 * d * mask.shape[0]
  h = jax.random.normal(jax.random.PRNGKey(1), (5, mask.shape[0]))
  kernel = jax.random.normal(jax.random.PRNGKey(2), mask.shape)
  np.testing.assert_allclose(
      made_module._blocked_product(h, kernel, deg_in, deg_out, plan, k), h @ (kernel * mask),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("d,groups,kind,context", [(2, (48, 1), "natural", None),
                                                   (8, (48, 1), "reversed", None),
                                                   (9, (2, 3, 2), "random", 3),
                                                   (1, (2, 1), "natural", 2)])
def test_param_groups_change_no_value_or_gradient(d, groups, kind, context):
  """`param_groups` splits the output layer into one product per group of the K outputs
  but reads the same kernel and bias columns: same parameters, outputs and gradients as
  the ungrouped MADE, at parameters drawn at moderate scale (not only at init)."""
  k = sum(groups)
  ordering = flows.make_ordering(kind, d, jax.random.PRNGKey(3))
  plain = flows.MADE(num_dims=d, num_params=k, hidden_sizes=(16, 16), ordering=ordering)
  grouped = plain.clone(param_groups=groups)
  x = jax.random.normal(jax.random.PRNGKey(1), (6, d))
  c = None if context is None else jax.random.normal(jax.random.PRNGKey(2), (6, context))
  params = plain.init(jax.random.PRNGKey(0), x, c)
  grouped_params = grouped.init(jax.random.PRNGKey(0), x, c)
  assert jax.tree.structure(params) == jax.tree.structure(grouped_params)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(grouped_params)):
    np.testing.assert_array_equal(a, b)
  # Moderate scale: every output column is far from its initial near-zero value.
  params = jax.tree.map(lambda p: 0.5 * jax.random.normal(jax.random.PRNGKey(p.size), p.shape),
                        params)
  out = plain.apply(params, x, c)
  np.testing.assert_allclose(grouped.apply(params, x, c), out, rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(out).mean()) > 0.1

  def grads(made):
    return jax.grad(lambda p: jnp.sum(jnp.sin(made.apply(p, x, c)) * jnp.arange(k)))(params)
  for a, b in zip(jax.tree.leaves(grads(plain)), jax.tree.leaves(grads(grouped))):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


def test_param_groups_validation_and_the_flow_wiring():
  x = jnp.zeros(3)
  for bad in [(2, 2), (3, 0), (1.5, 1.5), (), (True, 2)]:
    with pytest.raises(ValueError, match="param_groups"):
      flows.MADE(num_dims=3, num_params=3, param_groups=bad).init(jax.random.PRNGKey(0), x)
  # The surjective sigmoidal transformers declare their split; the bounded ones do not.
  assert flows.make_transformer("dsf", hidden_units=4).pseudo_groups == (12, 1)
  assert flows.make_transformer("dsf", hidden_units=4, surjective=False).pseudo_groups is None
  ddsf = flows.make_transformer("ddsf")
  assert sum(ddsf.pseudo_groups) == ddsf.num_pseudo_params and ddsf.pseudo_groups[-1] == 1


@pytest.mark.parametrize("d,hidden,context", [(8, (16, 16), None), (5, (12,), 2), (9, (7, 20), 3)])
def test_sorted_units_are_the_same_map_without_a_gather(d, hidden, context):
  """`sort_units` stores the last hidden layer's units by degree: the same initial draw
  (permuted), the same map at parameters of moderate scale, and no gather in the step."""
  plain = flows.MADE(num_dims=d, num_params=3, hidden_sizes=hidden,
                     ordering=tuple(range(d))[::-1], output_init_scale=1.0, sort_units=False)
  stored = plain.clone(sort_units=True)
  x = jax.random.normal(jax.random.PRNGKey(1), (6, d))
  c = None if context is None else jax.random.normal(jax.random.PRNGKey(2), (6, context))
  params, sorted_params = (m.init(jax.random.PRNGKey(0), x, c) for m in (plain, stored))
  # Moderate scale (the same factor for both keeps them the same map).
  params, sorted_params = (jax.tree.map(lambda p: 3.0 * p + 0.1, ps)
                           for ps in (params, sorted_params))
  last = f"kernel_{len(hidden)}"
  assert not np.array_equal(params["params"][last], sorted_params["params"][last])
  np.testing.assert_allclose(np.sort(np.asarray(params["params"][last]), axis=0),
                             np.sort(np.asarray(sorted_params["params"][last]), axis=0))
  out = plain.apply(params, x, c)
  assert float(jnp.abs(out).mean()) > 0.1
  np.testing.assert_allclose(stored.apply(sorted_params, x, c), out, rtol=1e-5, atol=1e-5)
  loss = lambda m: lambda p: jnp.sum(jnp.sin(m.apply(p, x, c)))
  input_grad = lambda m, p: jax.grad(lambda x: jnp.sum(jnp.sin(m.apply(p, x, c))))(x)
  np.testing.assert_allclose(input_grad(stored, sorted_params), input_grad(plain, params),
                             rtol=1e-4, atol=1e-4)
  assert "gather" in str(jax.make_jaxpr(jax.grad(loss(plain)))(params))
  assert "gather" not in str(jax.make_jaxpr(jax.grad(loss(stored)))(sorted_params))
