"""Datasets in MiniOneRec's layout, prompt builders, and the synthetic default dataset."""

from sidrec.data.minionerec import (
    Catalog,
    DataValidationError,
    Interaction,
    Item,
    RecDataset,
    last_history,
    load_rec_dataset,
)
from sidrec.data.prompts import TASKS, PromptExample, build_tasks, fit_to_length, format_prompt

__all__ = [
    "TASKS",
    "Catalog",
    "DataValidationError",
    "Interaction",
    "Item",
    "PromptExample",
    "RecDataset",
    "build_tasks",
    "fit_to_length",
    "format_prompt",
    "last_history",
    "load_rec_dataset",
]
