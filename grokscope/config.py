"""Configuration: dataclasses for task / model / optimizer / training, presets, validation.

Every field has a default, the resolved config (all defaults written out) is what a run stores in
``config.json``, and ``--set section.field=value`` reaches any field. Validation raises
:class:`ConfigError` with a one-line message naming the problem.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from grokscope.errors import GrokscopeError


class ConfigError(GrokscopeError, ValueError):
    """A user mistake in a config: one line naming the problem."""


@dataclass
class TaskConfig:
    """Which dataset to build and how to split it.

    ``name``: ``modular`` (binary ops mod p, Power et al. 2022), ``permutation`` (composition in
    S_n) or ``sparse_parity`` (n bits, parity of k hidden ones; Barak et al. 2022, Merrill et
    al. 2023); the sequence (language-model) tasks ``question_formation`` and
    ``tense_inflection`` (McCoy, Frank & Linzen 2020 grammars, Murty et al. 2023 splits) and
    ``dyck`` (Dyck-k of maximum depth d, Hewitt et al. 2020) and ``tree_language`` (the Random
    Hierarchy Model of Cagnetta et al. 2024, optionally hierarchically filtered as in Garnier-Brun
    et al. 2025; :mod:`grokscope.tasks.tree_language`).
    ``op``: empty means the task's default (``x+y`` for modular, ``x*y`` for permutation).
    Sequence tasks: ``n_train`` / ``n_dev`` / ``n_test`` / ``n_gen`` sentences per split
    (published: 100k / 1k / 10k / 10k), ``dyck_k`` bracket types, ``dyck_depth`` maximum depth,
    ``max_len`` the longest Dyck string kept (0 = no limit).
    Tree languages: ``tree_levels`` L, ``tree_vocab`` v symbols per level, ``tree_rules`` m
    synonymous rules per symbol, ``tree_branching`` s, ``tree_filter`` the filter level k of the
    training and test data (-1 = the full grammar, k = L likewise), ``tree_filter_rule`` how:
    ``garnier_brun`` (the paper's released code: the level-k nodes independent given the root)
    or ``marginal`` (ours: independent from their marginals, the root removed too; the default,
    which runs made before the rule existed used), ``tree_units`` independent
    trees per sequence, ``tree_boundary`` a ``<sep>`` token between them; ``n_train`` is the
    training-set size P.
    Documents (``documents``, :mod:`grokscope.tasks.documents`): ``doc_genres`` genres,
    ``doc_paragraphs`` the most paragraphs a document has, ``doc_topics`` topics on a ring,
    ``doc_topic_words`` content words per topic of which ``doc_topic_overlap`` are shared with
    the next topic, ``doc_function_words`` function words, ``doc_templates`` sentence templates,
    ``doc_sentences`` the most sentences a paragraph has, ``doc_boundary`` marked / unmarked /
    unreliable paragraph markers; ``n_train`` documents.
    """

    name: str = "modular"
    op: str = ""
    p: int = 113
    group_n: int = 5
    n_bits: int = 40
    k_bits: int = 3
    n_samples: int = 2000
    train_fraction: float = 0.3
    data_seed: int = 0
    n_train: int = 100000
    n_dev: int = 1000
    n_test: int = 10000
    n_gen: int = 10000
    dyck_k: int = 20
    dyck_depth: int = 10
    max_len: int = 0
    tree_levels: int = 3
    tree_vocab: int = 8
    tree_rules: int = 2
    tree_branching: int = 2
    tree_filter: int = -1
    tree_units: int = 1
    tree_boundary: bool = False
    tree_filter_rule: str = "marginal"
    doc_genres: int = 2
    doc_paragraphs: int = 4
    doc_topics: int = 6
    doc_topic_words: int = 6
    doc_topic_overlap: int = 2
    doc_function_words: int = 8
    doc_templates: int = 4
    doc_sentences: int = 4
    doc_boundary: str = "marked"

    def validate(self) -> None:
        """Raise ConfigError naming the first problem of the task's own settings."""
        _validate_task(self)


@dataclass
class ModelConfig:
    """Network shape. ``kind`` is ``transformer``, ``mlp`` or ``lm`` (the causal language model
    of the sequence tasks, :mod:`grokscope.models.lm`).

    Transformer defaults are the Nanda et al. (2023) main-run model. For ``mlp``: ``d_embed`` is the
    operand embedding width (0 = one-hot inputs), ``n_layers`` hidden layers of width ``d_mlp``,
    ``act`` relu / gelu / quad (x^2, Gromov 2023), ``bias`` toggles every bias.
    ``init_scale`` multiplies every initial weight (Liu et al. 2023, Omnigrok).
    For ``lm``: ``ln_position`` pre / post (Murty et al. 2023 use post), ``positions`` sinusoidal
    or learned, ``dropout`` (0.1 in Murty et al.), ``n_ctx`` the context length (0 = the task's
    longest sequence); ``d_mlp`` is the feed-forward width d_ff.
    """

    kind: str = "transformer"
    n_layers: int = 1
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    act: str = "relu"
    layernorm: bool = False
    d_embed: int = 128
    bias: bool = True
    init_scale: float = 1.0
    ln_position: str = "pre"
    positions: str = "learned"
    dropout: float = 0.0
    n_ctx: int = 0

    def validate(self, task: str, sequence: bool) -> None:
        """Raise ConfigError naming the first problem (``task``: the task's name, ``sequence``:
        whether it is a language-model task, which needs ``kind = lm``)."""
        _validate_model(self, task, sequence)


@dataclass
class OptimConfig:
    """AdamW with linear warmup (Nanda et al. 2023 settings) and the known interventions.

    ``batch_size`` 0 means full batch. ``grokfast``: none / ema / ma (Lee et al. 2024).
    ``loss``: softmax (cross-entropy) or stablemax (Prieto et al. 2025). ``orthograd`` projects out
    the gradient component parallel to the weights (Prieto et al. 2025). ``weight_norm`` > 0 fixes
    the total parameter norm after every step (Liu et al. 2023, Omnigrok). ``decay_to``: decay
    toward zero or toward the initial weights. ``lr_decay``: ``none`` (constant after warmup) or
    ``linear`` (to zero at the end of the budget). ``loss_on`` (sequence tasks): ``all`` tokens,
    as Murty et al. (2023) train, or the ``answer`` span only. ``at_mem``: an intervention from
    the evaluation at which the run memorizes (train accuracy first >= ``train.mem_threshold``)
    on: ``drop_wd`` (weight decay off), ``freeze_norm`` (the weights rescaled to their norm at
    that moment after every step); ``none`` by default. Such runs train one seed at a time.
    ``grad_clip`` > 0 clips each seed's gradient to that total L2 norm after backward (0: off;
    Murty et al.'s released code clips at 1).
    """

    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-8
    warmup_steps: int = 10
    batch_size: int = 0
    loss: str = "softmax"
    grokfast: str = "none"
    grokfast_alpha: float = 0.98
    grokfast_lambda: float = 2.0
    grokfast_window: int = 100
    orthograd: bool = False
    weight_norm: float = 0.0
    decay_to: str = "zero"
    lr_decay: str = "none"
    loss_on: str = "all"
    at_mem: str = "none"
    grad_clip: float = 0.0

    def validate(self, sequence: bool) -> None:
        """Raise ConfigError naming the first problem (``sequence``: a language-model task,
        which trains on mini-batches and has no filters or norm constraints yet)."""
        _validate_optim(self, sequence)


@dataclass
class TrainConfig:
    """Loop schedule, seeds and device.

    ``epochs`` is the budget; evaluation every ``eval_every`` epochs; checkpoints at log-spaced
    early epochs (1, 2, 5, 10, 20, ...) below ``checkpoint_every`` and then every
    ``checkpoint_every`` epochs. ``early_stop_after`` >= 0 stops that many epochs after test
    accuracy first reaches ``grok_threshold`` (-1: never). ``seed`` is the model seed (the data
    seed lives in the task). ``threads`` is the CPU thread count of torch and of NumPy's BLAS
    (0 keeps the libraries' default of one per core); one thread per process is the default
    because it is fastest as soon as anything else shares the cores (measured in the README).
    ``portable`` runs with fixed kernels on the CPU, one thread, so that the same seed gives the
    same bits on any x86-64 CPU with AVX2 (:mod:`grokscope.portable`; ``--portable``).
    ``log_to`` also writes every metrics row to live dashboards: ``tensorboard``, ``wandb``
    (offline unless ``WANDB_MODE`` says otherwise) or both, comma-separated
    (:mod:`grokscope.store.dashboards`; extra ``dashboards``); empty: none.
    """

    epochs: int = 25000
    eval_every: int = 100
    checkpoint_every: int = 1000
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    deterministic: bool = True
    mem_threshold: float = 0.99
    grok_threshold: float = 0.99
    early_stop_after: int = -1
    portable: bool = False
    log_to: str = ""

    def validate(self) -> None:
        """Raise ConfigError naming the first problem of the schedule, seeds or device."""
        _validate_train(self)


@dataclass
class Config:
    """A whole run: task, model, optimizer and training schedule."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""

    def validate(self) -> None:
        """Raise ConfigError naming the first problem found, section by section."""
        _validate_config(self)


SECTIONS = ("task", "model", "optim", "train")

MODULAR_OPS = (
    "x+y",
    "x-y",
    "x*y",
    "x/y",
    "x^2+y^2",
    "x^2+xy+y^2",
    "x^2+xy+y^2+x",
    "x^3+xy",
    "x^3+xy^2+y",
    "x/y if y odd else x-y",
)
PRIME_OPS = ("x/y", "x/y if y odd else x-y")
PERMUTATION_OPS = ("x*y", "x*y*x^-1")
SEQUENCE_TASKS = ["question_formation", "tense_inflection", "dyck", "tree_language"]
TASKS = ["modular", "permutation", "sparse_parity", *SEQUENCE_TASKS]
# tasks added by kinds from outside the package (grokscope.kinds.register): their own checks and
# the task fields they read beyond their family's
TASK_VALIDATORS: dict[str, Any] = {}
TASK_FIELDS: dict[str, tuple[str, ...]] = {}
DEFAULT_OPS = {"modular": "x+y", "permutation": "x*y", "sparse_parity": "parity"}
# fields that only the algorithmic tasks / models read: setting one on a sequence run is a mistake
ALGORITHMIC_ONLY = (
    "task.op",
    "task.p",
    "task.group_n",
    "task.n_bits",
    "task.k_bits",
    "task.n_samples",
    "task.train_fraction",
    "model.layernorm",
    "model.d_embed",
    "model.bias",
    "optim.at_mem",
)
DYCK_ONLY = ("task.dyck_k", "task.dyck_depth", "task.max_len")
TREE_ONLY = (
    "task.tree_levels",
    "task.tree_vocab",
    "task.tree_rules",
    "task.tree_branching",
    "task.tree_filter",
    "task.tree_filter_rule",
    "task.tree_units",
    "task.tree_boundary",
)
SEQUENCE_ONLY = (
    "task.n_train",
    "task.n_dev",
    "task.n_test",
    "task.n_gen",
    *DYCK_ONLY,
    *TREE_ONLY,
    "model.ln_position",
    "model.positions",
    "model.dropout",
    "model.n_ctx",
    "optim.loss_on",
)


AT_MEM = ("none", "drop_wd", "freeze_norm")


def register_task(
    name: str, sequence: bool = True, validate=None, fields: tuple[str, ...] = ()
) -> None:
    """Make ``name`` a valid ``task.name``: a sequence (language-model) task or an algorithmic
    one, checked by ``validate(cfg)`` beyond its family's checks, reading the task fields
    ``fields`` beyond its family's (others set explicitly are refused, as for every task)."""
    if name not in TASKS:
        TASKS.append(name)
    if sequence and name not in SEQUENCE_TASKS:
        SEQUENCE_TASKS.append(name)
    if validate is not None:
        TASK_VALIDATORS[name] = validate
    TASK_FIELDS[name] = tuple(fields)


def is_sequence(t: TaskConfig) -> bool:
    """Whether ``t`` is a sequence (language-model) task."""
    return t.name in SEQUENCE_TASKS


def is_prime(n: int) -> bool:
    """Trial division; p is at most a few thousand here."""
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def resolve(cfg: Config) -> Config:
    """Fill task-dependent defaults (the op) and validate; returns the same object."""
    if cfg.task.name in DEFAULT_OPS and not cfg.task.op:
        cfg.task.op = DEFAULT_OPS[cfg.task.name]
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first problem found (:meth:`Config.validate`)."""
    cfg.validate()


def _validate_config(cfg: Config) -> None:
    """Each section checks its own fields (the task first), given what it must know of the
    others: whether the task is a sequence task; then a registered task's own checks."""
    t = cfg.task
    _validate_task(t)
    sequence = is_sequence(t)
    _validate_model(cfg.model, t.name, sequence)
    _validate_optim(cfg.optim, sequence)
    _validate_train(cfg.train)
    if t.name in TASK_VALIDATORS:
        TASK_VALIDATORS[t.name](cfg)


def _validate_task(t: TaskConfig) -> None:
    if t.name not in TASKS:
        raise ConfigError(f"unknown task {t.name!r}; choose one of {', '.join(TASKS)}")
    if t.name == "modular":
        if t.op not in MODULAR_OPS:
            raise ConfigError(
                f"unknown modular op {t.op!r}; choose one of {', '.join(MODULAR_OPS)}"
            )
        if t.p < 2:
            raise ConfigError(f"task.p must be >= 2, got {t.p}")
        if t.op in PRIME_OPS and not is_prime(t.p):
            raise ConfigError(f"op {t.op!r} needs a prime modulus, but task.p = {t.p} is not prime")
    elif is_sequence(t):
        _validate_sequence_task(t)
    elif t.name == "permutation":
        if t.op not in PERMUTATION_OPS:
            raise ConfigError(
                f"unknown permutation op {t.op!r}; choose one of {', '.join(PERMUTATION_OPS)}"
            )
        if not 2 <= t.group_n <= 7:
            raise ConfigError(
                f"task.group_n must be in 2..7 (S_n has n! elements), got {t.group_n}"
            )
    elif t.name == "sparse_parity":
        if t.op != "parity":
            raise ConfigError(f"unknown sparse_parity op {t.op!r}; the only op is 'parity'")
        if not 1 <= t.k_bits <= t.n_bits:
            raise ConfigError(f"need 1 <= task.k_bits <= task.n_bits, got {t.k_bits}, {t.n_bits}")
        if t.n_samples < 2:
            raise ConfigError(f"task.n_samples must be >= 2, got {t.n_samples}")
        if t.n_bits < 40 and t.n_samples > 2**t.n_bits // 2:
            raise ConfigError(
                f"task.n_samples ({t.n_samples}) must be at most half of the "
                f"2^{t.n_bits} bit strings"
            )
    if not 0.0 < t.train_fraction < 1.0:
        raise ConfigError(f"task.train_fraction must lie in (0, 1), got {t.train_fraction}")


def _validate_model(m: ModelConfig, task: str, sequence: bool) -> None:
    if m.kind not in ("transformer", "mlp", "lm"):
        raise ConfigError(f"unknown model kind {m.kind!r}; choose transformer, mlp or lm")
    if (m.kind == "lm") != sequence:
        want = "model.kind=lm" if sequence else "model.kind=transformer or mlp"
        raise ConfigError(f"task {task!r} needs {want}, got model.kind={m.kind!r}")
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp"):
        if getattr(m, name) < 1:
            raise ConfigError(f"model.{name} must be >= 1, got {getattr(m, name)}")
    if m.kind in ("transformer", "lm"):
        if m.act not in ("relu", "gelu"):
            raise ConfigError(f"unknown transformer activation {m.act!r}; choose relu or gelu")
        if m.d_model % m.n_heads:
            raise ConfigError(
                f"model.d_model ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})"
            )
    else:
        if m.act not in ("relu", "gelu", "quad"):
            raise ConfigError(f"unknown mlp activation {m.act!r}; choose relu, gelu or quad")
        if m.d_embed < 0:
            raise ConfigError(f"model.d_embed must be >= 0 (0 = one-hot), got {m.d_embed}")
    if m.init_scale <= 0:
        raise ConfigError(f"model.init_scale must be > 0, got {m.init_scale}")
    if m.kind != "lm":
        return
    if m.ln_position not in ("pre", "post"):
        raise ConfigError(f"unknown model.ln_position {m.ln_position!r}; choose pre or post")
    if m.positions not in ("learned", "sinusoidal"):
        raise ConfigError(f"unknown model.positions {m.positions!r}; choose learned or sinusoidal")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {m.dropout}")
    if m.n_ctx < 0:
        raise ConfigError(f"model.n_ctx must be >= 0 (0 = the task's longest), got {m.n_ctx}")


def _validate_optim(o: OptimConfig, sequence: bool) -> None:
    if o.at_mem not in AT_MEM:
        raise ConfigError(f"unknown optim.at_mem {o.at_mem!r}; choose {', '.join(AT_MEM)}")
    if o.at_mem == "freeze_norm" and o.weight_norm > 0:
        raise ConfigError(
            "optim.at_mem=freeze_norm and optim.weight_norm both fix the norm: use one"
        )
    if o.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {o.lr}")
    if o.weight_decay < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {o.weight_decay}")
    for name in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, name) < 1.0:
            raise ConfigError(f"optim.{name} must lie in [0, 1), got {getattr(o, name)}")
    if o.warmup_steps < 0 or o.batch_size < 0:
        raise ConfigError("optim.warmup_steps and optim.batch_size must be >= 0")
    if o.loss not in ("softmax", "stablemax"):
        raise ConfigError(f"unknown loss {o.loss!r}; choose softmax or stablemax")
    if o.grokfast not in ("none", "ema", "ma"):
        raise ConfigError(f"unknown grokfast filter {o.grokfast!r}; choose none, ema or ma")
    if not 0.0 <= o.grokfast_alpha < 1.0:
        raise ConfigError(f"optim.grokfast_alpha must lie in [0, 1), got {o.grokfast_alpha}")
    if o.grokfast_window < 1:
        raise ConfigError(f"optim.grokfast_window must be >= 1, got {o.grokfast_window}")
    if o.weight_norm < 0:
        raise ConfigError(f"optim.weight_norm must be >= 0 (0 = off), got {o.weight_norm}")
    if o.decay_to not in ("zero", "init"):
        raise ConfigError(f"unknown optim.decay_to {o.decay_to!r}; choose zero or init")
    if o.lr_decay not in ("none", "linear"):
        raise ConfigError(f"unknown optim.lr_decay {o.lr_decay!r}; choose none or linear")
    if not o.grad_clip >= 0:
        raise ConfigError(f"optim.grad_clip must be >= 0 (0 = off), got {o.grad_clip}")
    if not sequence:
        return
    if o.loss_on not in ("all", "answer"):
        raise ConfigError(f"unknown optim.loss_on {o.loss_on!r}; choose all or answer")
    if o.batch_size < 1:
        raise ConfigError("sequence tasks train on mini-batches: set optim.batch_size >= 1")
    for name, value, why in (
        ("optim.loss", o.loss, "softmax"),
        ("optim.grokfast", o.grokfast, "none"),
    ):
        if value != why:
            raise ConfigError(f"{name}={value!r} is not available for sequence tasks yet")
    if o.orthograd or o.weight_norm > 0 or o.decay_to != "zero":
        raise ConfigError(
            "optim.orthograd, optim.weight_norm and optim.decay_to=init are not available for "
            "sequence tasks yet"
        )


LOG_TARGETS = ("tensorboard", "wandb")


def log_targets(log_to: str) -> list[str]:
    """The dashboards named in ``train.log_to`` (comma-separated; empty: none)."""
    return [t.strip() for t in log_to.split(",") if t.strip()]


def _validate_train(r: TrainConfig) -> None:
    for target in log_targets(r.log_to):
        if target not in LOG_TARGETS:
            raise ConfigError(
                f"unknown train.log_to {target!r}; choose tensorboard, wandb or both "
                "(comma-separated)"
            )
    if r.epochs < 1:
        raise ConfigError(f"train.epochs must be >= 1, got {r.epochs}")
    if r.threads < 0:
        raise ConfigError(f"train.threads must be >= 0 (0 = one per core), got {r.threads}")
    if r.eval_every < 1 or r.checkpoint_every < 1:
        raise ConfigError("train.eval_every and train.checkpoint_every must be >= 1")
    if r.device not in ("auto", "cpu", "cuda", "mps") and not r.device.startswith("cuda:"):
        raise ConfigError(f"unknown device {r.device!r}; choose auto, cpu, cuda, cuda:N or mps")
    for name in ("mem_threshold", "grok_threshold"):
        if not 0.0 < getattr(r, name) <= 1.0:
            raise ConfigError(f"train.{name} must lie in (0, 1], got {getattr(r, name)}")
    if r.portable and (r.threads != 1 or r.device not in ("cpu", "auto")):
        raise ConfigError(
            "train.portable runs on the CPU with one thread: set train.device=cpu (or auto) and "
            "train.threads=1; GPUs give no bitwise guarantee across machines"
        )


# practical limits of the sequence tasks: far above the published settings (100k lines, Dyck-20
# of depth 10), below what would exhaust memory or run for days before saying anything
MAX_LINES = 10_000_000
MAX_DYCK_K = 1000
MAX_DYCK_DEPTH = 1000


def _validate_sequence_task(t: TaskConfig) -> None:
    """The task settings only sequence tasks read: split sizes, Dyck and tree languages."""
    for name in ("n_train", "n_test", "n_gen"):
        if getattr(t, name) < 1:
            raise ConfigError(f"task.{name} must be >= 1 (an empty split), got {getattr(t, name)}")
    if t.n_dev < 0:
        raise ConfigError(f"task.n_dev must be >= 0, got {t.n_dev}")
    for name in ("n_train", "n_dev", "n_test", "n_gen"):
        if getattr(t, name) > MAX_LINES:
            raise ConfigError(
                f"task.{name}={getattr(t, name)} is above the limit of {MAX_LINES} lines"
            )
    if t.name == "dyck":
        if not 1 <= t.dyck_k <= MAX_DYCK_K:
            raise ConfigError(
                f"task.dyck_k (bracket types) must be in 1..{MAX_DYCK_K}, got {t.dyck_k}"
            )
        if not 1 <= t.dyck_depth <= MAX_DYCK_DEPTH:
            raise ConfigError(f"task.dyck_depth must be in 1..{MAX_DYCK_DEPTH}, got {t.dyck_depth}")
        if t.max_len < 0 or 0 < t.max_len < 4:
            raise ConfigError(
                f"task.max_len must be 0 (no limit) or >= 4 (the shortest Dyck string the "
                f"automaton makes), got {t.max_len}"
            )
    if t.name == "tree_language":
        _validate_tree(t)


# tree languages: levels named token, phrase, sentence, paragraph, section; longer sequences and
# larger exact references than these are refused before anything is built
MAX_TREE_LEVELS = 6
MAX_TREE_LENGTH = 4096
MAX_REFERENCE_GIB = 2.0


def tree_length(t: TaskConfig) -> int:
    """Tokens of a tree-language sequence: ``<bos>``, the units' leaves, the boundaries."""
    return (
        1
        + t.tree_units * t.tree_branching**t.tree_levels
        + (t.tree_units - 1) * int(t.tree_boundary)
    )


def _validate_tree(t: TaskConfig) -> None:
    """A tree language that can exist, and whose exact references fit in memory."""
    if not 1 <= t.tree_levels <= MAX_TREE_LEVELS:
        raise ConfigError(f"task.tree_levels must be in 1..{MAX_TREE_LEVELS}, got {t.tree_levels}")
    for name, low in (
        ("tree_vocab", 2),
        ("tree_rules", 1),
        ("tree_branching", 2),
        ("tree_units", 1),
    ):
        if getattr(t, name) < low:
            raise ConfigError(f"task.{name} must be >= {low}, got {getattr(t, name)}")
    if t.tree_branching**t.tree_levels * t.tree_units > MAX_TREE_LENGTH:
        raise ConfigError(
            f"a sequence of {t.tree_units} x {t.tree_branching}^{t.tree_levels} tokens is above "
            f"the limit of {MAX_TREE_LENGTH}: lower task.tree_levels, tree_branching or tree_units"
        )
    tuples = t.tree_vocab**t.tree_branching
    if t.tree_vocab * t.tree_rules > tuples:
        raise ConfigError(
            f"task.tree_rules={t.tree_rules} is more synonymous rules than distinct tuples: "
            f"{t.tree_vocab} symbols x {t.tree_rules} rules need {t.tree_vocab * t.tree_rules} "
            f"distinct {t.tree_branching}-tuples but only {tuples} exist (at most "
            f"{tuples // t.tree_vocab} rules)"
        )
    if t.tree_filter_rule not in ("marginal", "garnier_brun"):
        raise ConfigError(
            f"unknown task.tree_filter_rule {t.tree_filter_rule!r}; choose garnier_brun (the "
            "paper's: level-k nodes independent given the root) or marginal (ours)"
        )
    if not -1 <= t.tree_filter <= t.tree_levels:
        raise ConfigError(
            f"task.tree_filter must be -1 (no filtering) or a level in 0..{t.tree_levels}, "
            f"got {t.tree_filter}"
        )
    length = tree_length(t)
    vocab = 2 + int(t.tree_boundary) + t.tree_vocab
    sequences = min(t.n_train, t.n_test) + t.n_test + t.n_gen
    gib = (t.tree_levels + 1) * sequences * length * vocab * 8 / 2**30
    if gib > MAX_REFERENCE_GIB:
        raise ConfigError(
            f"the exact per-level references of the {sequences} evaluation sequences would take "
            f"{gib:.1f} GiB (limit {MAX_REFERENCE_GIB:g} GiB): lower task.n_test / task.n_gen, "
            "task.tree_units or task.tree_levels"
        )


def check_applicable(cfg: Config, keys: list[str]) -> None:
    """Raise ConfigError when a field set explicitly (``keys``) is one the run's task never
    reads: a modular-only field on a sequence run, or a sequence-only field on an algorithmic
    run (silently ignoring it would hide the mistake)."""
    seq = is_sequence(cfg.task)
    for key in keys:
        # a field that only registered tasks read (not one of a built-in family's)
        owners = [task for task, fields in TASK_FIELDS.items() if key in fields]
        own = key not in SEQUENCE_ONLY and key not in ALGORITHMIC_ONLY
        if own and owners and cfg.task.name not in owners:
            raise ConfigError(
                f"{key} applies only to the {' / '.join(owners)} task, not to {cfg.task.name!r}"
            )
        if seq and key in ALGORITHMIC_ONLY:
            raise ConfigError(f"{key} does not apply to the sequence task {cfg.task.name!r}")
        if not seq and key in SEQUENCE_ONLY:
            raise ConfigError(f"{key} applies only to sequence tasks, not to {cfg.task.name!r}")
        if key in TASK_FIELDS.get(cfg.task.name, ()):
            continue
        if seq and cfg.task.name != "dyck" and key in DYCK_ONLY:
            raise ConfigError(f"{key} applies only to the dyck task, not to {cfg.task.name!r}")
        if seq and cfg.task.name != "tree_language" and key in TREE_ONLY:
            raise ConfigError(
                f"{key} applies only to the tree_language task, not to {cfg.task.name!r}"
            )


# ---------------------------------------------------------------------------------------------
# presets


def _nanda2023() -> Config:
    """Nanda et al. (2023) main run: (a + b) mod 113, 30 % train, 1-layer transformer, 25k
    epochs (their public demo's length), a checkpoint every 100 epochs."""
    cfg = Config(preset="nanda2023")
    cfg.train.checkpoint_every = 100
    return cfg


def _quick() -> Config:
    """Delayed generalization in about two minutes on a 2-core CPU (see README for measurements).

    Same network family and optimizer as ``nanda2023`` with a smaller modulus and a higher
    learning rate so that the whole memorize-then-generalize arc fits in a few thousand epochs.
    Training goes on 1000 epochs past t_grok so that the cleanup phase is seen too.
    """
    cfg = Config(preset="quick")
    cfg.task.p = 59
    cfg.task.train_fraction = 0.4
    cfg.optim.lr = 3e-3
    cfg.train.epochs = 5000
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 50
    cfg.train.early_stop_after = 1000
    return cfg


def _mlp_quad() -> Config:
    """Gromov (2023): one hidden layer, x^2 activation, one-hot inputs, modular addition."""
    cfg = Config(preset="mlp_quad")
    cfg.task.p = 97
    cfg.task.train_fraction = 0.5
    cfg.model.kind = "mlp"
    cfg.model.d_embed = 0
    cfg.model.d_mlp = 512
    cfg.model.act = "quad"
    cfg.model.bias = False
    cfg.train.epochs = 3000
    cfg.train.eval_every = 10
    cfg.train.checkpoint_every = 100
    return cfg


def _murty(name: str, task: str, n_layers: int) -> Config:
    cfg = Config(preset=name)
    cfg.task.name = task
    m = cfg.model
    m.kind, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp = "lm", n_layers, 512, 4, 128, 512
    m.ln_position, m.positions, m.dropout = "post", "sinusoidal", 0.1
    o = cfg.optim
    # the released code's schedule: linear warm-up over the first 10k steps, then constant;
    # gradients clipped at norm 1
    o.lr, o.weight_decay, o.batch_size, o.warmup_steps, o.grad_clip = 1e-4, 0.0, 8, 10_000, 1.0
    r = cfg.train
    r.epochs, r.eval_every, r.checkpoint_every = 300_000, 3000, 3000
    r.mem_threshold, r.grok_threshold = 0.99, 0.8
    return cfg


def _murty_qf() -> Config:
    """Murty et al. (2023) question formation: 6-layer post-LN transformer LM, d_model 512,
    4 heads, d_ff 512, dropout 0.1, sinusoidal positions, AdamW lr 1e-4 without weight decay,
    warmed up linearly over the first 10k steps, gradients clipped at norm 1 (their released
    code), batch 8, 300k steps, evaluated every 3k steps (a GPU setting). One epoch of the loop
    is one optimizer step for sequence tasks."""
    return _murty("murty_qf", "question_formation", 6)


def _murty_tense() -> Config:
    """Murty et al. (2023) tense inflection: as :func:`_murty_qf` with 4 layers."""
    return _murty("murty_tense", "tense_inflection", 4)


def _structural_cpu() -> Config:
    """Structural grokking of question formation on a 2-core CPU (measured in
    docs/structural.md): :func:`_murty_qf` scaled down to 4 layers, d_model 128 (4 heads of 32),
    d_ff 512, batch 32, AdamW lr 2e-4 decayed linearly to 0 over 20k steps, 1k test and 1k
    generalization sentences, evaluated every 500 steps. Unlike the paper's schedule it has no
    warm-up and no gradient clipping: the runs measured in docs/structural.md trained so."""
    cfg = _murty("structural_cpu", "question_formation", 4)
    m = cfg.model
    m.d_model, m.n_heads, m.d_head, m.d_mlp = 128, 4, 32, 512
    o = cfg.optim
    o.lr, o.batch_size, o.lr_decay, o.warmup_steps, o.grad_clip = 2e-4, 32, "linear", 0, 0.0
    cfg.task.n_test, cfg.task.n_gen = 1000, 1000
    r = cfg.train
    r.epochs, r.eval_every, r.checkpoint_every = 20_000, 500, 2000
    return cfg


def _levels_cpu() -> Config:
    """Level-by-level learning of a 3-level tree language on a 2-core CPU (measured in
    docs/levels.md): Random Hierarchy Model L = 3, v = 32, m = 4, s = 2 (8 tokens a unit, two
    units a sequence with a boundary token), 64k training sequences; a 4-layer pre-LN causal
    transformer, d_model 64, AdamW lr 1e-3 with weight decay 0.1, batch 64, 6k steps, evaluated
    every 200 steps, 2k test and 2k generalization sequences."""
    cfg = Config(preset="levels_cpu")
    t = cfg.task
    t.name, t.tree_levels, t.tree_branching = "tree_language", 3, 2
    t.tree_vocab, t.tree_rules, t.tree_units, t.tree_boundary = 32, 4, 2, True
    t.n_train, t.n_dev, t.n_test, t.n_gen = 64000, 0, 2000, 2000
    m = cfg.model
    m.kind, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp = "lm", 4, 64, 4, 16, 256
    m.ln_position, m.positions = "pre", "learned"
    o = cfg.optim
    o.lr, o.weight_decay, o.batch_size, o.warmup_steps = 1e-3, 0.1, 64, 100
    r = cfg.train
    r.epochs, r.eval_every, r.checkpoint_every = 6000, 200, 500
    r.mem_threshold, r.grok_threshold = 0.95, 0.95
    return cfg


def _documents_cpu() -> Config:
    """Paragraphs, topics and boundaries on a 2-core CPU in minutes (docs/documents.md): the
    default document language (2 genres of 2 and 4 paragraphs, 6 topics of 6 words sharing 2,
    8 function words, 4 sentence templates, at most 4 sentences a paragraph) with unreliable
    markers, 20k training documents; a 2-layer pre-LN causal transformer, d_model 64, AdamW lr
    1e-3 with weight decay 0.1, batch 32, 3k steps, evaluated every 100 steps, 500 test and
    200 generalization documents."""
    cfg = Config(preset="documents_cpu")
    t = cfg.task
    t.name, t.doc_boundary = "documents", "unreliable"
    t.n_train, t.n_dev, t.n_test, t.n_gen = 20000, 0, 500, 200
    m = cfg.model
    m.kind, m.n_layers, m.d_model, m.n_heads, m.d_head, m.d_mlp = "lm", 2, 64, 4, 16, 256
    m.ln_position, m.positions = "pre", "learned"
    o = cfg.optim
    o.lr, o.weight_decay, o.batch_size, o.warmup_steps = 1e-3, 0.1, 32, 100
    r = cfg.train
    r.epochs, r.eval_every, r.checkpoint_every = 3000, 100, 250
    r.mem_threshold, r.grok_threshold = 0.95, 0.95
    return cfg


PRESETS = {
    "documents_cpu": _documents_cpu,
    "nanda2023": _nanda2023,
    "levels_cpu": _levels_cpu,
    "quick": _quick,
    "mlp_quad": _mlp_quad,
    "murty_qf": _murty_qf,
    "murty_tense": _murty_tense,
    "structural_cpu": _structural_cpu,
}


def preset(name: str) -> Config:
    """A fresh config for the named preset (``default`` is the plain defaults)."""
    if name == "default":
        return Config(preset="default")
    if name not in PRESETS:
        names = ", ".join(sorted([*PRESETS, "default"]))
        raise ConfigError(f"unknown preset {name!r}; choose one of {names}")
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# dotted overrides and (de)serialisation


def _field_types(obj: Any) -> dict[str, Any]:
    return typing.get_type_hints(type(obj))


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Turn the text of ``--set key=text`` into a value of the field's type."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        typ = args[0]
    try:
        if typ is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        return str(text)
    except ValueError:
        raise ConfigError(f"{key}: cannot read {text!r} as {typ.__name__}") from None


def set_field(cfg: Config, key: str, value: Any) -> None:
    """Set ``section.field`` (value given as text or already typed); unknown keys are errors."""
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in SECTIONS:
        raise ConfigError(
            f"unknown config field {key!r}; use section.field with section one of "
            f"{', '.join(SECTIONS)}"
        )
    section = getattr(cfg, parts[0])
    types_ = _field_types(section)
    if parts[1] not in types_:
        raise ConfigError(
            f"unknown config field {key!r}; {parts[0]} has {', '.join(sorted(types_))}"
        )
    if isinstance(value, str):
        value = parse_value(value, types_[parts[1]], key)
    elif types_[parts[1]] is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    setattr(section, parts[1], value)


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``key=value`` strings from the command line; a field the resulting task never reads
    is an error (:func:`check_applicable`)."""
    keys = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects field=value, got {item!r}")
        key, value = item.split("=", 1)
        set_field(cfg, key.strip(), value.strip())
        keys.append(key.strip())
    check_applicable(cfg, keys)
    return cfg


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict with every field written out."""
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of :func:`to_dict`; unknown keys are errors (a config from elsewhere is checked)."""
    cfg = Config()
    for key, value in data.items():
        if key == "preset":
            cfg.preset = str(value)
            continue
        if key not in SECTIONS or not isinstance(value, dict):
            raise ConfigError(f"unknown config section {key!r}; choose {', '.join(SECTIONS)}")
        for name, v in value.items():
            set_field(cfg, f"{key}.{name}", v)
    return cfg


def dumps(cfg: Config) -> str:
    """The config as indented JSON."""
    return json.dumps(to_dict(cfg), indent=2)


def field_reference() -> list[tuple[str, str, Any]]:
    """(dotted name, type name, default) for every field, for the README and ``--help``."""
    cfg = Config()
    rows = []
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for name, typ in _field_types(obj).items():
            rows.append(
                (f"{section}.{name}", getattr(typ, "__name__", str(typ)), getattr(obj, name))
            )
    return rows
