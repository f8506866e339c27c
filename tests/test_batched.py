"""Batched multi-seed training equals training each seed alone with train_run."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grokscope.config import ConfigError, resolve
from grokscope.store import rundir
from grokscope.store.batched_runner import train_batched
from grokscope.store.runner import train_run
from grokscope.tasks import build_dataset
from grokscope.train.batched import (
    BatchData,
    check_batch,
    new_batched_state,
    run_batched_training,
    seed_tensors,
)
from grokscope.train.loop import new_state, state_tensors

SEEDS = [(0, 0), (1, 0), (2, 1)]  # (train.seed, task.data_seed)


def _cfgs(tiny, *extra, seeds=SEEDS):
    return [tiny(*extra, f"train.seed={s}", f"task.data_seed={d}") for s, d in seeds]


def _assert_same_metrics(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert list(a["epoch"]) == list(b["epoch"]) and list(a["step"]) == list(b["step"])
    for col in ("train_loss", "test_loss", "weight_norm_sq", "softmax_collapse", "lr"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-4, atol=1e-12, err_msg=col)
    for col in ("train_acc", "test_acc"):
        np.testing.assert_array_equal(a[col], b[col], err_msg=col)


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["optim.batch_size=64", "optim.grokfast=ma", "optim.grokfast_window=5"],
        [
            "optim.grokfast=ema",
            "optim.orthograd=true",
            "optim.decay_to=init",
            "optim.weight_norm=12",
            "optim.loss=stablemax",
        ],
        ["model.kind=mlp", "model.d_embed=0", "model.act=quad", "model.bias=false"],
        ["model.kind=mlp", "model.d_embed=16", "model.n_layers=2", "optim.batch_size=50"],
        # no stacked pass for these: the forward is mapped over the seeds with torch.vmap
        ["model.n_layers=2", "model.layernorm=true", "train.epochs=30"],
    ],
)
def test_each_seed_equals_its_run_alone(tmp_path, tiny, extra):
    cfgs = _cfgs(tiny, *extra)
    statuses = train_batched(cfgs, [tmp_path / f"b{i}" for i in range(len(cfgs))])
    for i, cfg in enumerate(_cfgs(tiny, *extra)):
        alone = train_run(cfg, tmp_path / f"s{i}")
        _assert_same_metrics(
            rundir.read_metrics(tmp_path / f"s{i}"), rundir.read_metrics(tmp_path / f"b{i}")
        )
        for key in ("state", "epochs_done", "step", "t_mem_epoch", "t_grok_epoch"):
            assert statuses[i][key] == alone[key], key
        assert rundir.read_config(tmp_path / f"b{i}") == rundir.read_config(tmp_path / f"s{i}")
        assert rundir.list_epochs(tmp_path / f"b{i}") == rundir.list_epochs(tmp_path / f"s{i}")
        last = rundir.list_epochs(tmp_path / f"s{i}")[-1]
        wa, wb = (
            rundir.load_weights(tmp_path / f"s{i}", last),
            rundir.load_weights(tmp_path / f"b{i}", last),
        )
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-6)


def test_each_seed_stops_early_on_its_own(tmp_path, tiny):
    extra = [
        "train.epochs=600",
        "train.early_stop_after=10",
        "task.train_fraction=0.8",
        "train.grok_threshold=0.9",
    ]
    seeds = [(1, 0), (3, 1), (4, 2)]  # measured: these reach 90 % test accuracy by epoch 300
    statuses = train_batched(
        _cfgs(tiny, *extra, seeds=seeds), [tmp_path / f"b{i}" for i in range(3)]
    )
    for i, cfg in enumerate(_cfgs(tiny, *extra, seeds=seeds)):
        alone = train_run(cfg, tmp_path / f"s{i}")
        assert alone["t_grok_epoch"] is not None
        assert statuses[i]["epochs_done"] == alone["epochs_done"] == alone["t_grok_epoch"] + 10
        _assert_same_metrics(
            rundir.read_metrics(tmp_path / f"s{i}"), rundir.read_metrics(tmp_path / f"b{i}")
        )
    assert len({s["epochs_done"] for s in statuses}) > 1  # the seeds did stop at different times


def test_a_diverging_seed_is_finished_and_the_others_go_on(tmp_path, tiny):
    cfgs = [resolve(c) for c in _cfgs(tiny)]
    datasets = [build_dataset(c.task) for c in cfgs]
    dev = torch.device("cpu")
    state = new_batched_state(cfgs, datasets, dev)
    with torch.no_grad():
        state.params[0][1].fill_(float("nan"))  # seed 1's embedding: its loss is NaN at once
    rows: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    finished: dict[int, dict] = {}
    outcome = run_batched_training(
        cfgs,
        state,
        BatchData.from_datasets(datasets, dev),
        on_eval=lambda i, row: rows[i].append(row),
        on_checkpoint=lambda st, slots: None,
        on_finish=lambda i, status: finished.__setitem__(i, status),
    )
    assert outcome == "done"
    assert finished[1]["state"] == "diverged"
    assert finished[1]["diverged_epoch"] == 0 and finished[1]["step"] == 0
    assert [r["epoch"] for r in rows[1]] == [0]
    for i in (0, 2):
        assert finished[i]["state"] == "done" and finished[i]["epochs_done"] == 60
        train_run(_cfgs(tiny)[i], tmp_path / f"s{i}")
        _assert_same_metrics(rundir.read_metrics(tmp_path / f"s{i}"), pd.DataFrame(rows[i]))


def test_checkpoints_have_the_format_of_a_single_run(tiny):
    cfgs = [resolve(c) for c in _cfgs(tiny, "optim.grokfast=ma", "optim.decay_to=init")]
    datasets = [build_dataset(c.task) for c in cfgs]
    dev = torch.device("cpu")
    batched = new_batched_state(cfgs, datasets, dev)
    for slot in range(3):
        w_b, r_b = seed_tensors(batched, slot)
        w_s, r_s = state_tensors(new_state(cfgs[slot], datasets[slot], dev))
        assert w_b.keys() == w_s.keys()
        assert all(torch.equal(w_b[k], w_s[k]) for k in w_b)  # the same initialisation
        assert r_b.keys() == r_s.keys()


def test_batched_kill_then_resume_equals_straight_and_resumes_alone(tmp_path, tiny):
    cfgs = _cfgs(tiny, "optim.grokfast=ema")
    full = [tmp_path / f"full{i}" for i in range(3)]
    copied = {}

    def snapshot(i, row):  # a hard kill just after the epoch-20 checkpoint
        if row["epoch"] == 25 and i == 2 and not copied:
            for j in range(3):
                shutil.copytree(full[j], tmp_path / f"killed{j}")
            copied["yes"] = True

    train_batched(cfgs, full, progress=snapshot)
    killed = [tmp_path / f"killed{i}" for i in range(3)]
    assert all(rundir.read_status(k)["state"] == "running" for k in killed)
    # two seeds resume together as a batch, the third alone with the ordinary trainer
    statuses = train_batched(None, killed[:2], resume=True)
    statuses.append(train_run(None, killed[2], resume=True))
    for i in range(3):
        assert statuses[i]["state"] == "done" and statuses[i]["epochs_done"] == 60
        _assert_same_metrics(rundir.read_metrics(full[i]), rundir.read_metrics(killed[i]))


def test_only_seeds_may_differ_within_a_batch(tiny):
    check_batch(_cfgs(tiny))
    with pytest.raises(ConfigError, match="optim.lr"):
        check_batch([tiny(), tiny("optim.lr=0.01", "train.seed=1")])
    with pytest.raises(ConfigError, match="task.train_fraction"):
        check_batch([tiny(), tiny("task.train_fraction=0.3")])


def test_divergence_through_the_run_directories(tmp_path, tiny):
    statuses = train_batched(
        _cfgs(tiny, "optim.lr=1e30", "optim.warmup_steps=0"),
        [tmp_path / f"d{i}" for i in range(3)],
    )
    for i, status in enumerate(statuses):
        assert status["state"] == "diverged"
        alone = train_run(
            _cfgs(tiny, "optim.lr=1e30", "optim.warmup_steps=0")[i], tmp_path / f"s{i}"
        )
        assert status["diverged_epoch"] == alone["diverged_epoch"]
        assert rundir.read_metrics(tmp_path / f"d{i}")["epoch"].max() <= status["diverged_epoch"]
        assert status["t_grok_epoch"] is None


def test_resume_at_the_last_checkpoint_marks_done(tmp_path):
    """A batch killed after its final checkpoint but before status said done resumes to done."""
    from grokscope.store import rundir
    from grokscope.store.batched_runner import train_batched
    from tests.conftest import tiny_config

    runs = [tmp_path / "a", tmp_path / "b"]
    cfgs = [tiny_config("train.epochs=20", f"train.seed={s}") for s in (0, 1)]
    first = train_batched(cfgs, runs)
    for run in runs:
        rundir.write_status(run, state="running")
    again = train_batched(None, runs, resume=True)
    assert [s["state"] for s in again] == ["done", "done"]
    assert [s["epochs_done"] for s in again] == [20, 20]
    assert [s["t_mem_epoch"] for s in again] == [s["t_mem_epoch"] for s in first]


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["model.act=gelu", "model.n_heads=2", "model.d_head=16"],
        ["model.kind=mlp", "model.d_embed=8"],
        ["model.kind=mlp", "model.d_embed=0", "model.act=quad", "model.bias=false"],
        ["model.kind=mlp", "model.n_layers=3", "model.d_mlp=16"],
    ],
)
def test_stacked_pass_equals_each_model_alone_bit_for_bit(tiny, extra):
    """The stacked training pass (no vmap) gives every seed exactly its own logits and
    gradients: the same kernels on the same values, so equality is exact, not approximate."""
    cfgs = [resolve(tiny(*extra, f"train.seed={s}")) for s in range(3)]
    datasets = [build_dataset(c.task) for c in cfgs]
    state = new_batched_state(cfgs, datasets, torch.device("cpu"))
    model = state.model
    x = torch.stack([torch.as_tensor(ds.tokens[ds.train_idx][:40]) for ds in datasets])
    y = torch.stack([torch.as_tensor(ds.labels[ds.train_idx][:40]) for ds in datasets])
    # bias the stacked weights away from the init so a seed mix-up would show
    with torch.no_grad():
        for p in state.params:
            p.add_(torch.randn_like(p) * 0.1)
    logits = model.stacked_logits(dict(zip(state.names, state.params, strict=True)), x)
    assert logits is not None and logits.shape == (3, 40, model.d_vocab_out)
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").backward()
    for k in range(3):
        alone = new_state(cfgs[k], datasets[k], torch.device("cpu")).model
        with torch.no_grad():
            for name, p in alone.named_parameters():
                p.copy_(state.params[state.names.index(name)][k])
        out = alone(x[k])
        assert torch.equal(out, logits[k].detach())
        torch.nn.functional.cross_entropy(out, y[k], reduction="sum").backward()
        for name, p in alone.named_parameters():
            assert torch.equal(p.grad, state.params[state.names.index(name)].grad[k]), name


def test_models_without_a_stacked_pass_say_so(tiny):
    cfg = resolve(tiny("model.n_layers=2"))
    state = new_batched_state([cfg], [build_dataset(cfg.task)], torch.device("cpu"))
    params = dict(zip(state.names, state.params, strict=True))
    assert state.model.stacked_logits(params, torch.zeros(1, 2, 3, dtype=torch.long)) is None
