"""Memorization in deep networks (thesis chapter 3).

randX / randY / unique-class data (`corruption`), the MLP and small CNN (`models`), the
regularizers of 3.5 (`regularizers`), LASS and the critical sample ratio (`critical_samples`, Alg. 1),
loss-sensitivity through unrolled SGD and the Gini coefficient (`sensitivity`), SGD
training as an engine Task (`train`) and per-example statistics for any engine run
(`example_stats`).
"""
from jaxthesis.memorization import (corruption, critical_samples, example_stats, models,
                                    regularizers, sensitivity, train)
from jaxthesis.memorization.corruption import (CORRUPTIONS, Corrupted, corrupt, downscale,
                                               random_inputs, random_labels, to_unit_range,
                                               unique_class_labels)
from jaxthesis.memorization.example_stats import (ExampleStats, example_stats_init,
                                                  example_stats_update, onset_step,
                                                  with_example_stats)
from jaxthesis.memorization.critical_samples import (LASSResult, critical_sample_ratio,
                                                     fgsm_search, lass)
from jaxthesis.memorization.models import Model, SmallCNN, mlp, mlp_apply, mlp_init, small_cnn
from jaxthesis.memorization.regularizers import (REGULARIZERS, Regularization, Regularizer,
                                                 regularization)
from jaxthesis.memorization.sensitivity import (Sensitivity, gini, loss_sensitivity,
                                                make_sensitivity_task, mean_sensitivity,
                                                sgd_unroll)
from jaxthesis.memorization.train import (AdversarialSearch, ClassifierHParams,
                                          classifier_hparams, make_classifier_task)
