"""Models with TransformerLens-style named activations."""

from grokscope.config import ConfigError, ModelConfig
from grokscope.models.hooks import HookedModule
from grokscope.models.lm import LMTransformer
from grokscope.models.mlp import MLP
from grokscope.models.norms import weight_norm_sq
from grokscope.models.transformer import Transformer


def check_context(cfg: ModelConfig, n_ctx: int) -> None:
    """Raise ConfigError when a language model's set context cannot hold the task's longest
    sequence (``n_ctx``)."""
    if cfg.kind == "lm" and 0 < cfg.n_ctx < n_ctx:
        raise ConfigError(
            f"model.n_ctx={cfg.n_ctx} is shorter than the task's longest sequence ({n_ctx})"
        )


def build_model(cfg: ModelConfig, d_vocab: int, n_ctx: int, seed: int) -> HookedModule:
    """A freshly initialised model for a task with ``d_vocab`` tokens and ``n_ctx`` positions
    (for ``lm``, ``cfg.n_ctx`` when set, which must hold the task's longest sequence)."""
    if cfg.kind == "lm":
        check_context(cfg, n_ctx)
        model = LMTransformer(cfg, d_vocab=d_vocab, n_ctx=cfg.n_ctx or n_ctx)
        model.init_weights(seed)
        return model
    cls = Transformer if cfg.kind == "transformer" else MLP
    model = cls(cfg, d_vocab=d_vocab, n_ctx=n_ctx)
    model.init_weights(seed)
    return model


__all__ = [
    "MLP", "HookedModule", "LMTransformer", "Transformer", "build_model", "check_context",
    "weight_norm_sq",
]  # fmt: skip
