"""A PyTorch eager implementation of V-REx on Colored MNIST, the speed baseline.

Written for `rex_cmnist_speed.py`: the same algorithm as `jaxthesis.rex.train` with the
`vrex` objective (mean risk + w(t)·Var(risks) + l2‖θ‖², divided by w(t) once w(t) > 1;
population noise redrawn every step), one restart after another as the IRM/REx reference
scripts run them, in float32 on the CPU or, with `device="cuda"`, on the GPU.
"""
from __future__ import annotations

import numpy as np
import torch


def _mlp(input_dim: int, hidden: int, generator: torch.Generator) -> torch.nn.Sequential:
  layers = [torch.nn.Linear(input_dim, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)]
  net = torch.nn.Sequential(*layers)
  for layer in net:
    if isinstance(layer, torch.nn.Linear):
      torch.nn.init.xavier_uniform_(layer.weight, generator=generator)
      torch.nn.init.zeros_(layer.bias)
  return net


def _color(pixels, digits, color_flip, label_noise, generator):
  n = digits.shape[0]
  labels = (digits < 5).float()
  rand = lambda: torch.rand(n, generator=generator, device=digits.device)
  labels = (labels - (rand() < label_noise).float()).abs()
  colors = (labels - (rand() < color_flip).float()).abs()
  x = torch.cat([pixels * (colors == 0).float()[:, None], pixels * (colors == 1).float()[:, None]],
                dim=1)
  return x, labels


def train_vrex(train_pixels: np.ndarray, train_digits: np.ndarray, color_flips, *,
               restarts: int, steps: int, hidden: int, lr: float, l2: float,
               penalty_weight: float, anneal: int, label_noise: float = 0.25, seed: int = 0,
               device: str = "cpu"):
  """Trains `restarts` models one after another; returns final train accuracies."""
  torch.manual_seed(seed)
  pixels = [torch.from_numpy(np.array(p)).to(device) for p in train_pixels]
  digits = [torch.from_numpy(np.array(d)).to(device) for d in train_digits]
  accs = []
  for restart in range(restarts):
    init_gen = torch.Generator().manual_seed(seed * 1000 + restart)
    gen = torch.Generator(device=device).manual_seed(seed * 1000 + restart)
    net = _mlp(pixels[0].shape[1] * 2, hidden, init_gen).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for step in range(steps):
      risks, acc = [], []
      for p, d, e in zip(pixels, digits, color_flips):
        x, y = _color(p, d, e, label_noise, gen)
        logits = net(x)[:, 0]
        risks.append(torch.nn.functional.binary_cross_entropy_with_logits(logits, y))
        acc.append(((logits > 0).float() == y).float().mean())
      risks = torch.stack(risks)
      weight = penalty_weight if step >= anneal else 1.0
      loss = risks.mean() + l2 * sum((w ** 2).sum() for w in net.parameters())
      loss = loss + weight * risks.var(unbiased=False)
      if weight > 1.0:
        loss = loss / weight
      opt.zero_grad()
      loss.backward()
      opt.step()
    accs.append(float(torch.stack(acc).mean()))
  return accs
