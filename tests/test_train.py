"""Training: warmup, float64 loss, determinism, resume == uninterrupted, divergence, schedule."""

import math

import pandas as pd
import pytest
import torch

from grokscope.dynamics.phases import event_epoch
from grokscope.orchestrate.train import train_run
from grokscope.store import rundir
from grokscope.train.core import checkpoint_epochs, lr_at
from grokscope.train.losses import cross_entropy64


def test_warmup_is_linear_from_zero():
    assert lr_at(0, 1e-3, 10) == 0.0
    assert lr_at(5, 1e-3, 10) == pytest.approx(5e-4)
    assert lr_at(10, 1e-3, 10) == lr_at(500, 1e-3, 10) == 1e-3
    assert lr_at(0, 1e-3, 0) == 1e-3


def test_loss_is_float64_and_matches_definition():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 10.0]])
    y = torch.tensor([2, 0])
    loss = cross_entropy64(logits, y)
    assert loss.dtype == torch.float64
    want = (-(3 - math.log(math.e + math.e**2 + math.e**3)) + math.log(2 + math.e**10)) / 2
    assert float(loss) == pytest.approx(want, rel=1e-12)


def test_checkpoint_schedule_dense_then_regular():
    assert checkpoint_epochs(1000, 100) == [
        0,
        1,
        2,
        5,
        10,
        20,
        50,
        100,
        200,
        300,
        400,
        500,
        600,
        700,
        800,
        900,
        1000,
    ]
    assert checkpoint_epochs(25, 10) == [0, 1, 2, 5, 10, 20, 25]


def _metrics(run):
    return rundir.read_metrics(run).drop(columns=["wall_s"])


def test_run_directory_contents(tmp_path, tiny):
    cfg = tiny()
    status = train_run(cfg, tmp_path / "r")
    run = tmp_path / "r"
    assert status["state"] == "done" and status["epochs_done"] == 60
    df = rundir.read_metrics(run)
    assert list(df["epoch"]) == sorted(set(range(0, 61, 5)) | {1, 2})
    for col in [
        "epoch",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "weight_norm_sq",
        "lr",
        "wall_s",
    ]:
        assert col in df.columns
    assert rundir.list_epochs(run) == [0, 1, 2, 5, 10, 20, 40, 60]
    assert rundir.read_config(run) == cfg  # every field written out and read back
    # the loss went down: training does something
    assert df["train_loss"].iloc[-1] < 0.8 * df["train_loss"].iloc[0]
    assert not list((run).rglob("*.tmp"))
    assert status["t_mem_epoch"] == event_epoch(df, "train_acc", 0.99)


@pytest.mark.equality
def test_same_seed_same_numbers_other_seed_differs(tmp_path, tiny):
    train_run(tiny("train.epochs=20"), tmp_path / "a")
    train_run(tiny("train.epochs=20"), tmp_path / "b")
    train_run(tiny("train.epochs=20", "train.seed=1"), tmp_path / "c")
    pd.testing.assert_frame_equal(_metrics(tmp_path / "a"), _metrics(tmp_path / "b"))
    assert not _metrics(tmp_path / "a").equals(_metrics(tmp_path / "c"))


@pytest.mark.equality
@pytest.mark.parametrize("extra", [[], ["optim.batch_size=64"], ["optim.grokfast=ema"]])
def test_ctrl_c_then_resume_equals_uninterrupted(tmp_path, tiny, extra):
    """SIGINT mid-run: the run stops at an epoch boundary, saves, and --resume completes it."""
    import os
    import signal

    train_run(tiny(*extra), tmp_path / "full")

    def interrupt(row):
        if row["epoch"] == 25:
            os.kill(os.getpid(), signal.SIGINT)

    status = train_run(tiny(*extra), tmp_path / "cut", progress=interrupt)
    assert status["state"] == "interrupted" and 25 <= status["epochs_done"] < 60
    status = train_run(None, tmp_path / "cut", resume=True)
    assert status["state"] == "done" and status["epochs_done"] == 60
    pd.testing.assert_frame_equal(_metrics(tmp_path / "full"), _metrics(tmp_path / "cut"))


@pytest.mark.equality
def test_resume_after_kill_equals_uninterrupted(tmp_path, tiny):
    """Simulate a hard kill: copy the run directory as it was at the epoch-40 checkpoint."""
    import shutil

    cfg = tiny()
    seen = {}

    def snapshot(row):
        if row["epoch"] == 45 and "copied" not in seen:  # after the epoch-40 checkpoint
            shutil.copytree(tmp_path / "full", tmp_path / "killed")
            seen["copied"] = True

    train_run(cfg, tmp_path / "full", progress=snapshot)
    killed = tmp_path / "killed"
    assert rundir.read_status(killed)["state"] == "running"
    status = train_run(None, killed, resume=True)
    assert status["state"] == "done"
    pd.testing.assert_frame_equal(_metrics(tmp_path / "full"), _metrics(killed))
    a = rundir.load_weights(tmp_path / "full", 60)
    b = rundir.load_weights(killed, 60)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_divergence_is_recorded(tmp_path, tiny):
    status = train_run(tiny("optim.lr=1e30", "optim.warmup_steps=0"), tmp_path / "d")
    assert status["state"] == "diverged"
    assert isinstance(status["diverged_epoch"], int) and status["diverged_epoch"] < 60
    assert rundir.read_metrics(tmp_path / "d")["epoch"].max() <= status["diverged_epoch"]


@pytest.mark.parametrize("after", [0, 10])
def test_early_stop_after_grokking(tmp_path, tiny, after):
    """Training stops exactly ``after`` epochs after t_grok (0: at t_grok itself), and a resume
    from that last checkpoint trains nothing more."""
    status = train_run(
        tiny(
            "train.epochs=3000",
            f"train.early_stop_after={after}",
            "task.train_fraction=0.8",
            "train.grok_threshold=0.2",
        ),
        tmp_path / "e",
    )
    assert status["state"] == "done"
    assert status["t_grok_epoch"] is not None
    assert status["epochs_done"] == status["t_grok_epoch"] + after
    assert rundir.read_metrics(tmp_path / "e")["epoch"].max() == status["epochs_done"]
    rundir.write_status(tmp_path / "e", state="running")  # as if killed before "done"
    assert train_run(None, tmp_path / "e", resume=True)["epochs_done"] == status["epochs_done"]


@pytest.mark.equality
def test_resume_from_the_initial_checkpoint_has_no_duplicate_rows(tmp_path, tiny):
    """Killed right after the epoch-0 checkpoint: the resumed table equals the uninterrupted one."""
    import shutil

    cfg = tiny()
    seen = {}

    def snapshot(row):
        if row["epoch"] == 1 and not seen:
            shutil.copytree(tmp_path / "full", tmp_path / "killed")
            seen["copied"] = True

    train_run(cfg, tmp_path / "full", progress=snapshot)
    killed = tmp_path / "killed"
    for f in (killed / "checkpoints").glob("*0001.safetensors"):
        f.unlink()
    assert rundir.list_epochs(killed, rundir.RESUME_RE) == [0]
    train_run(None, killed, resume=True)
    pd.testing.assert_frame_equal(_metrics(tmp_path / "full"), _metrics(killed))


def test_determinism_switch_sets_torch_flags():
    from grokscope.train.core import set_determinism

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        set_determinism(True, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        set_determinism(False, torch.device("cpu"))
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.parametrize("shape, scale", [((64, 98), 5.0), ((3, 40, 23), 5.0), ((64, 98), 60.0)])
def test_float64_cross_entropy_matches_torch(shape, scale):
    """Our float64 cross-entropy equals torch's on float64 logits: per-example losses and
    gradients, also for confident right answers (scale 60: losses from 1e-13 down to 0)."""
    import torch.nn.functional as F

    from grokscope.train.losses import cross_entropy64_each

    gen = torch.Generator().manual_seed(0)
    z = (torch.randn(*shape, generator=gen) * scale).requires_grad_()
    y = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    if scale == 60.0:
        y = z.detach().argmax(dim=-1)  # confident and right: losses down to exp(-margin)
    ours = cross_entropy64_each(z, y)
    ours.mean(dim=-1).sum().backward()
    ours_grad, z.grad = z.grad.clone(), None
    ref = F.cross_entropy(z.double().reshape(-1, shape[-1]), y.reshape(-1), reduction="none")
    ref = ref.view(y.shape)
    ref.mean(dim=-1).sum().backward()
    assert ours.dtype == torch.float64 and ours_grad.dtype == torch.float32
    # both round log(sum exp) in float64: equal to a few ulp of the log-normaliser
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-12, atol=5e-14)
    torch.testing.assert_close(ours_grad, z.grad, rtol=1e-6, atol=1e-12)


def test_one_sustained_crossing_rule_censors_the_end_of_a_table():
    from grokscope.events import first_sustained, sustained_epoch

    assert first_sustained([0, 1, 1, 0, 1, 1, 1], 3) == 4
    assert first_sustained([0, 1, 1, 0, 1, 1, 1], 1) == 1  # sustain 1: the first crossing
    assert first_sustained([0, 0, 0, 0, 1, 1], 3) is None  # two at the end: not held yet
    assert first_sustained([], 2) is None
    assert first_sustained([0, 0, 0], 1) is None  # no effect: never
    table = pd.DataFrame({"epoch": [0, 10, 20, 30], "acc": [0.2, 0.99, float("nan"), 0.995]})
    assert sustained_epoch(table, "acc", 0.99, 1) == 10
    assert sustained_epoch(table, "acc", 0.99, 2) is None  # NaN breaks the run
    with pytest.raises(ValueError, match="sustain"):
        first_sustained([1], 0)


@pytest.mark.parametrize(
    ("test_acc", "expected"),
    [
        ([0.1, 0.1, 1.0, 0.1, 1.0, 1.0, 1.0, 1.0, 0.1], 4),  # a spike at 2, held from 4
        ([0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 1.0, 1.0], None),  # crosses too late: censored
        ([0.1] * 9, None),  # no effect
    ],
)
def test_the_trainer_dates_an_event_by_the_rule_the_tables_are_read_with(tiny, test_acc, expected):
    """The core tracks a sustained event as :func:`grokscope.events.first_sustained` reads it
    from the metrics afterwards (data scripted through the CoreData protocol)."""
    import torch

    from grokscope.config import resolve
    from grokscope.events import sustained_epoch
    from grokscope.kinds import build_dataset
    from grokscope.train.core import new_state, run_training

    cfg = resolve(tiny("train.epochs=8", "train.eval_every=1", "train.checkpoint_every=100"))
    state = new_state([cfg], [build_dataset(cfg.task)], torch.device("cpu"))

    class Scripted:
        steps_per_epoch = 1

        def losses(self, cfgs, st, index):
            return sum((p * 0).sum() for p in st.params).reshape(1)

        def eval_rows(self, cfgs, st, lr):
            e = st.epoch
            return [{"epoch": e, "step": st.step, "train_acc": 1.0, "test_acc": test_acc[e]}]

        def select(self, slots):
            return self

    rows, final = [], {}
    run_training(
        [cfg], state, Scripted(), (("train_acc", 1), ("test_acc", 3)),
        lambda i, row: rows.append(row), lambda st, slots: None,
        lambda i, status: final.update(status),
    )  # fmt: skip
    assert final["t_grok_epoch"] == expected
    assert sustained_epoch(pd.DataFrame(rows), "test_acc", 0.99, 3) == expected
    assert final["t_mem_epoch"] == 0
