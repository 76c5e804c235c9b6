"""`rex cmnist`'s post-anneal learning-rate option: validated, parsed, and reaching the task."""
import types

import numpy as np
import pytest

from jaxthesis import cli
from jaxthesis.experiments._config import UsageError
from jaxthesis.experiments.rex import cmnist


def test_default_is_the_thesis_protocol():
  assert cmnist.get_config().post_anneal_lr_scale == 1.0
  assert cmnist.get_config(quick=True).post_anneal_lr_scale == 1.0
  assert cmnist.get_config(post_anneal_lr_scale=0.1).post_anneal_lr_scale == 0.1


@pytest.mark.parametrize("value", [0.0, -0.5, float("inf"), "0.1", True])
def test_bad_scale_is_rejected_naming_the_field(value):
  with pytest.raises(UsageError, match="post_anneal_lr_scale"):
    cmnist.Config(post_anneal_lr_scale=value)


@pytest.mark.parametrize("text,needle", [("-1", "--post-anneal-lr-scale"),
                                         ("half", "--post-anneal-lr-scale"),
                                         ("0", "post-anneal-lr-scale")])
def test_bad_cli_value_is_one_line(text, needle, capsys, tmp_path):
  try:
    code = cli.main(["rex", "cmnist", "--post-anneal-lr-scale", text, "--out", str(tmp_path)])
  except SystemExit as exit_info:
    code = exit_info.code
  assert code != 0
  err = capsys.readouterr().err.strip()
  assert needle in err and "Traceback" not in err and len(err.splitlines()) == 1


class _Built(Exception):
  pass


def test_the_option_reaches_the_training_task(monkeypatch):
  # The task is built and inspected, then the run stops before anything is compiled.
  from jaxthesis.rex import train
  seen = {}
  real = train.make_domain_task

  def spy(*args, **kwargs):
    task = real(*args, **kwargs)
    seen.update(kwargs, task=task)
    raise _Built

  monkeypatch.setattr(train, "make_domain_task", spy)
  config = cmnist.get_config(quick=True, methods=("mmrex",), post_anneal_lr_scale=0.25)
  two_domains = types.SimpleNamespace(train_digits=np.zeros((2, 10)))
  with pytest.raises(_Built):
    cmnist.train_method("mmrex", config, two_domains, "population", progress=False)
  assert seen["post_anneal_lr_scale"] == 0.25 and seen["task"] is not None
