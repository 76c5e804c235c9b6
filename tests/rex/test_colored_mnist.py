"""Colored MNIST construction (thesis 5.4.1) and the domain training task."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxthesis import engine
from jaxthesis.data import load_mnist
from jaxthesis.rex import colored_mnist as cm
from jaxthesis.rex import train


def _binomial_ok(count, n, p, sigmas=4.0):
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


@pytest.fixture(scope="module")
def builtin():
  tr, te = load_mnist("train", "builtin"), load_mnist("test", "builtin")
  return tr, te, cm.make_colored_mnist(tr.images, tr.labels, te.images, te.labels)


def test_downsample_takes_every_second_pixel(builtin):
  tr, _, _ = builtin
  out = cm.downsample(tr.images[:3])
  np.testing.assert_allclose(out, tr.images[:3, ::2, ::2].reshape(3, 196) / 255.0, rtol=1e-6)


def test_domains_are_the_even_odd_split(builtin):
  tr, te, d = builtin
  assert d.train_pixels.shape == (2, 2000, 196) and d.test_pixels.shape == (1000, 196)
  np.testing.assert_array_equal(d.train_digits[0], tr.labels[0::2])
  np.testing.assert_array_equal(d.train_digits[1], tr.labels[1::2])
  np.testing.assert_allclose(d.train_color_flip, [0.2, 0.1])
  np.testing.assert_allclose(d.test_color_flip, 0.9)


def test_label_noise_and_color_flip_rates():
  n = 40000
  digits = jnp.arange(n) % 10
  pixels = jnp.ones((n, 196))
  for e in (0.1, 0.2, 0.9):
    x, y = cm.color_digits(jax.random.PRNGKey(int(e * 10)), pixels, digits, e)
    clean = (digits < 5).astype(jnp.float32)
    assert _binomial_ok(int(jnp.sum(y != clean)), n, 0.25)
    color = (x[:, 196:].sum(-1) > 0).astype(jnp.float32)  # digit in channel 1
    assert _binomial_ok(int(jnp.sum(color != y)), n, e)
    # exactly one channel carries the digit, unchanged
    np.testing.assert_allclose(x[:, :196] + x[:, 196:], pixels)
    assert float(jnp.max(x[:, :196] * x[:, 196:])) == 0.0
    np.testing.assert_allclose(cm.to_grayscale(x), pixels)


def test_color_digits_puts_each_digit_in_its_colour_channel():
  """x is exactly the two masked channels side by side (channel 0 first), on random
  pixels and colours, and its compiled form writes x in one fusion, without a concatenate."""
  key_pixels, key_digits, key = jax.random.split(jax.random.PRNGKey(5), 3)
  pixels = jax.random.uniform(key_pixels, (300, 196))
  digits = jax.random.randint(key_digits, (300,), 0, 10)
  x, y = cm.color_digits(key, pixels, digits, 0.3)
  noise_key, color_key = jax.random.split(key)
  labels = jnp.abs((digits < 5).astype(jnp.float32)
                   - jax.random.bernoulli(noise_key, cm.LABEL_NOISE, (300,)))
  colors = jnp.abs(labels - jax.random.bernoulli(color_key, 0.3, (300,)))
  expected = jnp.concatenate([pixels * (colors == 0)[:, None], pixels * (colors == 1)[:, None]],
                             axis=-1)
  np.testing.assert_array_equal(y, labels)
  np.testing.assert_array_equal(x, expected)
  assert 0 < int(jnp.sum(colors)) < 300
  hlo = jax.jit(cm.color_digits).lower(key, pixels, digits, 0.3).compile().as_text()
  concatenates = [line for line in hlo.splitlines()
                  if "f32[300,392]" in line and "concatenate(" in line]
  assert not concatenates, concatenates


def test_population_redraws_and_fixed_repeats(builtin):
  _, _, d = builtin
  x1, y1, _ = cm.sample_train_domains(jax.random.PRNGKey(0), d)
  x2, y2, _ = cm.sample_train_domains(jax.random.PRNGKey(1), d)
  x3, y3, _ = cm.sample_train_domains(jax.random.PRNGKey(0), d)
  assert not np.array_equal(y1, y2)
  np.testing.assert_array_equal(y1, y3)
  np.testing.assert_array_equal(x1, x3)
  # each domain keeps its own colour-flip rate: P(colour != label) ≈ 0.2 and 0.1
  for e, rate in enumerate((0.2, 0.1)):
    color = (x1[e, :, 196:].sum(-1) > 0).astype(jnp.float32)
    assert _binomial_ok(int(jnp.sum(color != y1[e])), 2000, rate)


def test_erm_learns_the_colour_and_fails_at_test(builtin):
  # A known result on a small problem: ERM latches onto colour, so accuracy on the
  # reversed-colour test domain falls far below chance while training accuracy is high.
  tr, te, _ = builtin
  d = cm.make_colored_mnist(tr.images[:1000], tr.labels[:1000], te.images[:500], te.labels[:500])
  task = train.make_domain_task("erm", hidden=64, input_dim=392, num_domains=2,
                                sample_train=cm.sample_train_domains,
                                sample_eval=cm.sample_eval_sets, population=True)
  hp = train.domain_hparams(2, learning_rate=3e-3, l2_weight=1e-3)
  result = engine.Runner(task, 60, eval_every=30, chunk_size=30, progress=False).run(
      jax.random.split(jax.random.PRNGKey(0), 2), hp, d)
  assert np.all(result.history.evals["train_acc"][:, -1] > 0.8)
  assert np.all(result.history.evals["test_acc"][:, -1] < 0.3)


def test_method_objectives_follow_the_table():
  from jaxthesis.rex import objectives as obj
  risks, sizes = jnp.array([0.4, 0.9]), jnp.array([3.0, 1.0])
  # IRMv1's per-domain penalties from logits: (mean((σ(z) - y) z))² per domain (closed form).
  logits = jnp.array([[0.5, -1.0, 2.0, 0.0], [1.5, 0.3, -0.7, 0.2]])
  labels = jnp.array([[1.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
  mask = jnp.ones_like(logits)
  inputs = obj.ObjectiveInputs(risks=risks, sizes=sizes, logits=logits, labels=labels, mask=mask)
  hp = train.domain_hparams(1, learning_rate=1e-3, l2_weight=0.0, groupdro_eta=0.1)
  hp = jax.tree_util.tree_map(lambda a: a[0], hp)
  terms = {m: obj.OBJECTIVES[m].update(inputs, obj.OBJECTIVES[m].init(2), hp)[0]
           for m in train.METHODS}
  np.testing.assert_allclose(terms["erm"], [(0.4 * 3 + 0.9) / 4, 0.0], rtol=1e-6)
  irm_closed = jnp.mean(jnp.mean((jax.nn.sigmoid(logits) - labels) * logits, axis=1) ** 2)
  np.testing.assert_allclose(terms["irm"], [0.65, irm_closed], rtol=1e-5)
  np.testing.assert_allclose(terms["vrex"], [0.65, 0.0625], rtol=1e-6)
  np.testing.assert_allclose(terms["mmrex"], [0.65, 0.25], rtol=1e-6)
  np.testing.assert_allclose(terms["ri"], [0.9, 0.0], rtol=1e-6)
  # GroupDRO, one step from uniform weights: q ∝ exp(η R), loss Σ q R.
  q = jax.nn.softmax(0.1 * risks)
  np.testing.assert_allclose(terms["groupdro"], [jnp.sum(q * risks), 0.0], rtol=1e-6)
  # mean + (1 - mλ)(max - mean) is MM-REx at λ = (1 - w)/m
  w = 91257.186
  np.testing.assert_allclose(terms["mmrex"][0] + w * terms["mmrex"][1],
                             obj.mmrex(risks, (1 - w) / 2), rtol=1e-5)


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="irmv2"), "method must be one of"),
    (dict(hidden=0), "hidden must be a positive int"),
    (dict(irm_estimator="exact"), "irm_estimator"),
])
def test_bad_task_arguments(kwargs, match):
  base = dict(method="erm", hidden=8, input_dim=392, num_domains=2,
              sample_train=cm.sample_train_domains, sample_eval=cm.sample_eval_sets,
              population=True)
  with pytest.raises(ValueError, match=match):
    train.make_domain_task(**{**base, **kwargs})


def test_bad_hparams_and_data():
  with pytest.raises(ValueError, match="l2_weight must be finite and >= 0"):
    train.domain_hparams(2, learning_rate=1e-3, l2_weight=-1.0)
  with pytest.raises(ValueError, match=r"learning_rate must be a scalar or have shape \[3\]"):
    train.domain_hparams(3, learning_rate=[1e-3, 1e-3], l2_weight=0.0)
  img = np.zeros((4, 28, 28), np.uint8)
  with pytest.raises(ValueError, match="train_color_flips must be probabilities"):
    cm.make_colored_mnist(img, np.zeros(4), img, np.zeros(4), train_color_flips=(0.2, 1.5))
  with pytest.raises(ValueError, match="images must be"):
    cm.downsample(np.zeros((4, 14, 14)))
