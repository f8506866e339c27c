"""Tasks: pure data (example table, labels, seeded split); no models here."""

from grokscope.tasks.dataset import Dataset, split_indices
from grokscope.tasks.dyck import dyck_task
from grokscope.tasks.modular import modular_labels, modular_task
from grokscope.tasks.parity import sparse_parity_task
from grokscope.tasks.permutation import permutation_task
from grokscope.tasks.question_formation import question_formation_task
from grokscope.tasks.sequence import SequenceDataset
from grokscope.tasks.tense_inflection import tense_inflection_task
from grokscope.tasks.tree_language import tree_language_task

__all__ = [
    "Dataset",
    "SequenceDataset",
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
