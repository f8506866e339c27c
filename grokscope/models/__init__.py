"""Models with TransformerLens-style named activations."""

from grokscope.config import ModelConfig
from grokscope.models.hooks import HookedModule
from grokscope.models.mlp import MLP
from grokscope.models.transformer import Transformer


def build_model(cfg: ModelConfig, d_vocab: int, n_ctx: int, seed: int) -> HookedModule:
    """A freshly initialised model for a task with ``d_vocab`` tokens and ``n_ctx`` positions."""
    cls = Transformer if cfg.kind == "transformer" else MLP
    model = cls(cfg, d_vocab=d_vocab, n_ctx=n_ctx)
    model.init_weights(seed)
    return model


__all__ = ["MLP", "HookedModule", "Transformer", "build_model"]
