"""Language-model seeds trained together as stacked weights, against each seed alone.

A seed reads the same lines and draws the same dropout masks in a batch as alone
(grokscope.train.lm_schedule, grokscope.train.lm_data), so the two compute the same function;
a stacked product may still sum in another order than a batch of one on some CPUs' kernels, so
they are compared against the noise floor of a one-ulp twin, as the algorithmic batches are
(tests/test_batched.py). A resumed batch repeats the uninterrupted one bit for bit.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
import torch

from grokscope import config as config_mod
from grokscope.config import ConfigError
from grokscope.kinds import build_dataset, kind_of
from grokscope.orchestrate.train import train_run, train_runs
from grokscope.store import rundir
from grokscope.train.core import new_state, run_training
from tests.test_batched import _rel_gap, assert_within_noise

pytestmark = pytest.mark.equality

SMALL = {
    "structural_cpu": [
        "task.n_train=1500", "task.n_dev=0", "task.n_test=80", "task.n_gen=80",
        "model.n_layers=2", "model.d_model=32", "model.n_heads=4", "model.d_head=8",
        "model.d_mlp=64", "optim.batch_size=16", "optim.lr=1e-3", "model.dropout=0.1",
    ],
    "levels_cpu": [
        "task.n_train=2000", "task.n_test=100", "task.n_gen=100", "task.tree_vocab=8",
        "task.tree_rules=2", "model.n_layers=2", "model.d_model=32", "model.d_head=8",
        "model.d_mlp=64", "optim.batch_size=16", "model.dropout=0.1",
    ],
}  # fmt: skip
SCHEDULE = ["train.epochs=40", "train.eval_every=10", "train.checkpoint_every=10"]


def lm_config(preset: str, seed: int, *extra: str) -> config_mod.Config:
    over = SMALL[preset] + SCHEDULE + [f"train.seed={seed}", *extra]
    return config_mod.resolve(config_mod.apply_overrides(config_mod.preset(preset), over))


def _train(cfgs, state=None, on_checkpoint=None):
    """Train ``cfgs`` as one batch in memory: (rows per seed, finished statuses)."""
    ds = build_dataset(cfgs[0].task)
    dev = torch.device("cpu")
    state = state or new_state(cfgs, [ds] * len(cfgs), dev)
    rows: dict[int, list[dict]] = {i: [] for i in range(len(cfgs))}
    finished: dict[int, dict] = {}
    run_training(
        cfgs,
        state,
        kind_of(cfgs[0]).train_data(cfgs, [ds] * len(cfgs), dev),
        kind_of(cfgs[0]).event_rules(),
        on_eval=lambda i, row: rows[i].append(row),
        on_checkpoint=on_checkpoint or (lambda st, slots: None),
        on_finish=lambda i, status: finished.__setitem__(i, status),
    )
    return {i: pd.DataFrame(r) for i, r in rows.items()}, finished


def _twin(cfg) -> pd.DataFrame:
    """``cfg`` trained alone from initial weights moved by one float32 ulp: the noise floor."""
    ds = build_dataset(cfg.task)
    state = new_state([cfg], [ds], torch.device("cpu"))
    with torch.no_grad():
        for p in state.params:
            sign = torch.ones_like(p).view(-1)
            sign[1::2] = -1
            p.copy_(torch.nextafter(p, p + sign.view_as(p) * float("inf")))
    return _train([cfg], state)[0][0]


@pytest.mark.parametrize("preset", ["structural_cpu", "levels_cpu"])
def test_each_language_seed_equals_its_run_alone(tmp_path, preset):
    """Three seeds with dropout trained as one batch: each equals its run alone to the noise
    floor, and is far closer to it than to any other seed."""
    seeds = (0, 1, 2)
    statuses = train_runs(
        [lm_config(preset, s) for s in seeds], [tmp_path / f"b{s}" for s in seeds]
    )
    alone = []
    for s in seeds:
        status = train_run(lm_config(preset, s), tmp_path / f"s{s}")
        assert status["epochs_done"] == statuses[s]["epochs_done"] == 40
        single, batched = (rundir.read_metrics(tmp_path / f"{x}{s}") for x in "sb")
        assert_within_noise(single, batched, _twin(lm_config(preset, s)))
        alone.append(single)
    for s in seeds:
        own = _rel_gap(alone[s], rundir.read_metrics(tmp_path / f"b{s}"))
        other = min(_rel_gap(alone[s], alone[t]) for t in seeds if t != s)
        assert own <= 0.1 * other, (own, other)


def test_a_killed_language_batch_resumes_bit_for_bit(tmp_path):
    """Dropout on: a batch killed after its step-20 checkpoint and resumed as the same batch
    writes exactly the uninterrupted batch's metrics and weights."""
    cfgs = [lm_config("structural_cpu", s) for s in (0, 1)]
    full = [tmp_path / f"full{i}" for i in range(2)]
    copied = {}

    def snapshot(i, row):
        if row["epoch"] == 30 and i == 1 and not copied:
            for j in range(2):
                shutil.copytree(full[j], tmp_path / f"killed{j}")
            copied["yes"] = True

    train_runs(cfgs, full, progress=snapshot)
    killed = [tmp_path / f"killed{j}" for j in range(2)]
    assert all(rundir.read_status(k)["state"] == "running" for k in killed)
    statuses = train_runs(None, killed, resume=True)
    for j in range(2):
        assert statuses[j]["state"] == "done"
        a, b = rundir.read_metrics(full[j]), rundir.read_metrics(killed[j])
        pd.testing.assert_frame_equal(a.drop(columns="wall_s"), b.drop(columns="wall_s"))
        wa, wb = rundir.load_weights(full[j], 40), rundir.load_weights(killed[j], 40)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_language_seed_that_diverges_leaves_the_batch_and_the_others_go_on(tmp_path):
    """Seed 1's weights turn NaN at the step-10 checkpoint: it is finished as diverged, and
    seeds 0 and 2 (now a batch of two, their lines and dropout streams their own) go on as
    alone."""
    cfgs = [lm_config("structural_cpu", s) for s in (0, 1, 2)]

    def poison(st, slots) -> None:
        if st.epoch == 10:
            with torch.no_grad():
                st.params[0][st.runs.index(1)].fill_(float("nan"))

    rows, finished = _train(cfgs, on_checkpoint=poison)
    assert finished[1]["state"] == "diverged" and finished[1]["diverged_epoch"] == 10
    for s in (0, 2):
        assert finished[s]["state"] == "done" and finished[s]["epochs_done"] == 40
        train_run(lm_config("structural_cpu", s), tmp_path / f"s{s}")
        single = rundir.read_metrics(tmp_path / f"s{s}")
        assert_within_noise(single, rows[s], _twin(lm_config("structural_cpu", s)))


def test_language_seeds_of_different_data_do_not_batch():
    cfgs = [lm_config("structural_cpu", 0), lm_config("structural_cpu", 1, "task.data_seed=3")]
    ds = build_dataset(cfgs[0].task)
    with pytest.raises(ConfigError, match="task.data_seed differs"):
        kind_of(cfgs[0]).train_data(cfgs, [ds, ds], torch.device("cpu"))


def test_a_batch_too_large_for_memory_is_refused_before_any_directory(
    monkeypatch, capsys, tmp_path
):
    """With memory for about one seed, a batch of three is one line and exit 2 (the sweep), or
    a ConfigError (the library), and no directory is made."""
    from grokscope.train import memory
    from tests.conftest import run_cli

    one = memory.seed_bytes(
        lm_config("structural_cpu", 0), build_dataset(lm_config("structural_cpu", 0).task)
    )
    monkeypatch.setattr(memory, "available_bytes", lambda device: int(1.5 * one))
    cfgs = [lm_config("structural_cpu", s) for s in (0, 1, 2)]
    with pytest.raises(ConfigError, match="3 seeds trained together need about"):
        train_runs(cfgs, [tmp_path / f"r{s}" for s in (0, 1, 2)])
    assert not any((tmp_path / f"r{s}").exists() for s in (0, 1, 2))
    spec = tmp_path / "big.toml"
    sets = "\n".join(f'"{k}" = {v}' for k, v in (x.split("=") for x in SMALL["structural_cpu"]))
    spec.write_text(
        f'name = "big"\npreset = "structural_cpu"\nseeds = [0, 1, 2]\n[set]\n{sets}\n'
        '[grid]\n"optim.weight_decay" = [0.0]\n'
    )
    code, out, err = run_cli(monkeypatch, capsys, "sweep", str(spec), "--out", str(tmp_path / "sw"))
    assert code == 2
    assert "3 seeds trained together need about" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sw").exists()
    # one seed fits: trained alone it runs
    assert (
        train_run(lm_config("structural_cpu", 0, "train.epochs=2"), tmp_path / "one")["state"]
        == "done"
    )


def test_a_language_seed_that_stops_early_leaves_the_batch(tmp_path):
    """Early stop 5 steps after t_gen (generalization agreement >= 0.38 held 3 evaluations):
    seeds stop at their own times in the batch as alone. A threshold crossing amplifies the
    last bit, so each run's t_gen is checked against its own metrics, never against the other
    computation's; the metrics agree to the noise floor over the steps both ran."""
    from grokscope.events import sustained_epoch

    extra = ("train.epochs=80", "train.eval_every=5", "train.grok_threshold=0.38",
             "train.early_stop_after=5")  # fmt: skip
    seeds = (0, 1, 2)
    statuses = train_runs(
        [lm_config("levels_cpu", s, *extra) for s in seeds], [tmp_path / f"b{s}" for s in seeds]
    )
    for s in seeds:
        alone = train_run(lm_config("levels_cpu", s, *extra), tmp_path / f"s{s}")
        for run, status in ((tmp_path / f"s{s}", alone), (tmp_path / f"b{s}", statuses[s])):
            table = rundir.read_metrics(run)
            t_gen = sustained_epoch(table, "gen_acc", 0.38, 3)
            assert status["t_grok_epoch"] == t_gen
            # the stop comes 5 steps after t_gen, but never before t_gen is confirmed (the
            # third evaluation of its window, 10 steps later)
            done = 80 if t_gen is None else min(max(t_gen + 5, t_gen + 2 * 5), 80)
            assert status["epochs_done"] == done
        assert_within_noise(
            rundir.read_metrics(tmp_path / f"s{s}"),
            rundir.read_metrics(tmp_path / f"b{s}"),
            _twin(lm_config("levels_cpu", s, *extra)),
        )
    assert len({st["epochs_done"] for st in statuses}) > 1  # they did leave at different times
