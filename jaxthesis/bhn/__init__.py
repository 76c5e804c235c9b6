"""Bayesian hypernetworks (thesis chapter 7) as a library.

* Primary nets with weight normalization (Eq. 7.7): `weightnorm_dense`, `weightnorm_conv`,
  `data_dependent_init`, `weightnorm_mlp`, `weightnorm_cnn`; `dense_mlp` when the
  hypernet generates every weight (`PrimaryNet`).
* Hypernets as distrax bijectors over N(0, I) (Eq. 7.6): `make_hypernet`, registry
  `HYPERNETS` ("gaussian", "realnvp", "iaf", "dsf").
* Objective (Eqs. 7.2, 11.25): `negative_elbo`, `kl_annealing`, likelihoods.
* Methods behind one interface: `bhn`, `mle`, `dropout`, `mc_dropout`,
  `bayes_by_backprop` (`Method`, registry `METHODS`); training: `make_task`, `fit`,
  `subset_trainer` (a growing labelled subset, for active learning).
* Uncertainty (Eq. 7.4): `predictive`, `SCORES`, calibration and detection metrics;
  active learning: `ACQUISITIONS`; adversarial examples: `fgsm`.
"""
from jaxthesis.bhn.acquisition import (ACQUISITIONS, acquisition_index, acquisition_scores,
                                       scores_by_index, select_top)
from jaxthesis.bhn.adversarial import fgsm
from jaxthesis.bhn.hypernets import (HYPERNETS, Coupling, Hypernet, dsf_hypernet,
                                     gaussian_hypernet, iaf_hypernet, make_hypernet,
                                     realnvp_hypernet)
from jaxthesis.bhn.methods import (METHODS, Method, bayes_by_backprop, bhn, dropout, mc_dropout,
                                   mle)
from jaxthesis.bhn.objectives import (NOISE_SHARING, Likelihood, categorical_likelihood,
                                      clipped_softmax, gaussian_kl, gaussian_likelihood,
                                      kl_annealing, log_prior, negative_elbo, sample_outputs)
from jaxthesis.bhn.primary import (PrimaryNet, data_dependent_init, dense_mlp, unit_directions,
                                   weightnorm_cnn, weightnorm_conv, weightnorm_dense,
                                   weightnorm_mlp)
from jaxthesis.bhn.train import TrainState, fit, make_task, steps_per_epoch, subset_trainer
from jaxthesis.bhn.uncertainty import (SCORES, auroc, average_precision, bald, brier,
                                       detection_metrics, expected_calibration_error, mean_std,
                                       nll, predictive, predictive_entropy, reliability,
                                       sample_probabilities, score, variation_ratio)

__all__ = [n for n in dir() if not n.startswith("_")]
