"""Batched multi-seed training against training each seed alone (a batch of one).

What holds by construction and what does not (see grokscope.train.core): a batch of K seeds
computes, for every seed, the same function as the seed alone, but stacked products and the
stacked embedding backward may sum in another order than the unstacked ones, depending on the
CPU's kernels (ATEN_CPU_CAPABILITY, BLAS dispatch). So batched and single training are compared
against a noise floor measured in the same test on the same CPU: the same seed trained alone from
initial weights perturbed by one float32 ulp. Their gap is how far rounding alone carries this
config over this many epochs here. A real error (a seed's data, weights or optimizer state mixed
up) moves the numbers by far more than any multiple of that floor.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grokscope.config import ConfigError, resolve
from grokscope.events import event_epoch
from grokscope.kinds import build_dataset
from grokscope.orchestrate.train import train_run, train_runs
from grokscope.store import rundir
from grokscope.train.core import (
    check_batch,
    new_state,
    run_training,
    seed_tensors,
)
from grokscope.train.examples import ExampleData

pytestmark = pytest.mark.equality  # run again under every kernel path (see the README)

SEEDS = [(0, 0), (1, 0), (2, 1)]  # (train.seed, task.data_seed)
# Rounding differences enter at every step, the floor's perturbation only at step 0 (and the
# floor is floored at 1e-7 for runs whose rounding does not grow): a margin of 100 x.
MARGIN = 100.0
FLOOR = 1e-7
LOSS_COLS = ("train_loss", "test_loss", "weight_norm_sq")


def _cfgs(tiny, *extra, seeds=SEEDS):
    return [tiny(*extra, f"train.seed={s}", f"task.data_seed={d}") for s, d in seeds]


def _rel_gap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Largest relative difference of the loss and weight-norm columns over the common epochs."""
    m = a.merge(b, on="epoch", suffixes=("_a", "_b"))
    gaps = [
        np.abs(m[f"{c}_a"] - m[f"{c}_b"]) / np.maximum(np.abs(m[f"{c}_a"]), 1e-12)
        for c in LOSS_COLS
    ]
    return float(max(g.max() for g in gaps))


def _acc_gap(a: pd.DataFrame, b: pd.DataFrame) -> float:
    m = a.merge(b, on="epoch", suffixes=("_a", "_b"))
    return float(max(np.abs(m[f"{c}_a"] - m[f"{c}_b"]).max() for c in ("train_acc", "test_acc")))


def _perturbed_twin(cfg):
    """``cfg`` trained alone from its initial weights moved by one ulp (alternating signs)."""
    cfg = resolve(cfg)
    ds = build_dataset(cfg.task)
    dev = torch.device("cpu")
    state = new_state([cfg], [ds], dev)
    with torch.no_grad():
        for p in state.params:
            sign = torch.ones_like(p).view(-1)
            sign[1::2] = -1
            p.copy_(torch.nextafter(p, p + sign.view_as(p) * float("inf")))
    rows: list[dict] = []
    run_training(
        [cfg],
        state,
        ExampleData.for_batch([cfg], [ds], dev),
        (("train_acc", 1), ("test_acc", 1)),
        on_eval=lambda i, row: rows.append(row),
        on_checkpoint=lambda st, slots: None,
        on_finish=lambda i, status: None,
    )
    return pd.DataFrame(rows)


def _row_gaps(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """Per common epoch: the largest relative difference of the loss and weight-norm columns."""
    m = a.merge(b, on="epoch", suffixes=("_a", "_b")).set_index("epoch")
    gaps = [
        np.abs(m[f"{c}_a"] - m[f"{c}_b"]) / np.maximum(np.abs(m[f"{c}_a"]), 1e-12)
        for c in LOSS_COLS
    ]
    return pd.concat(gaps, axis=1).max(axis=1)


def assert_within_noise(single: pd.DataFrame, batched: pd.DataFrame, twin: pd.DataFrame) -> None:
    """Batched metrics equal the single run's, epoch by epoch, up to ``MARGIN`` x the rounding
    floor measured by the one-ulp twin up to that epoch (its running maximum: rounding grows as
    training amplifies it). Early epochs, where the floor is tiny, catch a systematic error (a
    different learning rate, a lost filter state) long before chaos would hide it."""
    assert list(single.columns) == list(batched.columns)
    m = single.merge(batched, on="epoch", suffixes=("_a", "_b"))
    assert len(m) >= min(len(single), len(batched)) - 1  # the same evaluation epochs
    np.testing.assert_array_equal(m["step_a"], m["step_b"])
    floor = _row_gaps(single, twin).cummax().clip(lower=FLOOR)
    gap = _row_gaps(single, batched)
    limit = MARGIN * floor.reindex(gap.index).ffill().fillna(FLOOR)
    bad = gap[gap > limit]
    assert bad.empty, f"batched vs single beyond {MARGIN:g} x floor at epochs {bad.to_dict()}"
    n_min = 20  # the tiny task's smallest split has more examples than this
    acc_floor = max(_acc_gap(single, twin), 2.0 / n_min)
    assert _acc_gap(single, batched) <= MARGIN * float(floor.max()) + acc_floor


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
    statuses = train_runs(cfgs, [tmp_path / f"b{i}" for i in range(len(cfgs))])
    every = cfgs[0].train.eval_every
    for i, cfg in enumerate(_cfgs(tiny, *extra)):
        alone = train_run(cfg, tmp_path / f"s{i}")
        single, batched = (rundir.read_metrics(tmp_path / f"{x}{i}") for x in "sb")
        assert_within_noise(single, batched, _perturbed_twin(cfg))
        for key in ("state", "epochs_done", "step"):
            assert statuses[i][key] == alone[key], key
        for key in ("t_mem_epoch", "t_grok_epoch"):  # a threshold may be crossed one eval apart
            a, b = statuses[i][key], alone[key]
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= every), key
        assert rundir.read_config(tmp_path / f"b{i}") == rundir.read_config(tmp_path / f"s{i}")
        assert rundir.list_epochs(tmp_path / f"b{i}") == rundir.list_epochs(tmp_path / f"s{i}")
    # and every batched seed is far closer to its own run than to any other seed's: a control
    # that does not depend on the floor (a mix-up of seeds, data or optimizer state fails it)
    runs = [rundir.read_metrics(tmp_path / f"s{i}") for i in range(len(cfgs))]
    for i in range(len(cfgs)):
        own = _rel_gap(runs[i], rundir.read_metrics(tmp_path / f"b{i}"))
        other = min(_rel_gap(runs[i], runs[j]) for j in range(len(cfgs)) if j != i)
        assert own <= 0.1 * other, (own, other)


def test_one_seed_is_trained_by_the_model_own_pass(tiny):
    """A batch of one runs ``model(x)``'s training pass on the unstacked weights: its logits and
    gradients are exactly those of the plain module (the same kernels on the same values)."""
    for extra in ([], ["model.kind=mlp", "model.d_embed=8"], ["model.n_layers=2"]):
        cfg = resolve(tiny(*extra))
        ds = build_dataset(cfg.task)
        state = new_state([cfg], [ds], torch.device("cpu"))
        x = torch.as_tensor(ds.tokens[ds.train_idx][:40])
        y = torch.as_tensor(ds.labels[ds.train_idx][:40])
        model = state.model
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(state.params[state.names.index(name)][0])
        out = model(x)
        from grokscope.train.core import stacked_forward

        logits = stacked_forward(state, x.unsqueeze(0))
        assert torch.equal(out, logits[0].detach())
        torch.nn.functional.cross_entropy(out, y, reduction="sum").backward()
        torch.nn.functional.cross_entropy(logits[0], y, reduction="sum").backward()
        for name, p in model.named_parameters():
            assert torch.equal(p.grad, state.params[state.names.index(name)].grad[0]), name


@pytest.mark.parametrize(
    "state_extra",
    [[], ["optim.grokfast=ema"]],
)
def test_each_seed_stops_early_on_its_own(tmp_path, tiny, state_extra):
    """Seeds leave the batch at their own epochs; the others carry their optimizer moments,
    filter state on (the Grokfast cases fail if the filter state is dropped)."""
    extra = [
        *state_extra,
        "train.epochs=600",
        "train.early_stop_after=10",
        "task.train_fraction=0.8",
        "train.grok_threshold=0.9",
    ]
    seeds = [(1, 0), (3, 1), (4, 2)]  # measured: these reach 90 % test accuracy by epoch 300
    statuses = train_runs(_cfgs(tiny, *extra, seeds=seeds), [tmp_path / f"b{i}" for i in range(3)])
    for i, cfg in enumerate(_cfgs(tiny, *extra, seeds=seeds)):
        alone = train_run(cfg, tmp_path / f"s{i}")
        assert alone["t_grok_epoch"] is not None
        # each stops 10 epochs after its own t_grok, alone and in the batch
        assert alone["epochs_done"] == alone["t_grok_epoch"] + 10
        assert statuses[i]["epochs_done"] == statuses[i]["t_grok_epoch"] + 10
        # t_grok is a threshold crossing: batched and alone agree only to a noise floor, which
        # the crossing can amplify into evaluations apart (on another CPU's kernels it did), so
        # each run's event is checked against its own metrics, never against the other's
        for run, status in ((tmp_path / f"s{i}", alone), (tmp_path / f"b{i}", statuses[i])):
            table = rundir.read_metrics(run)
            assert status["t_grok_epoch"] == event_epoch(table, "test_acc", 0.9)
        assert_within_noise(
            rundir.read_metrics(tmp_path / f"s{i}"),
            rundir.read_metrics(tmp_path / f"b{i}"),
            _perturbed_twin(cfg),
        )
    assert len({s["epochs_done"] for s in statuses}) > 1  # the seeds did stop at different times


@pytest.mark.parametrize("at_epoch", [0, 10])
def test_a_diverging_seed_is_finished_and_the_others_go_on(tmp_path, tiny, at_epoch):
    """Seed 1's weights turn NaN at the start, or mid-run (at the epoch-10 checkpoint, with
    mini-batches, a Grokfast MA history and decay toward the init in the state): it is finished
    as diverged and the other seeds go on exactly as alone."""
    extra = (
        []
        if at_epoch == 0
        else [
            "optim.batch_size=64",
            "optim.grokfast=ma",
            "optim.grokfast_window=5",
            "optim.decay_to=init",
        ]
    )
    cfgs = [resolve(c) for c in _cfgs(tiny, *extra)]
    datasets = [build_dataset(c.task) for c in cfgs]
    dev = torch.device("cpu")
    state = new_state(cfgs, datasets, dev)

    def poison(st) -> None:
        with torch.no_grad():
            st.params[0][st.runs.index(1)].fill_(float("nan"))  # seed 1's embedding

    if at_epoch == 0:
        poison(state)
    rows: dict[int, list[dict]] = {0: [], 1: [], 2: []}
    finished: dict[int, dict] = {}

    def on_checkpoint(st, slots) -> None:
        if st.epoch == at_epoch and at_epoch > 0:
            poison(st)

    outcome = run_training(
        cfgs,
        state,
        ExampleData.for_batch(cfgs, datasets, dev),
        (("train_acc", 1), ("test_acc", 1)),
        on_eval=lambda i, row: rows[i].append(row),
        on_checkpoint=on_checkpoint,
        on_finish=lambda i, status: finished.__setitem__(i, status),
    )
    assert outcome == "done"
    assert finished[1]["state"] == "diverged"
    assert finished[1]["diverged_epoch"] == at_epoch
    assert rows[1][-1]["epoch"] == at_epoch
    for i in (0, 2):
        assert finished[i]["state"] == "done" and finished[i]["epochs_done"] == 60
        train_run(_cfgs(tiny, *extra)[i], tmp_path / f"s{i}")
        assert_within_noise(
            rundir.read_metrics(tmp_path / f"s{i}"),
            pd.DataFrame(rows[i]),
            _perturbed_twin(_cfgs(tiny, *extra)[i]),
        )


def test_checkpoints_have_the_format_of_a_single_run(tiny):
    cfgs = [resolve(c) for c in _cfgs(tiny, "optim.grokfast=ma", "optim.decay_to=init")]
    datasets = [build_dataset(c.task) for c in cfgs]
    dev = torch.device("cpu")
    batched = new_state(cfgs, datasets, dev)
    for slot in range(3):
        w_b, r_b = seed_tensors(batched, slot)
        w_s, r_s = seed_tensors(new_state([cfgs[slot]], [datasets[slot]], dev), 0)
        assert w_b.keys() == w_s.keys()
        assert all(torch.equal(w_b[k], w_s[k]) for k in w_b)  # the same initialisation
        assert r_b.keys() == r_s.keys()


def _assert_identical(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Bit for bit equal metrics, but for the wall time."""
    pd.testing.assert_frame_equal(
        a.drop(columns="wall_s"), b.drop(columns="wall_s"), rtol=0, atol=0, check_exact=True
    )


def test_batched_kill_then_resume_equals_straight_and_resumes_alone(tmp_path, tiny):
    """Resumed as the same batch: bit for bit the straight run (the same kernels on the same
    values, by construction). Resumed alone: within the rounding noise floor."""
    cfgs = _cfgs(tiny, "optim.grokfast=ema")
    full = [tmp_path / f"full{i}" for i in range(3)]
    copied = {}

    def snapshot(i, row):  # a hard kill just after the epoch-20 checkpoint
        if row["epoch"] == 25 and i == 2 and not copied:
            for j in range(3):
                shutil.copytree(full[j], tmp_path / f"killed{j}")
                shutil.copytree(full[j], tmp_path / f"alone{j}")
            copied["yes"] = True

    train_runs(cfgs, full, progress=snapshot)
    killed = [tmp_path / f"killed{i}" for i in range(3)]
    assert all(rundir.read_status(k)["state"] == "running" for k in killed)
    statuses = train_runs(None, killed, resume=True)
    for i in range(3):
        assert statuses[i]["state"] == "done" and statuses[i]["epochs_done"] == 60
        _assert_identical(rundir.read_metrics(full[i]), rundir.read_metrics(killed[i]))
    alone = train_run(None, tmp_path / "alone2", resume=True)
    assert alone["state"] == "done" and alone["epochs_done"] == 60
    assert_within_noise(
        rundir.read_metrics(full[2]),
        rundir.read_metrics(tmp_path / "alone2"),
        _perturbed_twin(cfgs[2]),
    )


def test_only_seeds_may_differ_within_a_batch(tiny):
    check_batch(_cfgs(tiny))
    with pytest.raises(ConfigError, match="optim.lr"):
        check_batch([tiny(), tiny("optim.lr=0.01", "train.seed=1")])
    with pytest.raises(ConfigError, match="task.train_fraction"):
        check_batch([tiny(), tiny("task.train_fraction=0.3")])


def test_divergence_through_the_run_directories(tmp_path, tiny):
    statuses = train_runs(
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
    from tests.conftest import tiny_config

    runs = [tmp_path / "a", tmp_path / "b"]
    cfgs = [tiny_config("train.epochs=20", f"train.seed={s}") for s in (0, 1)]
    first = train_runs(cfgs, runs)
    for run in runs:
        rundir.write_status(run, state="running")
    again = train_runs(None, runs, resume=True)
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
def test_stacked_pass_equals_each_model_alone(tiny, extra):
    """The stacked training pass (no vmap) gives every seed its own logits and gradients. The
    sums run in another order than alone on some CPUs' kernels, so equality is up to float32
    rounding of sums of a few hundred terms (1e-5 of the largest value); a seed mix-up would
    differ by the 0.1 the weights are moved apart by."""
    cfgs = [resolve(tiny(*extra, f"train.seed={s}")) for s in range(3)]
    datasets = [build_dataset(c.task) for c in cfgs]
    state = new_state(cfgs, datasets, torch.device("cpu"))
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
        alone = new_state([cfgs[k]], [datasets[k]], torch.device("cpu")).model
        with torch.no_grad():
            for name, p in alone.named_parameters():
                p.copy_(state.params[state.names.index(name)][k])
        out = alone(x[k])
        _assert_rounding_close(out, logits[k].detach())
        torch.nn.functional.cross_entropy(out, y[k], reduction="sum").backward()
        for name, p in alone.named_parameters():
            _assert_rounding_close(p.grad, state.params[state.names.index(name)].grad[k], name)


def _assert_rounding_close(a: torch.Tensor, b: torch.Tensor, what: str = "logits") -> None:
    scale = float(a.detach().abs().max())
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * scale, msg=what)


def test_models_without_a_stacked_pass_say_so(tiny):
    cfg = resolve(tiny("model.n_layers=2"))
    state = new_state([cfg], [build_dataset(cfg.task)], torch.device("cpu"))
    params = dict(zip(state.names, state.params, strict=True))
    assert state.model.stacked_logits(params, torch.zeros(1, 2, 3, dtype=torch.long)) is None
