"""`jaxthesis naf uci` (Table 9.II): a run on MAF-format files, early stopping, the chunked mean.
The loaders themselves are tested in tests/data/test_uci.py."""
import os

import numpy as np

from jaxthesis.experiments.naf import uci as naf_uci


def test_run_on_miniboone_files_stops_early_at_the_best_validation(tmp_path):
  os.makedirs(tmp_path / "miniboone")
  np.save(tmp_path / "miniboone" / "data.npy",
          np.random.default_rng(4).gamma(2.0, size=(400, 3)))
  config = naf_uci.get_config(True, dataset="miniboone", data_dir=str(tmp_path),
                              models=("affine",), num_layers=1, num_steps=30, num_seeds=2,
                              num_evals=5)
  results = naf_uci.run(config, progress=False)
  m, arrays = results["metrics"], results["arrays"]
  assert m["num_dims"] == 3 and results["data"].startswith("miniboone")
  valid, test = arrays["affine/valid_ll"], arrays["affine/test_ll"]
  assert valid.shape == test.shape == (2, len(arrays["affine/eval_steps"]))
  best = np.argmax(valid, axis=1)
  np.testing.assert_allclose(m["affine"]["test_ll_per_seed"], test[[0, 1], best])
  np.testing.assert_allclose(m["affine"]["test_ll"], test[[0, 1], best].mean(), rtol=1e-6)
  np.testing.assert_array_equal(m["affine"]["best_eval_step"], arrays["affine/eval_steps"][best])
  assert "MAF-affine (1)" in naf_uci.table(results) and "Table 9.II" in naf_uci.table(results)


def test_chunked_mean_matches_plain_mean():
  import jax.numpy as jnp
  data = jnp.arange(23.0).reshape(23, 1)
  value = naf_uci.chunked_mean(lambda rows: rows[:, 0] ** 2, data, chunk=5)
  np.testing.assert_allclose(value, float((np.arange(23.0) ** 2).mean()), rtol=1e-6)


def test_bounded_option_selects_the_thesis_form_of_ddsf():
  """`--bounded` (surjective=False) gives the thesis's DDSF, whose image is bounded (|z| <
  14.5): a far base point has no data point; the default's linear tail reaches it."""
  import jax
  import jax.numpy as jnp
  from jaxthesis import flows
  from jaxthesis.experiments.naf import _common as nc
  far = jnp.full((1, 2), 1e3)
  for surjective in (True, False):
    kwargs = nc.with_form(naf_uci.UCI_MODELS["ddsf"], surjective)
    assert kwargs["transformer_kwargs"]["surjective"] is surjective
    flow = flows.autoregressive_flow(2, hidden_sizes=(8, 8), num_layers=1, direction="maf",
                                     **kwargs)
    bijector = flow.distribution(flow.init(jax.random.PRNGKey(0))).bijector
    # MAF: base -> data is the sequential solve; 1e3 lies outside the bounded image.
    assert np.isfinite(np.asarray(bijector.forward(far))).all() == surjective
    assert (np.abs(np.asarray(bijector.inverse(far))).max() > 15.0) == surjective
  assert nc.with_form(naf_uci.UCI_MODELS["affine"], False) == naf_uci.UCI_MODELS["affine"]
  assert naf_uci.get_config(surjective=False).surjective is False
