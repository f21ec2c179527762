"""Prompt/completion builders for the SFT (and RL) tasks.

The prompts keep the meaning of MiniOneRec's (``### Instruction:``, the user input, ``### Response:``) without its
generic Alpaca preamble sentence, which costs ~30 tokens per example and says nothing about the task. The completion
is the answer alone, and TRL appends EOS. Tasks are looked up by name, so a YAML list such as
``sft_tasks: [sid_seq, item_alignment]`` selects them.
"""

from __future__ import annotations

import ast
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sidrec.data.minionerec import Catalog, Interaction
from sidrec.utils import UserError

logger = logging.getLogger(__name__)

SID_SEQ_INPUT = (
    "The user has interacted with items {history} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)
TITLE_SEQ_INPUT = "The user has interacted with the following items in chronological order: {history}."


def format_prompt(instruction: str, user_input: str) -> str:
    r"""Render MiniOneRec's prompt layout; the model's answer follows the final newline.

    Example:
    >>> format_prompt("Do X.", "Some input.")
    '### Instruction:\nDo X.\n\n### User Input:\nSome input.\n\n### Response:\n'
    """
    return f"### Instruction:\n{instruction}\n\n### User Input:\n{user_input}\n\n### Response:\n"


@dataclass(frozen=True)
class PromptExample:
    """One example before tokenization; ``history`` entries (oldest first) can be dropped from the left to fit."""

    task: str
    instruction: str
    user_input: str  # contains "{history}" when `history` is non-empty
    completion: str
    target_sid: str = ""
    history: tuple[str, ...] = ()
    source: str = ""  # "file, row N" or "item ID", for error messages

    def prompt(self, drop: int = 0) -> str:
        text = (
            self.user_input.replace("{history}", ", ".join(self.history[drop:])) if self.history else self.user_input
        )
        return format_prompt(self.instruction, text)


class PromptTooLongError(UserError):
    pass


def _quoted(title: str) -> str:
    return f'"{title}"'


def clean_description(text: str, max_words: int) -> str:
    # MiniOneRec's item.json stores descriptions as the repr of a list of paragraphs.
    if text.startswith("["):
        try:
            parts = ast.literal_eval(text)
            if isinstance(parts, list):
                text = " ".join(str(p) for p in parts)
        except (ValueError, SyntaxError):
            pass
    words = text.split()
    return " ".join(words[:max_words])


@dataclass(frozen=True)
class RowTask:
    """A task built from one CSV row: which history it shows and what it answers."""

    instruction: str
    user_input: str
    history: Callable[[Interaction], tuple[str, ...]]
    completion: Callable[[Interaction], str]


def _sid_history(r: Interaction) -> tuple[str, ...]:
    return r.history_sids


def _title_history(r: Interaction) -> tuple[str, ...]:
    return tuple(_quoted(t) for t in r.history_titles)


ROW_TASKS: dict[str, RowTask] = {
    # history SIDs -> next item's SID: the main task, and the one evaluated
    "sid_seq": RowTask(
        "Can you predict the next possible item that the user may expect?",
        SID_SEQ_INPUT,
        _sid_history,
        lambda r: r.item_sid,
    ),
    # history titles -> next item's SID
    "title_seq2sid": RowTask(
        "Based on the titles of the items the user interacted with, predict the semantic ID of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_sid,
    ),
    # history titles -> next item's title
    "title_seq2title": RowTask(
        "Based on the titles of the items the user interacted with, predict the title of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_title,
    ),
    # history SIDs -> next item's title
    "fusion": RowTask(
        "Predict the title of the next item that the user may expect.",
        SID_SEQ_INPUT,
        _sid_history,
        lambda r: r.item_title,
    ),
}


def build_row_task(name: str, rows: Sequence[Interaction], source: str = "") -> list[PromptExample]:
    """One example of the row task ``name`` per CSV row; ``source`` (the file) goes into error messages."""
    task = ROW_TASKS[name]
    return [
        PromptExample(
            task=name,
            instruction=task.instruction,
            user_input=task.user_input,
            history=task.history(r),
            completion=task.completion(r),
            target_sid=r.item_sid,
            source=f"{source}, row {i}",
        )
        for i, r in enumerate(rows, start=1)
    ]


def build_sid_seq(rows: Sequence[Interaction], source: str = "") -> list[PromptExample]:
    """History SIDs -> next item's SID: the main task, and the one evaluated."""
    return build_row_task("sid_seq", rows, source)


def build_item_alignment(catalog: Catalog, max_description_words: int = 32) -> list[PromptExample]:
    """Title -> SID, description -> SID and SID -> title, one of each per item.

    SID -> title is skipped for SIDs shared by several items (the answer would be ambiguous). An example whose answer
    appears in its own input is dropped: the model must not learn to copy.
    """
    instruction = "Answer the question about item identification."
    sid_counts = Counter(item.sid for item in catalog.items.values())
    out: list[PromptExample] = []
    for item in catalog.items.values():
        src = f"item {item.item_id}"
        out.append(
            PromptExample(
                "item_alignment",
                instruction,
                f"Which item has the title: {item.title}?",
                item.sid,
                item.sid,
                source=src,
            )
        )
        desc = clean_description(item.description, max_description_words)
        if desc:
            text = f"An item can be described as follows: {desc} Which item is it describing?"
            out.append(PromptExample("item_alignment", instruction, text, item.sid, item.sid, source=src))
        if sid_counts[item.sid] == 1 and item.title:
            text = f'What is the title of item "{item.sid}"?'
            out.append(PromptExample("item_alignment", instruction, text, item.title, item.sid, source=src))
    kept = [ex for ex in out if not leaks_answer(ex)]
    if len(kept) < len(out):
        logger.info(
            "item_alignment: dropped %d examples whose answer appears in their own input", len(out) - len(kept)
        )
    return kept


def leaks_answer(example: PromptExample) -> bool:
    """True when the completion is written out in the example's own input (a leak for alignment tasks)."""
    answer = example.completion.strip()
    return bool(answer) and answer in example.prompt().split("### User Input:\n", 1)[1]


CATALOG_TASKS = {"item_alignment": build_item_alignment}
TASKS = (*ROW_TASKS, *CATALOG_TASKS)


def check_task_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise UserError(f"unknown task name(s) {unknown}; known tasks: {list(TASKS)}")
    if not names:
        raise UserError(f"at least one task is needed; known tasks: {list(TASKS)}")


def build_tasks(
    names: Sequence[str],
    rows: Sequence[Interaction],
    catalog: Catalog,
    source: str = "",
    max_description_words: int = 32,
) -> list[PromptExample]:
    """Build the named tasks' examples over ``rows`` (row tasks) and the catalog (catalog tasks)."""
    check_task_names(names)
    out: list[PromptExample] = []
    for name in names:
        if name in ROW_TASKS:
            out.extend(build_row_task(name, rows, source))
        else:
            out.extend(build_item_alignment(catalog, max_description_words))
    return out


def fit_to_length(examples: Sequence[PromptExample], tokenizer, max_length: int | None) -> list[dict]:
    """Render examples, dropping the oldest history entries until prompt + completion + EOS fits ``max_length``.

    TRL truncates from the right, which would cut the answer; histories are trimmed from the left instead.

    Returns:
        `list[dict]`: records with ``prompt``, ``completion``, ``task`` and ``target_sid``.

    Raises:
        PromptTooLongError: When an example does not fit even with one history entry left.
    """
    prompts = [ex.prompt() for ex in examples]
    drops = [0] * len(examples)
    if max_length is not None and examples:
        lengths = _lengths(tokenizer, [p + ex.completion for p, ex in zip(prompts, examples, strict=True)])
        for i, ex in enumerate(examples):
            while lengths[i] + 1 > max_length:
                if len(ex.history) - drops[i] <= 1:
                    raise PromptTooLongError(
                        f"{ex.source}: task '{ex.task}' needs {lengths[i] + 1} tokens with "
                        f"{len(ex.history) - drops[i]} history item(s) left, more than max_length={max_length}"
                    )
                drops[i] += 1
                prompts[i] = ex.prompt(drops[i])
                lengths[i] = _lengths(tokenizer, [prompts[i] + ex.completion])[0]
        trimmed = sum(1 for d in drops if d)
        if trimmed:
            logger.info(
                "trimmed the oldest history items of %d/%d examples to fit max_length=%d",
                trimmed,
                len(examples),
                max_length,
            )
    return [
        {"prompt": p, "completion": ex.completion, "task": ex.task, "target_sid": ex.target_sid}
        for p, ex in zip(prompts, examples, strict=True)
    ]


def _lengths(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def to_hf_dataset(records: Sequence[dict]):
    """A `datasets.Dataset` with the ``prompt``/``completion`` columns TRL's SFTTrainer expects."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in records], "completion": [r["completion"] for r in records]}
    )
