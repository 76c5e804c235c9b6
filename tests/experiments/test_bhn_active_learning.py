"""bhn active-learning (Fig. 7.4): the vmapped round equals one acquisition function run
alone, acquisitions never repeat, random acquisition is uniform, resumption, bad configs."""
import numpy as np
import pytest

from jaxthesis.experiments import _config
from jaxthesis.experiments.bhn import active_learning

# A BHN (continuous BALD / variation-ratio scores, so no ties decide the top-k).
TINY = dict(methods=("gaussian:0",), initial_per_class=1, num_acquisitions=2, acquire_size=5, num_repeats=2,
            hidden=8, num_epochs=2, batch_size=16, hypernet_hidden=8, num_eval_samples=4,
            chunk_size=64, train_size=150, test_size=60)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
  config = active_learning.get_config(True, acquisitions=("variation_ratio", "random"), **TINY)
  checkpoints = str(tmp_path_factory.mktemp("checkpoints"))
  return config, active_learning.run(config, progress=False, checkpoint_dir=checkpoints), checkpoints


def test_vmapped_program_equals_one_acquisition_function_alone(pair):
  _, both, _ = pair
  # Alone with 4 repeats: the same run axis (4 lanes), so the same compiled program, but
  # lanes 2-3 hold more repeats of it instead of random acquisition.
  alone = active_learning.run(active_learning.get_config(
      True, acquisitions=("variation_ratio",), **{**TINY, "num_repeats": 4}), progress=False)
  assert alone["arrays"]["accuracy_0"].shape == (1, 4, 3)  # [functions, repeats, rounds]
  np.testing.assert_array_equal(both["arrays"]["labelled_0"][0],
                                alone["arrays"]["labelled_0"][0, :2])
  np.testing.assert_allclose(both["arrays"]["accuracy_0"][0],
                             alone["arrays"]["accuracy_0"][0, :2], atol=1e-6)
  # Every round of both runs went through one compiled round program (no retracing).
  round_fns = [fns[0] for fns in active_learning._PROGRAMS.values()]
  assert round_fns and all(f._cache_size() == 1 for f in round_fns)


def test_acquired_indices_never_repeat_and_start_balanced(pair):
  config, results, _ = pair
  labelled = results["arrays"]["labelled_0"]  # [A, R, 10 + 2 x 5]
  initial = active_learning.initial_sets(
      active_learning._common.load_flat_mnist(train_size=150)[1], 1, 2, config.seed)
  assert labelled.shape == (2, 2, 20)
  for a in range(2):
    for r in range(2):
      row = labelled[a, r]
      assert len(set(row.tolist())) == row.size, row  # no repeats, none already labelled
      assert 0 <= row.min() and row.max() < 150
      np.testing.assert_array_equal(row[:10], initial[r])  # shared start per repeat
  # Different functions pick different points from the same start.
  assert set(labelled[0, 0, 10:].tolist()) != set(labelled[1, 0, 10:].tolist())
  # Round 0 trains every function's run of repeat r on the same data with the same keys.
  acc = results["arrays"]["accuracy_0"]
  np.testing.assert_allclose(acc[0, :, 0], acc[1, :, 0], atol=1e-6)


def test_initial_sets_are_two_per_class():
  labels = np.repeat(np.arange(10), 7)
  sets = active_learning.initial_sets(labels, 2, 3, seed=0)
  assert sets.shape == (3, 20)
  for row in sets:
    np.testing.assert_array_equal(np.bincount(labels[row], minlength=10), np.full(10, 2))
  assert not np.array_equal(sets[0], sets[1])  # independent repeats


def test_random_acquisition_is_uniform_over_the_available_pool():
  import jax
  import jax.numpy as jnp
  from jaxthesis import bhn

  pool, k, trials = 40, 5, 4000
  available = jnp.arange(pool) % 4 != 0  # 30 available
  probs = jnp.full((3, pool, 10), 0.1)
  pick = jax.jit(jax.vmap(lambda key: bhn.select_top(
      bhn.scores_by_index(jnp.int32(bhn.acquisition_index("random")), probs, key),
      available, k)))
  chosen = np.asarray(pick(jax.random.split(jax.random.PRNGKey(0), trials)))
  assert all(len(set(row)) == k for row in chosen[:100])
  counts = np.bincount(chosen.ravel(), minlength=pool)
  assert counts[~np.asarray(available)].sum() == 0
  expected = trials * k / 30  # each available point: k / 30 per trial
  sd = np.sqrt(trials * (k / 30) * (1 - k / 30))
  assert np.abs(counts[np.asarray(available)] - expected).max() < 4.5 * sd, counts


def test_resume_from_checkpoint_returns_the_same_curves(pair, capsys):
  from jaxthesis import engine
  config, results, checkpoints = pair
  # Every round is in the checkpoint: the rerun restores it and trains nothing.
  resumed = active_learning.run(config, progress=True, checkpoint_dir=checkpoints)
  assert "resuming, 3 of 3 rounds done" in capsys.readouterr().err
  for name in ("accuracy_0", "labelled_0"):
    np.testing.assert_array_equal(resumed["arrays"][name], results["arrays"][name])
  assert resumed["metrics"] == results["metrics"]
  with pytest.raises(engine.CheckpointMismatchError, match="another configuration"):
    active_learning.run(active_learning._config.replace(config, seed=1), progress=False,
                        checkpoint_dir=checkpoints)


def test_table_and_defaults_follow_the_thesis(pair):
  _, results, _ = pair
  text = active_learning.table(results)
  assert "Fig. 7.4" in text and "variation_ratio" in text and "random" in text
  full = active_learning.get_config(False)
  assert (full.initial_per_class, full.acquire_size, full.num_epochs, full.num_repeats,
          full.warm_start) == (2, 10, 50, 3, True)
  assert set(full.acquisitions) == set(active_learning.ACQUISITION_NAMES)


@pytest.mark.parametrize("field, value", [
    ("acquisitions", ("bald", "margin")),
    ("acquisitions", ()),
    ("acquisitions", ("bald", "bald")),
    ("acquire_size", 0),
    ("initial_per_class", 0),
    ("num_acquisitions", 0),
    ("num_repeats", 0),
    ("num_epochs", 0),
    ("warm_start", "yes"),
    ("kl_num_train", -1),
    ("warmup_steps", -1),
    ("methods", ("realnvp",)),
    ("learning_rate", 0.0),
    ("data", "imagenet"),
])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(_config.UsageError, match=f"config.{field}"):
    active_learning.get_config(True, **{field: value})


def test_a_bhn_on_100_labelled_digits_beats_chance_clearly():
  # Before the KL was divided by the pool size and Adam warmed up, a RealNVP BHN on a
  # few dozen digits sat at chance (the KL of the scales against the prior dominated
  # the ELBO with N = the labelled count, and the first full Adam step blew up the
  # coupling scales). 100 labelled digits (10 per class), 50 single-step epochs.
  config = active_learning.get_config(
      True, methods=("realnvp:2",), acquisitions=("random",), initial_per_class=10,
      num_acquisitions=1, acquire_size=10, num_repeats=1, hidden=64, num_epochs=50,
      batch_size=128, hypernet_hidden=32, train_size=600, test_size=300)
  results = active_learning.run(config, progress=False)
  accuracy = results["arrays"]["accuracy_0"][0, 0]  # [rounds]: 100 then 110 labelled
  assert np.all(np.isfinite(results["arrays"]["accuracy_0"]))
  assert accuracy.min() > 0.5, accuracy


def test_a_pool_too_small_for_the_acquisitions_is_named():
  with pytest.raises(_config.UsageError, match="config.num_acquisitions"):
    active_learning.run(active_learning.get_config(True, train_size=100, num_acquisitions=9),
                        progress=False)
  with pytest.raises(_config.UsageError, match="config.initial_per_class"):
    active_learning.run(active_learning.get_config(True, train_size=30, initial_per_class=5),
                        progress=False)
