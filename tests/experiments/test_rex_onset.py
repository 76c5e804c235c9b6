"""`memorization rex-onset`: the example groups, the recorder against the evaluation, and
the onset and peak steps against their definitions."""
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.memorization import rex_onset


@pytest.mark.parametrize("overrides, field", [
    (dict(methods=("grayscale",)), "methods"),
    (dict(methods=()), "methods"),
    (dict(onset_fraction=0.0), "onset_fraction"),
    (dict(onset_fraction=1.5), "onset_fraction"),
    (dict(learned_train_acc=-0.1), "learned_train_acc"),
    (dict(record_every=0), "record_every"),
    (dict(step_fraction=0.0), "step_fraction"),
    (dict(num_train=5), "num_train"),
    (dict(data="disk"), "data"),
])
def test_bad_config_values_name_the_field(overrides, field):
  with pytest.raises(_config.UsageError, match=f"config.{field}") as info:
    rex_onset.get_config(True, **overrides)
  assert info.value.field == field


def test_unexplained_examples_are_those_neither_shape_nor_colour_predicts():
  import jax
  from jaxthesis.rex import colored_mnist
  rng = np.random.default_rng(0)
  images = rng.integers(1, 256, (4000, 28, 28)).astype(np.uint8)  # no blank digit
  digits = rng.integers(0, 10, 4000)
  data = colored_mnist.make_colored_mnist(images, digits, images[:10], digits[:10])
  key = jax.random.PRNGKey(3)
  groups = {k: np.asarray(v) for k, v in rex_onset.example_groups(key, data).items()}
  x, y, _ = colored_mnist.sample_train_domains(key, data)
  x, y = np.asarray(x).reshape(4000, -1), np.asarray(y).reshape(-1)
  shape_pred = (np.asarray(data.train_digits).reshape(-1) < 5).astype(float)
  colour_pred = (x[:, 196:].sum(1) > 0).astype(float)
  np.testing.assert_array_equal(groups["flipped"], shape_pred != y)
  np.testing.assert_array_equal(groups["unexplained"], (shape_pred != y) & (colour_pred != y))
  # 25 % label noise, colour flipped with probability 0.2 / 0.1 in the two domains.
  assert abs(groups["flipped"].mean() - 0.25) < 0.03
  assert abs(groups["unexplained"].mean() - 0.25 * 0.15) < 0.015


def test_test_peak_is_looked_for_once_features_are_learned():
  test_acc = np.array([[0.5, 0.1, 0.3, 0.2], [0.5, 0.4, 0.2, 0.1], [0.5, 0.2, 0.6, 0.1]])
  train_acc = np.array([[0.5, 0.8, 0.9, 0.9], [0.5, 0.6, 0.6, 0.6], [0.5, 0.6, 0.75, 0.9]])
  # Row 1 never reaches 0.7: the whole curve counts.
  np.testing.assert_array_equal(rex_onset.test_peak_index(test_acc, train_acc, 0.7), [2, 0, 2])


@pytest.fixture(scope="module")
def tiny_run():
  config = rex_onset.get_config(True, data="builtin", methods=("erm",), restarts=2,
                                num_train=200, num_test=100, step_fraction=0.05,
                                eval_every=1, record_every=1, onset_fraction=0.3)
  return config, rex_onset.run(config, progress=False)


def test_recorder_agrees_with_the_evaluation(tiny_run):
  config, results = tiny_run
  a = results["arrays"]
  steps = results["metrics"]["erm"]["steps"]
  np.testing.assert_array_equal(a["erm/eval_steps"], np.append(np.arange(steps), steps))
  fit_at_last_measurement = a["erm/fit_for_good"] >= 0  # the measurement at step T - 1
  for group in rex_onset.GROUPS:
    mask = a[f"erm/{group}"]
    expected = (fit_at_last_measurement & mask).sum(1) / mask.sum(1)
    # Both measure the state before the update at step T - 1.
    np.testing.assert_allclose(a[f"erm/{group}_fit"][:, -2], expected, atol=1e-6)
  fit = a["erm/fit_for_good"]
  first = a["erm/first_learned"]
  assert np.all(first[fit >= 0] >= 0) and np.all(first[fit >= 0] <= fit[fit >= 0])
  assert np.all(fit < steps)


def test_onset_and_peak_follow_their_definitions(tiny_run):
  config, results = tiny_run
  a, m = results["arrays"], results["metrics"]["erm"]
  steps = a["erm/eval_steps"]
  for r in range(config.restarts):
    test_acc, train_acc = a["erm/test_acc"][r], a["erm/train_acc"][r]
    learned = np.flatnonzero(train_acc >= config.learned_train_acc)
    assert learned.size  # ERM fits colour within a few steps
    after = test_acc[learned[0]:]
    assert m["test_peak_step"][r] == steps[learned[0] + np.argmax(after)]
    assert m["test_peak_acc"][r] == pytest.approx(after.max())
    for group in rex_onset.GROUPS:
      mask = a[f"erm/{group}"][r]
      fit = a["erm/fit_for_good"][r][mask]
      onset = m[f"{group}_onset_step"][r]
      share_by = lambda s: np.mean((fit >= 0) & (fit <= s))
      if np.isfinite(onset):
        # The first step by which the share of the group fit for good reaches the fraction.
        assert share_by(onset) >= config.onset_fraction
        assert share_by(onset - 1) < config.onset_fraction
      else:
        assert np.mean(fit >= 0) < config.onset_fraction
      assert m["group_sizes"][group][r] == mask.sum()
  onset = np.asarray(m["unexplained_onset_step"])
  assert m["onset_reached"] == np.isfinite(onset).sum()
  assert m["peak_not_after_onset"] == np.sum(np.asarray(m["test_peak_step"]) <= onset)
  text = rex_onset.table(results)
  assert "Fig. 11.9" in text and "ERM" in text
