"""The prompt tasks, looked up by name in one registry (the way rewards are); the catalog tasks' builders live in
`sidrec.data.item_tasks`.

Each task is a `Task` entry in `TASKS`, added by `register_task`, with one builder signature for all:
``build(rows, catalog, source, max_description_words, style) -> list[PromptExample]``. Row tasks make one example per
CSV row (``rows``), catalog tasks one or more per item; each builder ignores the arguments it does not need. Whether
GRPO may prompt with a task is its entry's ``rl`` field, and `RL_TASKS` is derived from it. A YAML list such as
``sft_tasks: [sid_seq, item_alignment]`` selects tasks by name; `build_tasks` builds them in that order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sidrec.data.item_tasks import (
    ALIGNMENT_DIRECTIONS,
    TEXT_TO_SID,
    TITLE_WORD_SAMPLES,
    build_item_alignment,
    build_title_words,
    leaks_answer,
)
from sidrec.data.minionerec import Catalog, Interaction
from sidrec.data.prompts import DEFAULT_PROMPT_STYLE, PromptExample, check_prompt_style
from sidrec.errors import UserError

# re-exported: the catalog builders and their constants are used through this module too
__all__ = [
    "ALIGNMENT_DIRECTIONS", "RL_TASKS", "TASKS", "TEXT_TO_SID", "TITLE_WORD_SAMPLES", "RowTask", "Task",
    "build_item_alignment", "build_row_task", "build_sid_pairs", "build_sid_seq", "build_tasks", "build_title_words",
    "check_task_names", "leaks_answer", "register_row_task", "register_task", "rl_task_names",
]  # fmt: skip

logger = logging.getLogger(__name__)

# (rows, catalog, source, max_description_words, style) -> examples
TaskBuilder = Callable[[Sequence[Interaction], Catalog, str, int, str], list[PromptExample]]


@dataclass(frozen=True)
class Task:
    """A prompt task: ``build(rows, catalog, source, max_description_words, style)`` makes its examples.

    ``rl`` marks a task GRPO may prompt with: its answers are SIDs (`sidrec.data.prompts.to_rl_dataset` drops the
    examples of an ``rl`` task whose answer is not a SID, such as item_alignment's SID -> title).
    """

    name: str
    build: TaskBuilder
    rl: bool = False
    description: str = ""


TASKS: dict[str, Task] = {}


def register_task(name: str, rl: bool = False, description: str | None = None):
    """Register the decorated ``build(rows, catalog, source, max_description_words, style)`` as the task ``name``.

    The description defaults to the first line of the builder's docstring. Registering a name twice is an error.
    """

    def wrap(build: TaskBuilder) -> TaskBuilder:
        if name in TASKS:
            raise ValueError(f"task {name!r} is already registered")
        doc = (build.__doc__ or "").strip().split("\n")[0] if description is None else description
        TASKS[name] = Task(name, build, rl, doc)
        return build

    return wrap


def rl_task_names() -> tuple[str, ...]:
    """The registered tasks GRPO may prompt with, in registration order."""
    return tuple(n for n, t in TASKS.items() if t.rl)


# Row tasks: one example per CSV row.

SID_SEQ_INPUT = (
    "The user has interacted with items {history} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)
TITLE_SEQ_INPUT = "The user has interacted with the following items in chronological order: {history}."


@dataclass(frozen=True)
class RowTask:
    """A task built from one CSV row: which history it shows and what it answers."""

    instruction: str
    user_input: str
    history: Callable[[Interaction], tuple[str, ...]]
    completion: Callable[[Interaction], str]
    compact_tag: str  # the whole prompt in the compact style is "<tag>: <history>"
    keep: Callable[[Interaction], bool] | None = None  # rows the task uses (all when None)
    target: Callable[[Interaction], str] | None = None  # the SID the answer names (the row's next item when None)


ROW_TASKS: dict[str, RowTask] = {}


def register_row_task(name: str, task: RowTask, description: str, rl: bool = False) -> None:
    """Register ``task`` as the task ``name``: one example per CSV row it keeps (see `build_row_task`)."""

    def build(rows, catalog, source, max_description_words, style):
        return build_row_task(name, rows, source, style)

    register_task(name, rl, description)(build)
    ROW_TASKS[name] = task


def _sid_history(r: Interaction) -> tuple[str, ...]:
    return r.history_sids


def _title_history(r: Interaction) -> tuple[str, ...]:
    return tuple(f'"{t}"' for t in r.history_titles)


def _row_layout(task: RowTask, style: str) -> tuple[str, str, str]:
    """A row task's instruction, input template and history separator in ``style``."""
    if style == "compact":
        # Every SID starts with a first-level token, so SIDs need no separator between them.
        return task.compact_tag, "{history}", (", " if task.history is _title_history else "")
    return task.instruction, task.user_input, ", "


def build_row_task(
    name: str, rows: Sequence[Interaction], source: str = "", style: str = DEFAULT_PROMPT_STYLE
) -> list[PromptExample]:
    """One example of the row task ``name`` per CSV row; ``source`` (the file) goes into error messages."""
    check_prompt_style(style)
    task = ROW_TASKS[name]
    instruction, user_input, sep = _row_layout(task, style)
    return [
        PromptExample(
            task=name,
            instruction=instruction,
            user_input=user_input,
            history=task.history(r),
            completion=task.completion(r),
            target_sid=r.item_sid if task.target is None else task.target(r),
            source=f"{source}, row {i}",
            style=style,
            history_sep=sep,
            row=i,
        )
        for i, r in enumerate(rows, start=1)
        if task.keep is None or task.keep(r)
    ]


def build_sid_seq(
    rows: Sequence[Interaction], source: str = "", style: str = DEFAULT_PROMPT_STYLE
) -> list[PromptExample]:
    """History SIDs -> next item's SID: the main task, and the one evaluated."""
    return build_row_task("sid_seq", rows, source, style)


NEXT_ITEM = "Can you predict the next possible item that the user may expect?"
register_row_task(
    "sid_seq",
    RowTask(NEXT_ITEM, SID_SEQ_INPUT, _sid_history, lambda r: r.item_sid, "next item"),
    "history SIDs -> next item's SID: the main task, and the one evaluated",
    rl=True,
)
# The item-to-item transition, which carries most of the signal on sparse data, as its own training signal. Every
# row gives one, one-item histories too (their example repeats sid_seq's): leaving them out under-weighted each user's
# first transition against the rest, and the model learnt a different "what follows item X" than the data holds
# (docs/tuning, round 5).
register_row_task(
    "sid_last",
    RowTask(NEXT_ITEM, SID_SEQ_INPUT, lambda r: r.history_sids[-1:], lambda r: r.item_sid, "next item"),
    "the last history SID alone -> next item's SID",
    rl=True,
)
# Item-to-item co-occurrence under its own tag, for items the data never shows followed by anything (a user's last
# train target is the last history item of that user's valid row).
register_row_task(
    "sid_prev",
    RowTask(
        "Which item did the user interact with just before this one?",
        "The user then interacted with {history}.",
        lambda r: (r.item_sid,),
        lambda r: r.history_sids[-1],
        "previous item",
        keep=lambda r: bool(r.history_sids),
        target=lambda r: r.history_sids[-1],
    ),
    "the transition read backwards: an item's SID -> the SID of the item the user had just before it",
)
register_row_task(
    "title_seq2sid",
    RowTask(
        "Based on the titles of the items the user interacted with, predict the semantic ID of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_sid,
        "titles to next item",
    ),
    "history titles -> next item's SID",
    rl=True,
)
register_row_task(
    "title_seq2title",
    RowTask(
        "Based on the titles of the items the user interacted with, predict the title of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_title,
        "titles to next title",
    ),
    "history titles -> next item's title",
)
register_row_task(
    "fusion",
    RowTask(
        "Predict the title of the next item that the user may expect.",
        SID_SEQ_INPUT,
        _sid_history,
        lambda r: r.item_title,
        "next title",
    ),
    "history SIDs -> next item's title",
)


def build_sid_pairs(
    rows: Sequence[Interaction], source: str = "", style: str = DEFAULT_PROMPT_STYLE
) -> list[PromptExample]:
    """Every consecutive pair of each row's items (history, then the target) as a one-item ``sid_last`` example.

    A transition is seen as often as the last-item transition rule counts it: a pair early in a user's sequence is in
    every later row of that user, so it comes once per such row.
    """
    check_prompt_style(style)
    instruction, user_input, sep = _row_layout(ROW_TASKS["sid_last"], style)
    out = []
    for i, r in enumerate(rows, start=1):
        seq = (*r.history_sids, r.item_sid)
        for a, b in zip(seq, seq[1:], strict=False):
            out.append(
                PromptExample(
                    "sid_pairs", instruction, user_input, b, b, (a,), f"{source}, row {i}", style, history_sep=sep
                )
            )
    return out


@register_task("sid_pairs")
def _sid_pairs(rows, catalog, source, max_description_words, style):
    """Every consecutive SID pair of each row as a one-item sid_last example."""
    return build_sid_pairs(rows, source, style)


# Catalog tasks: examples per item.


@register_task("item_alignment", rl=True)
def _item_alignment(rows, catalog, source, max_description_words, style):
    """Title -> SID, description -> SID and SID -> title, one of each per item."""
    return build_item_alignment(catalog, max_description_words, style)


@register_task("text_to_sid")
def _text_to_sid(rows, catalog, source, max_description_words, style):
    """Title -> SID and description -> SID, one of each per item (item_alignment without SID -> title)."""
    return build_item_alignment(catalog, max_description_words, style, TEXT_TO_SID)


@register_task("title_words")
def _title_words(rows, catalog, source, max_description_words, style):
    """Random halves of each item's title words -> its SID."""
    return build_title_words(catalog, style)


# The built-in tasks GRPO may prompt with (their answers are SIDs); `rl_task_names` also sees later registrations.
RL_TASKS = rl_task_names()


def check_task_names(names: Sequence[str], allowed: Iterable[str] | None = None, field: str = "tasks") -> None:
    """Raise a one-line `UserError` naming ``field`` when ``names`` is empty or has a name outside ``allowed``.

    ``allowed`` defaults to every registered task; pass `rl_task_names()` for the tasks GRPO may use.

    Example:
        >>> check_task_names(["sid_seq", "fusion"], RL_TASKS, "rl_tasks")
        Traceback (most recent call last):
        ...
        sidrec.errors.UserError: rl_tasks ['sid_seq', 'fusion']: unknown or not allowed ['fusion']; allowed: sid_seq, sid_last, title_seq2sid, item_alignment
    """
    allowed = tuple(TASKS if allowed is None else allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(
            f"{field} {list(names)}: "
            + (f"unknown or not allowed {unknown}" if unknown else "empty")
            + f"; allowed: {', '.join(allowed)}"
        )


def build_tasks(
    names: Sequence[str],
    rows: Sequence[Interaction],
    catalog: Catalog,
    source: str = "",
    max_description_words: int = 32,
    style: str = DEFAULT_PROMPT_STYLE,
) -> list[PromptExample]:
    """Build the named tasks' examples over ``rows`` (row tasks) and the catalog (catalog tasks), in ``style``."""
    check_task_names(names)
    out: list[PromptExample] = []
    for name in names:
        out.extend(TASKS[name].build(rows, catalog, source, max_description_words, style))
    return out
