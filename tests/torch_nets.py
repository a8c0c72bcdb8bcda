"""Small torch networks shared by the torch test modules."""

from __future__ import annotations

import itertools

import torch


def mlp(widths, seed=0, dtype=torch.float64):
    """A tanh MLP with PyTorch's default initialization drawn after ``manual_seed(seed)``."""
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers).to(dtype)
