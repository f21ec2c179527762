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
from sidrec.data.prompts import PromptExample, fit_to_length, format_prompt
from sidrec.data.tasks import RL_TASKS, TASKS, Task, build_tasks, register_task, rl_task_names

__all__ = [
    "RL_TASKS",
    "TASKS",
    "Catalog",
    "DataValidationError",
    "Interaction",
    "Item",
    "PromptExample",
    "RecDataset",
    "Task",
    "build_tasks",
    "fit_to_length",
    "format_prompt",
    "last_history",
    "load_rec_dataset",
    "register_task",
    "rl_task_names",
]
