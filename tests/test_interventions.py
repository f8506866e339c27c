"""Interventions against hand computations: Grokfast EMA / MA (Lee et al. 2024), perp-Grad and
StableMax (Prieto et al. 2025), the weight-norm sphere (Liu et al. 2023, Omnigrok), decay toward the
initial weights, softmax collapse; and resume == uninterrupted with the filters on."""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from grokscope.config import OptimConfig
from grokscope.kinds import build_dataset
from grokscope.orchestrate.train import train_run
from grokscope.store import rundir
from grokscope.train.core import new_state, train_step
from grokscope.train.examples import ExampleData
from grokscope.train.interventions import (
    GradFilter,
    decay_toward,
    orthogonalize_gradients,
    project_to_norm,
    total_norm,
)
from grokscope.train.losses import (
    cross_entropy64_each,
    softmax_collapsed,
    stablemax_collapsed,
    stablemax_cross_entropy,
    stablemax_s,
)

GRADS = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), torch.tensor([2.0, 2.0])]


def _filtered(cfg: OptimConfig, grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """Feed ``grads`` one by one through a GradFilter on a single 2-vector parameter."""
    p = torch.nn.Parameter(torch.zeros(2))
    filt = GradFilter(cfg, ["w"])
    out = []
    for g in grads:
        p.grad = g.clone()
        filt.apply([p])
        out.append(p.grad.clone())
    return out


def test_grokfast_ema_hand_computed():
    # alpha 0.5, lambda 2: mu_1 = g_1 (the filter starts from the first gradient), then
    # mu_t = 0.5 mu_{t-1} + 0.5 g_t and the step uses g_t + 2 mu_t.
    cfg = OptimConfig(grokfast="ema", grokfast_alpha=0.5, grokfast_lambda=2.0)
    out = _filtered(cfg, GRADS)
    # mu: [1, 0] -> [0.5, 0.5] -> [1.25, 1.25]
    want = [[3.0, 0.0], [1.0, 2.0], [4.5, 4.5]]
    for got, w in zip(out, want, strict=True):
        torch.testing.assert_close(got, torch.tensor(w), rtol=0, atol=1e-7)


def test_grokfast_ma_hand_computed():
    # window 2, lambda 5: untouched until two gradients are seen, then g_t + 5 * mean(last 2).
    cfg = OptimConfig(grokfast="ma", grokfast_window=2, grokfast_lambda=5.0)
    out = _filtered(cfg, GRADS)
    want = [[1.0, 0.0], [0.0 + 2.5, 1.0 + 2.5], [2.0 + 5.0, 2.0 + 7.5]]
    for got, w in zip(out, want, strict=True):
        torch.testing.assert_close(got, torch.tensor(w), rtol=0, atol=1e-7)


def test_grokfast_none_is_identity_and_state_round_trips():
    assert all(
        torch.equal(a, b) for a, b in zip(_filtered(OptimConfig(), GRADS), GRADS, strict=True)
    )
    cfg = OptimConfig(grokfast="ma", grokfast_window=2, grokfast_lambda=5.0)
    p = torch.nn.Parameter(torch.zeros(2))
    a = GradFilter(cfg, ["w"])
    for g in GRADS[:2]:
        p.grad = g.clone()
        a.apply([p])
    b = GradFilter(cfg, ["w"])
    b.load_state_tensors(a.state_tensors(), torch.device("cpu"))
    outs = []
    for filt in (a, b):
        p.grad = GRADS[2].clone()
        filt.apply([p])
        outs.append(p.grad.clone())
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    torch.testing.assert_close(outs[0], torch.tensor([7.0, 9.5]))


def test_orthograd_is_orthogonal_and_keeps_norm():
    gen = torch.Generator().manual_seed(0)
    # stacked as the training core holds them: a leading seed axis of 2 seeds
    params = [torch.nn.Parameter(torch.randn(2, 5, 3, generator=gen)) for _ in range(2)]
    grads = [torch.randn(2, 5, 3, generator=gen) for _ in range(2)]
    grads[1] = grads[1] + 3.0 * params[1].detach()  # a large parallel part to remove
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    orthogonalize_gradients(params)
    for (p, g), k in itertools.product(zip(params, grads, strict=True), range(2)):
        w = p.detach()[k].double()
        new = p.grad[k].double()
        g = g[k]
        assert abs(float(torch.sum(w * new))) < 1e-5 * float(w.norm() * new.norm())
        assert float(new.norm()) == pytest.approx(float(g.double().norm()), rel=1e-6)
        # g_perp is g minus its projection on w, rescaled: it lies in span(w, g) and is
        # proportional to g - (<w, g> / <w, w>) w
        want = g.double() - (torch.sum(w * g.double()) / torch.sum(w * w)) * w
        torch.testing.assert_close(new / new.norm(), want / want.norm(), rtol=0, atol=1e-6)


def test_stablemax_values_and_probabilities():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])
    torch.testing.assert_close(stablemax_s(x), torch.tensor([0.25, 0.5, 1.0, 1.5, 3.0]))
    z = torch.tensor([[2.0, -1.0, 0.0], [-4.0, -3.0, 10.0]], dtype=torch.float64)
    s = stablemax_s(z)
    probs = s / s.sum(dim=-1, keepdim=True)
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2, dtype=torch.float64))
    # row 0: s = (3, 0.5, 1) -> p = (3/4.5, 0.5/4.5, 1/4.5)
    torch.testing.assert_close(
        probs[0], torch.tensor([3 / 4.5, 0.5 / 4.5, 1 / 4.5], dtype=torch.float64)
    )
    y = torch.tensor([0, 1])
    # row 1: s = (1/5, 1/4, 11), label 1 -> p = 0.25 / 11.45
    want = -(math.log(3 / 4.5) + math.log(0.25 / 11.45)) / 2
    assert float(stablemax_cross_entropy(z, y)) == pytest.approx(want, rel=1e-12)


def test_stablemax_gradient_is_finite_far_out():
    z = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    stablemax_cross_entropy(z, torch.tensor([1])).backward()
    assert torch.isfinite(z.grad).all()


def test_softmax_collapse_share_hand_made():
    logits = torch.tensor(
        [
            [0.0, -200.0, -200.0],  # exp(-200) = 1.4e-87: the sum is exactly 1 in float64 too
            [0.0, -20.0, -30.0],  # 1 + 2e-9: 1 in float32 (eps/2 = 6e-8), not in float64
            [0.0, -1.0, -2.0],  # 1 + 0.37 + 0.14
            [5.0, 5.0, 5.0],  # sum 3
        ]
    )
    assert softmax_collapsed(logits).tolist() == [True, False, False, False]  # float64
    assert softmax_collapsed(logits, torch.float32).tolist() == [True, True, False, False]
    # float64 logits judged in float32 lose the same digits
    assert softmax_collapsed(logits.double(), torch.float32).tolist() == [True, True, False, False]


def test_softmax_collapse_thresholds_are_the_float_precisions():
    # one rival class at gap g: 1 + exp(-g) rounds to 1 iff exp(-g) <= 2^-(mantissa bits + 1)
    gaps = torch.tensor([16.0, 17.0, 36.0, 37.5])  # 24 ln 2 = 16.64, 53 ln 2 = 36.74
    logits = torch.stack([torch.zeros(4), -gaps], dim=-1)
    assert softmax_collapsed(logits, torch.float32).tolist() == [False, True, True, True]
    assert softmax_collapsed(logits).tolist() == [False, False, False, True]


def test_float64_collapse_is_exactly_where_the_float64_loss_is_zero():
    # Rows with max logit 0 and the label at the max: loss = log(sum) = 0 iff the sum is 1.
    gen = torch.Generator().manual_seed(0)
    gaps = 30.0 + 15.0 * torch.rand(2000, 5, generator=gen)  # gaps 30 .. 45, across 36.7
    logits = torch.cat([torch.zeros(2000, 1), -gaps], dim=-1)
    labels = torch.zeros(2000, dtype=torch.long)
    zero_loss = cross_entropy64_each(logits, labels) == 0.0
    collapsed = softmax_collapsed(logits)
    assert torch.equal(collapsed, zero_loss)
    assert 0.05 < collapsed.double().mean() < 0.95  # both kinds of row occur
    # no effect at all: logits of unit scale never collapse, in either precision
    z = torch.randn(5000, 10, generator=gen)
    assert not softmax_collapsed(z).any() and not softmax_collapsed(z, torch.float32).any()


def test_stablemax_collapse_needs_astronomical_logits():
    logits = torch.tensor(
        [
            [0.0, -40.0, -40.0],  # softmax collapses in float64; s: 1, 1/41, 1/41
            [1e3, -1e3, 0.0],  # s: 1001, 1/1001, 1
            [1e17, -1.0, 0.0],  # s: 1e17 + 1 dwarfs 1/2 + 1 in float64
        ],
        dtype=torch.float64,
    )
    assert softmax_collapsed(logits).tolist() == [True, True, True]
    assert stablemax_collapsed(logits).tolist() == [False, False, True]


def _tiny_state(tiny, *overrides):
    cfg = tiny(*overrides)
    from grokscope.config import resolve

    resolve(cfg)
    ds = build_dataset(cfg.task)
    dev = torch.device("cpu")
    return cfg, new_state([cfg], [ds], dev), ExampleData.for_batch([cfg], [ds], dev)


def test_weight_norm_constraint_holds_through_training(tiny):
    cfg, state, data = _tiny_state(tiny, "optim.weight_norm=7.5", "optim.warmup_steps=0")
    start = [p.detach().clone() for p in state.params]
    for _ in range(5):
        train_step(cfg, state, lambda: data.losses([cfg], state, 0))
        assert float(total_norm(state.params)) == pytest.approx(7.5, rel=1e-6)
    assert any(not torch.equal(a, b.detach()) for a, b in zip(start, state.params, strict=True))


def test_project_to_norm_scales_all_parameters_together():
    # two seeds stacked: seed 0 has total norm 5, seed 1 total norm 1; each goes to 10 alone
    a = torch.nn.Parameter(torch.tensor([[3.0, 0.0], [0.0, 0.6]]))
    b = torch.nn.Parameter(torch.tensor([[[0.0, 4.0]], [[0.8, 0.0]]]))
    project_to_norm([a, b], 10.0)
    torch.testing.assert_close(a.detach(), torch.tensor([[6.0, 0.0], [0.0, 6.0]]))
    torch.testing.assert_close(b.detach(), torch.tensor([[[0.0, 8.0]], [[8.0, 0.0]]]))


def test_decay_toward_init_with_zero_gradient(tiny):
    # decay_to=init: AdamW runs without its own decay and decay_toward pulls w to w0; with a zero
    # gradient Adam's update is 0, so w_t - w0 = (1 - lr * wd)^t (w_start - w0) exactly.
    lr, wd = 0.1, 0.5
    cfg, state, _ = _tiny_state(
        tiny, "optim.decay_to=init", f"optim.lr={lr}", f"optim.weight_decay={wd}"
    )
    assert state.optimizer.param_groups[0]["weight_decay"] == 0.0
    init = [t.clone() for t in state.init_params]
    with torch.no_grad():
        for p in state.params:
            p.add_(1.0)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    for t in range(1, 21):
        for p in state.params:
            p.grad = torch.zeros_like(p)
        decay_toward(state.params, state.init_params, lr * wd)
        state.optimizer.step()
        for p, w0 in zip(state.params, init, strict=True):
            torch.testing.assert_close(
                p.detach() - w0, torch.full_like(w0, (1 - lr * wd) ** t), rtol=1e-5, atol=1e-6
            )
    # the init stays where it was
    assert all(torch.equal(a, b) for a, b in zip(init, state.init_params, strict=True))


def test_decay_toward_is_the_decoupled_update():
    p = torch.nn.Parameter(torch.tensor([2.0, -4.0]))
    decay_toward([p], [torch.tensor([1.0, 0.0])], 0.25)
    torch.testing.assert_close(p.detach(), torch.tensor([1.75, -3.0]))


def _metrics(run):
    return rundir.read_metrics(run).drop(columns=["wall_s"])


@pytest.mark.equality
@pytest.mark.parametrize(
    "extra",
    [
        ["optim.grokfast=ema"],
        ["optim.grokfast=ma", "optim.grokfast_window=7"],
        [
            "optim.grokfast=ema",
            "optim.orthograd=true",
            "optim.decay_to=init",
            "optim.weight_norm=12",
        ],
    ],
)
def test_resume_with_interventions_equals_uninterrupted(tmp_path, tiny, extra):
    """A hard kill right after the epoch-20 checkpoint (a copy of the directory as it was then),
    resumed with train_run(resume=True), repeats the straight run exactly: the filter state, the
    init weights and the optimizer moments all come back."""
    cfg = tiny(*extra)
    seen = {}

    def snapshot(row):
        if row["epoch"] == 25 and "copied" not in seen:
            shutil.copytree(tmp_path / "full", tmp_path / "killed")
            seen["copied"] = True

    train_run(cfg, tmp_path / "full", progress=snapshot)
    killed = tmp_path / "killed"
    assert rundir.read_status(killed)["state"] == "running"
    assert max(rundir.list_epochs(killed, rundir.RESUME_RE)) == 20
    status = train_run(None, killed, resume=True)
    assert status["state"] == "done" and status["epochs_done"] == 60
    pd.testing.assert_frame_equal(_metrics(tmp_path / "full"), _metrics(killed))
    a = rundir.load_weights(tmp_path / "full", 60)
    b = rundir.load_weights(killed, 60)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -- interventions at memorization (optim.at_mem) --------------------------------------------
# The tiny run's train accuracy passes 0.1 at epoch 30 of 60: a low threshold stands in for
# memorization, so that the intervention starts mid-run and before the epoch-40 checkpoint.


def _at_mem_metrics(tmp_path, tiny, name, *extra):
    from grokscope.orchestrate.train import train_run
    from grokscope.store import rundir

    status = train_run(tiny("train.mem_threshold=0.1", *extra), tmp_path / name)
    return status, rundir.read_metrics(tmp_path / name)


def test_drop_wd_at_mem_changes_nothing_before_and_everything_after(tmp_path, tiny):
    import pandas as pd

    base_status, base = _at_mem_metrics(tmp_path, tiny, "base")
    status, drop = _at_mem_metrics(tmp_path, tiny, "drop", "optim.at_mem=drop_wd")
    t_mem = status["t_mem_epoch"]
    assert t_mem is not None and t_mem == base_status["t_mem_epoch"] and t_mem < 40
    before = drop["epoch"] <= t_mem
    pd.testing.assert_frame_equal(
        base[before].drop(columns="wall_s"), drop[before].drop(columns="wall_s")
    )
    # without decay the weights stop shrinking: the norm ends above the baseline's
    assert drop["weight_norm_sq"].iloc[-1] > base["weight_norm_sq"].iloc[-1]
    assert not drop[~before]["train_loss"].equals(base[~before]["train_loss"])


def test_freeze_norm_at_mem_holds_the_norm(tmp_path, tiny):
    status, m = _at_mem_metrics(tmp_path, tiny, "freeze", "optim.at_mem=freeze_norm")
    after = m[m["epoch"] > status["t_mem_epoch"]]["weight_norm_sq"].to_numpy()
    at = float(m[m["epoch"] == status["t_mem_epoch"]]["weight_norm_sq"].iloc[0])
    assert len(after) > 3
    np.testing.assert_allclose(after, at, rtol=1e-5)  # float32 weights, float64 norm


@pytest.mark.equality
@pytest.mark.parametrize("kind", ["drop_wd", "freeze_norm"])
def test_at_mem_resume_after_kill_equals_uninterrupted(tmp_path, tiny, kind):
    import shutil

    import pandas as pd
    import torch

    from grokscope.orchestrate.train import train_run
    from grokscope.store import rundir

    cfg = tiny("train.mem_threshold=0.1", f"optim.at_mem={kind}")
    seen = {}

    def snapshot(row):
        if row["epoch"] == 45 and not seen:  # after the epoch-40 checkpoint, after T_mem
            shutil.copytree(tmp_path / "full", tmp_path / "killed")
            seen["copied"] = True

    status = train_run(cfg, tmp_path / "full", progress=snapshot)
    assert status["t_mem_epoch"] < 40
    killed = tmp_path / "killed"
    train_run(None, killed, resume=True)
    a, b = (rundir.read_metrics(r).drop(columns="wall_s") for r in (tmp_path / "full", killed))
    pd.testing.assert_frame_equal(a, b)
    wa, wb = rundir.load_weights(tmp_path / "full", 60), rundir.load_weights(killed, 60)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_at_mem_runs_alone_and_bad_values(tmp_path, tiny):
    from grokscope.config import ConfigError, resolve
    from grokscope.orchestrate.train import train_runs

    with pytest.raises(ConfigError, match="unknown optim.at_mem"):
        resolve(tiny("optim.at_mem=later"))
    with pytest.raises(ConfigError, match="both fix the norm"):
        resolve(tiny("optim.at_mem=freeze_norm", "optim.weight_norm=10"))
    cfgs = [tiny("optim.at_mem=drop_wd", f"train.seed={s}") for s in (0, 1)]
    with pytest.raises(ConfigError, match="one seed at a time"):
        train_runs(cfgs, [tmp_path / "a", tmp_path / "b"])


def test_gradient_clipping_follows_torch_per_seed():
    """Each seed of a stack is clipped as ``clip_grad_norm_`` clips that seed's model alone;
    a gradient below the norm is left untouched bit for bit (no effect at all)."""
    from grokscope.train.interventions import clip_gradients

    gen = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 2)]
    # seed 0: large gradient (clipped), seed 1: small (untouched), seed 2: zero
    factors = [10.0, 1e-3, 0.0]
    stacked = [torch.zeros((3, *s), requires_grad=True) for s in shapes]
    for p in stacked:
        p.grad = torch.randn(p.shape, generator=gen) * torch.tensor(factors).view(
            -1, *([1] * (p.dim() - 1))
        )
    before = [p.grad.clone() for p in stacked]
    clip_gradients(stacked, 1.0)
    for seed in range(3):
        alone = [torch.zeros(s, requires_grad=True) for s in shapes]
        for a, b in zip(alone, before, strict=True):
            a.grad = b[seed].clone()
        torch.nn.utils.clip_grad_norm_(alone, 1.0)
        # torch sums the norm of these 24 numbers in float32 (relative error <= 24 u = 1.4e-6 on
        # any CPU), ours in float64: the scale factors agree to that bound, not to the bit
        for a, p in zip(alone, stacked, strict=True):
            torch.testing.assert_close(p.grad[seed], a.grad, rtol=1.5e-6, atol=0)
    norm0 = torch.sqrt(sum((p.grad[0].double() ** 2).sum() for p in stacked))
    assert abs(float(norm0) - 1.0) < 1e-5
    for p, b in zip(stacked, before, strict=True):
        assert torch.equal(p.grad[1], b[1]) and torch.equal(p.grad[2], b[2])


def test_murty_presets_carry_the_released_schedule_and_structural_cpu_does_not():
    from grokscope.config import preset

    for name in ("murty_qf", "murty_tense"):
        o = preset(name).optim
        assert (o.warmup_steps, o.grad_clip, o.lr) == (10_000, 1.0, 1e-4)
    o = preset("structural_cpu").optim
    assert (o.warmup_steps, o.grad_clip) == (0, 0.0)


def test_a_negative_clip_norm_is_refused():
    from grokscope.config import ConfigError, apply_overrides, preset, resolve

    with pytest.raises(ConfigError, match="optim.grad_clip must be >= 0"):
        resolve(apply_overrides(preset("quick"), ["optim.grad_clip=-1"]))


def test_the_core_clips_before_the_step(tiny):
    """With ``optim.grad_clip`` the gradient the optimizer sees has at most that norm; without
    it the same step's gradient is far larger (so the clip did something)."""
    norms = {}
    for clip in ("0.0", "0.05"):
        cfg, state, data = _tiny_state(tiny, f"optim.grad_clip={clip}", "optim.warmup_steps=0")
        train_step(cfg, state, lambda: data.losses([cfg], state, 0))  # noqa: B023
        norms[clip] = float(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in state.params)))
    assert norms["0.05"] <= 0.05 * (1 + 1e-6)
    assert norms["0.0"] > 0.5


@pytest.mark.equality
def test_intervention_arms_are_identical_until_t_mem(tmp_path, tiny):
    """The three at_mem arms compute the same run up to and including the evaluation that finds
    T_mem (bit for bit: the same kernels on the same values), and part after it."""
    from grokscope.orchestrate.train import train_run
    from grokscope.store import rundir

    tables, t_mems = {}, set()
    for arm in ("none", "drop_wd", "freeze_norm"):
        status = train_run(
            tiny(f"optim.at_mem={arm}", "train.epochs=300", "train.eval_every=5"), tmp_path / arm
        )
        t_mems.add(status["t_mem_epoch"])
        tables[arm] = rundir.read_metrics(tmp_path / arm).set_index("epoch")
    (t_mem,) = t_mems
    assert t_mem is not None and t_mem < 300
    cols = ["train_loss", "test_loss", "weight_norm_sq"]
    for arm in ("drop_wd", "freeze_norm"):
        before = tables[arm].loc[:t_mem, cols]
        pd.testing.assert_frame_equal(before, tables["none"].loc[:t_mem, cols])
        assert not tables[arm].loc[300, cols].equals(tables["none"].loc[300, cols])
