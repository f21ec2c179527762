"""Prompt/completion builders for the SFT (and RL) tasks.

Two prompt styles:

- ``minionerec`` keeps the meaning of MiniOneRec's prompts (``### Instruction:``, the user input, ``### Response:``)
  without its generic Alpaca preamble sentence, which costs ~30 tokens per example and says nothing about the task.
  This is the style for pretrained LMs, which can read the instructions.
- ``compact`` is a short task tag and the input alone, e.g. ``next item: <a_1><b_2><c_3><a_4><b_5><c_6>``. A
  from-scratch model cannot read instructions; for it they are ~45 constant tokens of a ~70-token example.

The completion is the answer alone, and TRL appends EOS. Tasks are looked up by name, so a YAML list such as
``sft_tasks: [sid_seq, item_alignment]`` selects them. The style is chosen at SFT and stored in the checkpoint's
config (see `sidrec.models.metadata.CheckpointMetadata`), so GRPO and eval prompt a model the way it was trained.
"""

from __future__ import annotations

import ast
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sidrec.data.minionerec import Catalog, Interaction
from sidrec.errors import UserError

logger = logging.getLogger(__name__)

SID_SEQ_INPUT = (
    "The user has interacted with items {history} in chronological order. "
    "Can you predict the next possible item that the user may expect?"
)
TITLE_SEQ_INPUT = "The user has interacted with the following items in chronological order: {history}."
PROMPT_STYLES = ("minionerec", "compact")
DEFAULT_PROMPT_STYLE = "minionerec"


def check_prompt_style(style: str) -> None:
    if style not in PROMPT_STYLES:
        raise UserError(f"prompt_style must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")


def format_prompt(instruction: str, user_input: str, style: str = DEFAULT_PROMPT_STYLE) -> str:
    r"""Render a prompt in ``style``; the model's answer follows the final newline.

    Example:
    >>> format_prompt("Do X.", "Some input.")
    '### Instruction:\nDo X.\n\n### User Input:\nSome input.\n\n### Response:\n'
    >>> format_prompt("next item", "<a_1><b_2>", "compact")
    'next item: <a_1><b_2>\n'
    """
    if style == "compact":
        return f"{instruction}: {user_input}\n"
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
    style: str = DEFAULT_PROMPT_STYLE
    history_sep: str = ", "

    def user_text(self, drop: int = 0) -> str:
        """The user input with the history (minus its ``drop`` oldest entries) filled in."""
        if not self.history:
            return self.user_input
        return self.user_input.replace("{history}", self.history_sep.join(self.history[drop:]))

    def prompt(self, drop: int = 0) -> str:
        return format_prompt(self.instruction, self.user_text(drop), self.style)


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
    compact_tag: str  # the whole prompt in the compact style is "<tag>: <history>"
    keep: Callable[[Interaction], bool] | None = None  # rows the task uses (all when None)
    target: Callable[[Interaction], str] | None = None  # the SID the answer names (the row's next item when None)


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
        "next item",
    ),
    # the same question with only the last history item shown: the item-to-item transition, which carries most of
    # the signal on sparse data, as its own training signal. Every row gives one, one-item histories too (their
    # example repeats sid_seq's): leaving them out under-weighted each user's first transition against the rest,
    # and the model learnt a different "what follows item X" than the data holds (docs/tuning, round 5).
    "sid_last": RowTask(
        "Can you predict the next possible item that the user may expect?",
        SID_SEQ_INPUT,
        lambda r: r.history_sids[-1:],
        lambda r: r.item_sid,
        "next item",
    ),
    # the transition read backwards: one item -> the item the user had just before it. Item-to-item co-occurrence
    # under its own tag, for items the data never shows followed by anything (a user's last train target is the
    # last history item of that user's valid row).
    "sid_prev": RowTask(
        "Which item did the user interact with just before this one?",
        "The user then interacted with {history}.",
        lambda r: (r.item_sid,),
        lambda r: r.history_sids[-1],
        "previous item",
        keep=lambda r: bool(r.history_sids),
        target=lambda r: r.history_sids[-1],
    ),
    # history titles -> next item's SID
    "title_seq2sid": RowTask(
        "Based on the titles of the items the user interacted with, predict the semantic ID of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_sid,
        "titles to next item",
    ),
    # history titles -> next item's title
    "title_seq2title": RowTask(
        "Based on the titles of the items the user interacted with, predict the title of the next item.",
        TITLE_SEQ_INPUT,
        _title_history,
        lambda r: r.item_title,
        "titles to next title",
    ),
    # history SIDs -> next item's title
    "fusion": RowTask(
        "Predict the title of the next item that the user may expect.",
        SID_SEQ_INPUT,
        _sid_history,
        lambda r: r.item_title,
        "next title",
    ),
}


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
        )
        for i, r in enumerate(rows, start=1)
        if task.keep is None or task.keep(r)
    ]


def build_sid_seq(
    rows: Sequence[Interaction], source: str = "", style: str = DEFAULT_PROMPT_STYLE
) -> list[PromptExample]:
    """History SIDs -> next item's SID: the main task, and the one evaluated."""
    return build_row_task("sid_seq", rows, source, style)


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


ALIGNMENT_DIRECTIONS = ("title_to_sid", "description_to_sid", "sid_to_title")


def build_item_alignment(
    catalog: Catalog,
    max_description_words: int = 32,
    style: str = DEFAULT_PROMPT_STYLE,
    directions: Sequence[str] = ALIGNMENT_DIRECTIONS,
) -> list[PromptExample]:
    """Title -> SID, description -> SID and SID -> title (the ``directions`` asked for), one of each per item.

    SID -> title is skipped for SIDs shared by several items (the answer would be ambiguous). An example whose answer
    appears in its own input is dropped: the model must not learn to copy.
    """
    check_prompt_style(style)
    compact = style == "compact"
    instruction = "Answer the question about item identification."
    sid_counts = Counter(item.sid for item in catalog.items.values())
    out: list[PromptExample] = []

    def add(compact_tag: str, text: str, completion: str, item) -> None:
        out.append(
            PromptExample(
                "item_alignment",
                compact_tag if compact else instruction,
                text,
                completion,
                item.sid,
                source=f"item {item.item_id}",
                style=style,
            )
        )

    for item in catalog.items.values():
        if "title_to_sid" in directions:
            title = item.title if compact else f"Which item has the title: {item.title}?"
            add("title to item", title, item.sid, item)
        desc = clean_description(item.description, max_description_words)
        if desc and "description_to_sid" in directions:
            text = desc if compact else f"An item can be described as follows: {desc} Which item is it describing?"
            add("description to item", text, item.sid, item)
        if "sid_to_title" in directions and sid_counts[item.sid] == 1 and item.title:
            add("item to title", item.sid if compact else f'What is the title of item "{item.sid}"?', item.title, item)
    kept = [ex for ex in out if not leaks_answer(ex)]
    if len(kept) < len(out):
        logger.info(
            "item_alignment: dropped %d examples whose answer appears in their own input", len(out) - len(kept)
        )
    return kept


def leaks_answer(example: PromptExample) -> bool:
    """True when the completion is written out in the example's own input (a leak for alignment tasks)."""
    answer = example.completion.strip()
    return bool(answer) and answer in example.user_text()


TITLE_WORD_SAMPLES = 2


def build_title_words(catalog: Catalog, style: str = DEFAULT_PROMPT_STYLE) -> list[PromptExample]:
    r"""Partial title -> SID: per item, ``TITLE_WORD_SAMPLES`` random halves of its title words (order kept).

    An augmentation of title -> SID, so that the SID is learnt from the title's words rather than from one fixed
    string. The word choice is seeded by the item ID, so a catalog always gives the same examples. Titles under
    4 words are skipped (half of them would be hardly any text).

    Example:
    >>> from sidrec.data.minionerec import Item
    >>> from sidrec.sid import SidVocab
    >>> item = Item("7", "<a_1><b_2><c_3>", "Red PLA Filament 1.75mm 1kg Spool")
    >>> cat = Catalog(items={"7": item}, vocab=SidVocab.from_sids([item.sid]))
    >>> [ex.prompt() for ex in build_title_words(cat, "compact")]
    ['title words to item: Red Filament Spool\n', 'title words to item: Red PLA 1kg\n']
    """
    check_prompt_style(style)
    instruction = "title words to item" if style == "compact" else "Answer the question about item identification."
    out = []
    for item in catalog.items.values():
        words = item.title.split()
        if len(words) < 4:
            continue
        for j in range(TITLE_WORD_SAMPLES):
            rng = random.Random(f"{item.item_id}/{j}")
            keep = sorted(rng.sample(range(len(words)), len(words) // 2))
            text = " ".join(words[i] for i in keep)
            if style != "compact":
                text = f"Which item has a title with the words: {text}?"
            out.append(
                PromptExample(
                    "title_words", instruction, text, item.sid, item.sid, source=f"item {item.item_id}", style=style
                )
            )
    return [ex for ex in out if not leaks_answer(ex)]


# Catalog tasks by name: (catalog, max_description_words, style) -> examples. text_to_sid is item_alignment's
# title -> SID and description -> SID examples, without SID -> title (whose title answers are most of the alignment's
# labelled tokens).
TEXT_TO_SID = ("title_to_sid", "description_to_sid")
CATALOG_TASKS: dict[str, Callable[[Catalog, int, str], list[PromptExample]]] = {
    "item_alignment": lambda catalog, words, style: build_item_alignment(catalog, words, style),
    "text_to_sid": lambda catalog, words, style: build_item_alignment(catalog, words, style, TEXT_TO_SID),
    "title_words": lambda catalog, words, style: build_title_words(catalog, style),
}
TASKS = (*ROW_TASKS, "sid_pairs", *CATALOG_TASKS)
# Tasks with SID answers (GRPO prompts; item_alignment's SID -> title examples are dropped there).
RL_TASKS = ("sid_seq", "sid_last", "title_seq2sid", "item_alignment")


def check_task_names(names: Sequence[str], allowed: Sequence[str] = TASKS, field: str = "tasks") -> None:
    """Raise a one-line `UserError` naming ``field`` when ``names`` is empty or has a name outside ``allowed``.

    Example:
        >>> check_task_names(["sid_seq", "fusion"], RL_TASKS, "rl_tasks")
        Traceback (most recent call last):
        ...
        sidrec.errors.UserError: rl_tasks ['sid_seq', 'fusion']: unknown or not allowed ['fusion']; allowed: sid_seq, sid_last, title_seq2sid, item_alignment
    """
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
        if name in ROW_TASKS:
            out.extend(build_row_task(name, rows, source, style))
        elif name == "sid_pairs":
            out.extend(build_sid_pairs(rows, source, style))
        else:
            out.extend(CATALOG_TASKS[name](catalog, max_description_words, style))
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


def to_rl_dataset(records: Sequence[dict]):
    """A `datasets.Dataset` of GRPO prompts (``prompt``, ``target_sid``): the records whose answer is a SID."""
    from datasets import Dataset

    keep = [r for r in records if r["completion"] == r["target_sid"]]
    return Dataset.from_dict({"prompt": [r["prompt"] for r in keep], "target_sid": [r["target_sid"] for r in keep]})


def to_hf_dataset(records: Sequence[dict]):
    """A `datasets.Dataset` with the ``prompt``/``completion`` columns TRL's SFTTrainer expects."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in records], "completion": [r["completion"] for r in records]}
    )
