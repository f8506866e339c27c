"""Phase boundaries from synthetic curves with known kinks; None where there is nothing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from grokscope.dynamics.phases import (
    PhaseParams,
    event_epoch,
    fast_fall,
    find_phases,
    forward_rates,
    level_off_row,
    smoothed_log10,
)

TEST_FALL = PhaseParams(cleanup_rule="test_loss_fall")


def piecewise(epochs: np.ndarray, knots: list[tuple[float, float]]) -> np.ndarray:
    """10 ** (piecewise-linear log10 curve through the (epoch, log10 value) knots)."""
    xs, ys = zip(*knots, strict=True)
    return 10 ** np.interp(epochs, xs, ys)


def nanda_like(noise: float = 0.0, seed: int = 0, end: int = 20000) -> pd.DataFrame:
    """Curves shaped as in Nanda et al. (2023), with planted boundaries 2000 / 8000 / 12000:
    train falls fast until 1000 and slowly after, excluded tracks it to its minimum at 2000
    and then rises, restricted falls during circuit formation, test stays high until 8000 and
    falls fast until 12000 (then 16x slower). The weight norm falls until 12000 (then 12x
    slower), the Gini of W_L rises until 13000 and that of W_E until 14000, then both stay
    flat: cleanup by the level-off rule ends at 14000. ``noise``: log10 jitter of the losses
    (decades); the Gini curves get an additive jitter of noise / 20."""
    ep = np.concatenate([[0, 1, 2, 5, 10, 20, 50], np.arange(100, end + 1, 100)])
    rng = np.random.default_rng(seed)

    def jitter(x):
        return x * 10 ** (noise * rng.normal(size=x.shape))

    return pd.DataFrame(
        {
            "epoch": ep,
            "train_loss": jitter(piecewise(ep, [(0, 0.67), (1000, -2.0), (20000, -3.0)])),
            "test_loss": jitter(
                piecewise(ep, [(0, 0.67), (1000, 1.2), (8000, 1.0), (12000, -5.0), (20000, -5.5)])
            ),
            "excluded_loss": jitter(
                piecewise(ep, [(0, 0.67), (1000, -1.0), (2000, -1.2), (8000, 1.0), (20000, 1.1)])
            ),
            "restricted_loss": jitter(
                piecewise(ep, [(0, 0.67), (2000, 0.7), (8000, -1.0), (12000, -6.0), (20000, -6.0)])
            ),
            "weight_norm_sq": piecewise(ep, [(0, 3.5), (2000, 3.5), (12000, 2.8), (20000, 2.75)]),
            "gini_embed": np.interp(ep, [0, 4000, 14000, 20000], [0.05, 0.05, 0.7, 0.7])
            + noise / 20 * rng.normal(size=ep.size),
            "gini_unembed": np.interp(ep, [0, 6000, 13000, 20000], [0.05, 0.05, 0.8, 0.8])
            + noise / 20 * rng.normal(size=ep.size),
            "train_acc": np.where(ep >= 700, 1.0, 0.5),
            "test_acc": np.where(ep >= 11000, 1.0, 0.1),
        }
    )


def test_planted_boundaries_found_exactly_without_noise():
    out = find_phases(nanda_like(), TEST_FALL)
    assert out["memorization_end"] == 2000
    assert out["circuit_formation_end"] == 8000
    assert out["cleanup_end"] == 12000
    d = out["details"]
    assert d["memorization_rule"] == "excluded_min"
    assert d["excluded_rise_decades"] == pytest.approx(2.2, abs=1e-9)
    assert d["restricted_fall_decades"] == pytest.approx(1.7, abs=1e-9)
    assert d["test_fall_decades"] == pytest.approx(0.2 * 6 / 7, abs=1e-9)
    assert d["restricted_10x_epoch"] < d["test_10x_epoch"]
    assert d["weight_norm_plateau_epoch"] == 12000
    assert out["notes"] == []


@pytest.mark.parametrize("seed", range(5))
def test_planted_boundaries_found_within_tolerance_with_noise_and_a_spike(seed):
    df = nanda_like(noise=0.03, seed=seed)
    df.loc[df["epoch"] == 5000, "test_loss"] *= 1e-3  # one isolated spike (a "slingshot")
    out = find_phases(df, TEST_FALL)
    assert abs(out["memorization_end"] - 2000) <= 300  # a shallow V: +- 3 rows
    assert abs(out["circuit_formation_end"] - 8000) <= 200
    assert abs(out["cleanup_end"] - 12000) <= 200


def test_level_off_rule_finds_the_planted_cleanup_end_without_noise():
    out = find_phases(nanda_like())
    d = out["details"]
    assert d["cleanup_rule"] == "level_off"
    assert d["cleanup_test_loss_fall_epoch"] == 12000  # the other rule, reported alongside
    level = d["cleanup_level_off_epochs"]
    assert level["test_loss"] == 12000  # 16x slower after 12000: below 10 % of its steepest rate
    assert level["weight_norm_sq"] == 12000  # 12x slower after 12000
    # a forward 9-row window that holds one row of the rise before a sharp kink already reads
    # 6.7 % of the steep rate: the Gini kinks are found one checkpoint (100 epochs) early
    assert level["gini_unembed"] == 12900
    assert level["gini_embed"] == 13900
    assert out["cleanup_end"] == 13900
    assert out["memorization_end"] == 2000 and out["circuit_formation_end"] == 8000
    assert out["notes"] == []


@pytest.mark.parametrize("seed", range(5))
def test_level_off_rule_within_tolerance_with_noise_and_spikes(seed):
    df = nanda_like(noise=0.02, seed=seed)
    df.loc[df["epoch"] == 5000, "test_loss"] *= 1e-3
    df.loc[df["epoch"] == 17000, "test_loss"] *= 1e2  # a late isolated spike
    out = find_phases(df)
    assert abs(out["cleanup_end"] - 14000) <= 300
    assert abs(out["details"]["cleanup_test_loss_fall_epoch"] - 12000) <= 200


def test_level_off_row_matches_the_textbook_shapes():
    tau = 1000.0
    ep = np.arange(0.0, 12001.0, 10.0)
    params = PhaseParams()
    # exponential approach: every forward rate is exp(-t / tau) times the first one, so the
    # curve levels off at the first row with exp(-t / tau) <= 0.1, t = tau ln 10 = 2302.6
    row = level_off_row(ep, 1 - np.exp(-ep / tau), 0, params)
    assert ep[row] == 2310.0
    # logistic step centred at 6000: rate c (1 - c) / tau falls to 10 % of its peak at
    # c = 0.974, 3.64 tau after the centre (the 80-epoch forward window reads ~40 epochs ahead)
    c = 1 / (1 + np.exp(-(ep - 6000) / tau))
    row = level_off_row(ep, c, 0, params)
    assert abs(ep[row] - (6000 + tau * np.log(0.974 / 0.026) - 40)) <= 30
    assert c[row] == pytest.approx(0.974, abs=0.002)


def test_level_off_row_flat_rising_and_short_curves():
    ep = np.arange(0.0, 1000.0, 10.0)
    params = PhaseParams()
    assert level_off_row(ep, np.full(ep.size, 0.3), 10, params) == 10  # no change at all
    assert level_off_row(ep, ep / 1000, 10, params) is None  # still rising at the same rate
    assert level_off_row(ep[:8], ep[:8], 0, params) is None  # no full 9-row window
    rates = forward_rates(ep, 2 * ep, 9)
    assert np.allclose(rates[:-8], 2.0) and np.isnan(rates[-8:]).all()


def test_level_off_rule_waits_for_the_gini_and_the_weight_norm():
    df = nanda_like()
    df["gini_embed"] = np.interp(df["epoch"], [0, 4000, 20000], [0.05, 0.05, 0.7])  # never flat
    out = find_phases(df)
    assert out["cleanup_end"] is None
    assert any("the Gini sparsity of the embedding is still changing" in n for n in out["notes"])
    assert find_phases(df, TEST_FALL)["cleanup_end"] == 12000
    # without the Gini columns (tasks without a modulus) the rest decide, and a note says so
    out = find_phases(df.drop(columns=["gini_embed", "gini_unembed"]))
    assert out["cleanup_end"] == 12000
    assert any(
        "the Gini sparsity of the embedding and the Gini sparsity of the unembedding are not "
        "measured" in n
        for n in out["notes"]
    )


def test_unknown_cleanup_rule_is_a_clear_error():
    with pytest.raises(ValueError, match="cleanup_rule must be one of level_off, test_loss_fall"):
        find_phases(nanda_like(), PhaseParams(cleanup_rule="eyeball"))


def test_train_loss_rule_when_there_is_no_excluded_loss():
    df = nanda_like().drop(columns=["excluded_loss", "restricted_loss"])
    out = find_phases(df, TEST_FALL)
    assert out["details"]["memorization_rule"] == "train_fall"
    assert out["memorization_end"] == 1000  # where the train loss stops falling fast
    assert out["circuit_formation_end"] == 8000
    assert out["cleanup_end"] == 12000


def test_flat_curves_give_no_boundaries():
    ep = np.arange(0, 5001, 100)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "epoch": ep,
            "train_loss": 4.6 * 10 ** (0.02 * rng.normal(size=ep.size)),
            "test_loss": 4.6 * 10 ** (0.02 * rng.normal(size=ep.size)),
        }
    )
    out = find_phases(df)
    assert [out[k] for k in ("memorization_end", "circuit_formation_end", "cleanup_end")] == [
        None,
        None,
        None,
    ]
    assert len(out["notes"]) == 2


def test_memorization_without_generalization():
    df = nanda_like()
    df["test_loss"] = piecewise(df["epoch"].to_numpy(), [(0, 0.67), (1000, 1.2), (20000, 1.1)])
    df["excluded_loss"] = df["train_loss"]  # never stops tracking the train loss
    out = find_phases(df)
    assert out["memorization_end"] == 1000  # falls back to the train-loss rule
    assert out["circuit_formation_end"] is None and out["cleanup_end"] is None


@pytest.mark.parametrize("rule", ["level_off", "test_loss_fall"])
def test_still_falling_at_the_end_leaves_cleanup_open(rule):
    out = find_phases(nanda_like(end=10000), PhaseParams(cleanup_rule=rule))
    assert out["circuit_formation_end"] == 8000
    assert out["cleanup_end"] is None
    assert any("still" in n for n in out["notes"])


def test_no_delay_sets_circuit_formation_end_to_memorization_end():
    ep = np.arange(0, 3001, 50)
    df = pd.DataFrame(
        {
            "epoch": ep,
            "train_loss": piecewise(ep, [(0, 0.6), (1000, -3.0), (3000, -3.5)]),
            "test_loss": piecewise(ep, [(0, 0.6), (200, 0.6), (1200, -2.5), (3000, -3.0)]),
        }
    )
    out = find_phases(df, TEST_FALL)
    assert out["memorization_end"] == 1000
    assert out["circuit_formation_end"] == 1000
    assert out["cleanup_end"] == 1200
    assert any("no delayed" in n for n in out["notes"])
    # the level-off rule: only the test loss is there, 60x slower after 1200
    out = find_phases(df)
    assert out["cleanup_end"] == 1200
    assert any("read from the test loss only" in n for n in out["notes"])


def test_too_few_rows_and_fast_fall_on_a_clean_kink():
    assert find_phases(nanda_like().iloc[:2])["memorization_end"] is None
    ep = np.arange(30.0)
    h = np.concatenate([np.zeros(11), -np.arange(1.0, 6.0), -5 - 0.01 * np.arange(1, 15)])
    fall = fast_fall(ep, h, 0, PhaseParams(smooth_window=1, slope_halfwidth=2))
    # flat to row 10, falling 1 decade per epoch to row 15, then 0.01 per epoch
    assert (fall["start"], fall["end"], fall["steepest"]) == (10, 15, 12)
    assert fall["rate"] == pytest.approx(1.0)
    assert fast_fall(ep, h, 0, PhaseParams(min_drop_decades=6.0)) is None
    assert fast_fall(ep[:14], h[:14], 0, PhaseParams())["end"] is None  # still falling


def test_event_epoch_thresholds_and_censoring():
    df = nanda_like()
    assert event_epoch(df, "train_acc", 0.99) == 700
    assert event_epoch(df, "test_acc", 0.99) == 11000
    assert event_epoch(df, "test_acc", 1.01) is None
    assert event_epoch(df.drop(columns=["test_acc"]), "test_acc", 0.5) is None


def test_a_late_test_loss_rise_does_not_hold_up_the_cleanup_end():
    """The test loss reaches its floor at 12000, then climbs two decades from 14000 to 22000
    (as a nanda2023 run did on an AMD machine). Read raw, the level-off rule would wait for the
    climb; read through the running minimum it finds the planted cleanup end, and the climb is
    reported in a note."""
    df = nanda_like(end=25000)
    ep = df["epoch"].to_numpy()
    df["test_loss"] *= 10 ** np.interp(ep, [0, 14000, 22000, 25000], [0.0, 0.0, 2.0, 2.0])
    out = find_phases(df)
    assert out["details"]["cleanup_level_off_epochs"]["test_loss"] == 12000
    assert out["cleanup_end"] == 13900
    # from -5.125 decades at 14000 to -3.5 at 22000 (the floor itself falls 0.375 meanwhile)
    assert out["details"]["test_late_rise_decades"] == pytest.approx(1.625, abs=0.05)
    assert any("late rise" in n for n in out["notes"])
    # the raw curve would have held the level-off up past the climb
    i_c = int(np.nonzero(ep == 8000)[0][0])
    raw = smoothed_log10(df["test_loss"].to_numpy(), PhaseParams().smooth_window)
    row = level_off_row(ep, raw, i_c, PhaseParams(), int(np.argmax(raw)))
    assert row is None or ep[row] >= 20000
    # and a run without a climb gets no note
    assert not any("late rise" in n for n in find_phases(nanda_like(end=25000))["notes"])
