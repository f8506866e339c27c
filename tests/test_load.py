"""``grokscope.load_run`` / ``load_sweep``: a run directory back in Python, as documented."""

from __future__ import annotations

import pytest
import torch

import grokscope
from grokscope.errors import RunDirError
from grokscope.orchestrate.train import train_run
from grokscope.store import rundir
from grokscope.train.losses import cross_entropy64


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from tests.conftest import tiny_config

    path = tmp_path_factory.mktemp("load") / "r"
    train_run(tiny_config("train.epochs=40"), path)
    return path


def test_load_run_reads_every_file(run_dir):
    run = grokscope.load_run(run_dir)
    assert run.config == rundir.read_config(run_dir)
    assert run.status["state"] == "done" and run.status["epochs_done"] == 40
    assert run.metrics.equals(rundir.read_metrics(run_dir))
    assert run.analysis is None and run.summary is None  # not analysed: None, not an error
    assert run.epochs == rundir.list_epochs(run_dir) and run.epochs[-1] == 40
    assert "done" in repr(run) and "analysed=False" in repr(run)


def test_model_at_a_checkpoint_reproduces_the_logged_loss(run_dir):
    """The loaded model's float64 loss on the training split equals the metrics row of that
    epoch (the same weights, the same examples; float32 forward, so to 1e-5 relative)."""
    run = grokscope.load_run(run_dir)
    for epoch in (run.epochs[2], None):
        model = run.model(epoch)
        assert not model.training and not any(p.requires_grad for p in model.parameters())
        row = run.metrics.set_index("epoch").loc[epoch or run.epochs[-1]]
        with torch.no_grad():
            loss = float(cross_entropy64(model(run.tokens("train")), run.labels("train")))
        assert loss == pytest.approx(row["train_loss"], rel=1e-5)
    with pytest.raises(RunDirError, match="no checkpoint at epoch 3"):
        run.model(3)


def test_cache_and_a_one_neuron_ablation(run_dir):
    run = grokscope.load_run(run_dir)
    model, x = run.model(), run.tokens("test")
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (len(x), x.shape[1], model.d_vocab_out)
    post = cache["blocks.0.mlp.hook_post"]
    neuron = int(post[:, -1].abs().mean(0).argmax())  # the most active neuron at the readout

    def kill(act, name):
        act = act.clone()
        act[..., neuron] = 0
        return act

    ablated = model.run_with_hooks(x, [("blocks.0.mlp.hook_post", kill)])
    # removing one neuron changes the readout logits by exactly its path through W_out W_U
    w = model.blocks[0].mlp.W_out[neuron] @ model.unembed.W_U
    want = logits[:, -1] - post[:, -1, neuron, None] * w
    torch.testing.assert_close(ablated[:, -1], want, rtol=1e-4, atol=1e-4)


def test_load_run_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        grokscope.load_run(tmp_path / "nothing")
    with pytest.raises(RunDirError, match="not a sweep directory"):
        grokscope.load_sweep(tmp_path)


def test_load_sweep(tmp_path):
    from grokscope.kinds.algorithmic.sweep_summary import summarize
    from grokscope.sweep.executor import run_sweep
    from tests.test_sweep import _spec

    spec = _spec(tmp_path, name="l", epochs=20)
    run_sweep(spec, tmp_path / "out", workers=1, threads=1)
    summarize(tmp_path / "out" / "l", figures=False)
    sweep = grokscope.load_sweep(tmp_path / "out" / "l")
    assert len(sweep.runs) == 8 and set(sweep.runs["state"]) == {"done"}
    assert {"task.train_fraction", "optim.weight_decay"} <= set(sweep.runs.columns)
    assert len(sweep.cells) == 4 and len(sweep.run_stats) == 8
    name = sweep.runs["run"].iloc[3]
    one = sweep.run(name)
    assert one.config.task.train_fraction == sweep.runs["task.train_fraction"].iloc[3]
    assert len(sweep.load_runs()) == 8
