"""Tasks: pure data (example table, labels, seeded split); no models here."""

from grokscope.config import TaskConfig
from grokscope.tasks.dataset import Dataset, split_indices
from grokscope.tasks.dyck import dyck_task
from grokscope.tasks.modular import modular_labels, modular_task
from grokscope.tasks.parity import sparse_parity_task
from grokscope.tasks.permutation import permutation_task
from grokscope.tasks.question_formation import question_formation_task
from grokscope.tasks.sequence import SequenceDataset
from grokscope.tasks.tense_inflection import tense_inflection_task
from grokscope.tasks.tree_language import tree_language_task


def build_dataset(cfg: TaskConfig) -> Dataset | SequenceDataset:
    """The dataset a (resolved, validated) task config describes."""
    sizes = (cfg.n_train, cfg.n_dev, cfg.n_test, cfg.n_gen, cfg.data_seed)
    if cfg.name == "question_formation":
        return question_formation_task(*sizes)
    if cfg.name == "tense_inflection":
        return tense_inflection_task(*sizes)
    if cfg.name == "dyck":
        return dyck_task(cfg.dyck_k, cfg.dyck_depth, *sizes, max_len=cfg.max_len)
    if cfg.name == "tree_language":
        return tree_language_task(
            cfg.tree_levels,
            cfg.tree_vocab,
            cfg.tree_rules,
            cfg.tree_branching,
            cfg.tree_levels if cfg.tree_filter < 0 else cfg.tree_filter,
            cfg.tree_units,
            cfg.tree_boundary,
            *sizes,
        )
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
    "SequenceDataset",
    "build_dataset",
    "dyck_task",
    "question_formation_task",
    "tense_inflection_task",
    "tree_language_task",
    "modular_labels",
    "modular_task",
    "permutation_task",
    "sparse_parity_task",
    "split_indices",
]
