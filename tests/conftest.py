"""Shared fixtures: tiny configs that train in a second or two on one CPU thread."""

import sys

import pytest
import torch

from grokscope.config import Config, apply_overrides

torch.set_num_threads(1)

TINY = [
    "task.p=23",
    "task.train_fraction=0.5",
    "model.d_model=32",
    "model.n_heads=4",
    "model.d_head=8",
    "model.d_mlp=64",
    "optim.lr=3e-3",
    "train.epochs=60",
    "train.eval_every=5",
    "train.checkpoint_every=20",
]


def tiny_config(*overrides: str) -> Config:
    """A small modular-addition transformer config (p = 23)."""
    cfg = apply_overrides(Config(preset="tiny"), TINY + list(overrides))
    return cfg


@pytest.fixture
def tiny():
    return tiny_config


def run_cli(monkeypatch, capsys, *args):
    """Run the ``grokscope`` command in-process: (exit code, stdout, stderr)."""
    from grokscope import cli

    monkeypatch.setattr(sys, "argv", ["grokscope", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
