"""Overrides, round trips and one clear error per bad input."""

import pytest

from grokscope.config import (
    Config,
    ConfigError,
    apply_overrides,
    field_reference,
    from_dict,
    preset,
    resolve,
    to_dict,
)


def test_overrides_are_typed():
    cfg = apply_overrides(
        preset("quick"),
        ["task.op=x*y", "optim.weight_decay=0.5", "model.layernorm=true", "train.epochs=7"],
    )
    assert cfg.task.op == "x*y" and cfg.optim.weight_decay == 0.5
    assert cfg.model.layernorm is True and cfg.train.epochs == 7


def test_round_trip_keeps_every_field():
    cfg = resolve(apply_overrides(preset("nanda2023"), ["optim.grokfast=ema"]))
    again = from_dict(to_dict(cfg))
    assert again == cfg
    assert len(field_reference()) == sum(
        len(v) for v in to_dict(cfg).values() if isinstance(v, dict)
    )


def test_resolve_fills_task_default_op():
    assert resolve(Config()).task.op == "x+y"
    perm = Config()
    perm.task.name = "permutation"
    assert resolve(perm).task.op == "x*y"


def test_nanda_preset_matches_paper():
    cfg = resolve(preset("nanda2023"))
    m, o = cfg.model, cfg.optim
    assert (cfg.task.p, cfg.task.train_fraction, cfg.train.epochs) == (113, 0.3, 25000)
    assert (m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp, m.act) == (
        1,
        128,
        4,
        32,
        512,
        "relu",
    )
    assert not m.layernorm
    assert (o.lr, o.weight_decay, o.beta1, o.beta2, o.warmup_steps, o.batch_size) == (
        1e-3,
        1.0,
        0.9,
        0.98,
        10,
        0,
    )


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["task.name=foo"], "unknown task"),
        (["task.op=x%y"], "unknown modular op"),
        (["task.op=x/y", "task.p=100"], "not prime"),
        (["task.train_fraction=0"], "train_fraction"),
        (["task.train_fraction=1.2"], "train_fraction"),
        (["model.n_heads=3"], "divisible"),
        (["model.act=tanh"], "activation"),
        (["optim.grokfast=fast"], "grokfast"),
        (["train.epochs=0"], "epochs"),
        (["train.device=tpu"], "device"),
    ],
)
def test_bad_values_raise_one_line(overrides, needle):
    with pytest.raises(ConfigError) as e:
        resolve(apply_overrides(preset("quick"), overrides))
    assert needle in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("item", ["model.width=3", "nosuch.x=1", "lr=1", "train.epochs"])
def test_unknown_fields_and_malformed_sets(item):
    with pytest.raises(ConfigError):
        apply_overrides(preset("quick"), [item])


def test_unparseable_value():
    with pytest.raises(ConfigError, match="cannot read"):
        apply_overrides(preset("quick"), ["train.epochs=many"])


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("nope")
