"""Tasks: pure data (example table, labels, seeded split); no models here."""

from grokscope.config import TaskConfig
from grokscope.tasks.dataset import Dataset, split_indices
from grokscope.tasks.modular import modular_labels, modular_task
from grokscope.tasks.parity import sparse_parity_task
from grokscope.tasks.permutation import permutation_task


def build_dataset(cfg: TaskConfig) -> Dataset:
    """The dataset a (resolved, validated) task config describes."""
    if cfg.name == "modular":
        return modular_task(cfg.op, cfg.p, cfg.train_fraction, cfg.data_seed)
    if cfg.name == "permutation":
        return permutation_task(cfg.op, cfg.group_n, cfg.train_fraction, cfg.data_seed)
    if cfg.name == "sparse_parity":
        return sparse_parity_task(
            cfg.n_bits, cfg.k_bits, cfg.n_samples, cfg.train_fraction, cfg.data_seed
        )
    raise ValueError(f"unknown task {cfg.name!r}")


__all__ = [
    "Dataset",
    "build_dataset",
    "modular_labels",
    "modular_task",
    "permutation_task",
    "sparse_parity_task",
    "split_indices",
]
