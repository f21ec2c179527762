"""Prompt formatting for the SFT (and RL) examples: prompt styles, `PromptExample`, trimming to ``max_length``.

Two prompt styles:

- ``minionerec`` keeps the meaning of MiniOneRec's prompts (``### Instruction:``, the user input, ``### Response:``)
  without its generic Alpaca preamble sentence, which costs ~30 tokens per example and says nothing about the task.
  This is the style for pretrained LMs, which can read the instructions.
- ``compact`` is a short task tag and the input alone, e.g. ``next item: <a_1><b_2><c_3><a_4><b_5><c_6>``. A
  from-scratch model cannot read instructions; for it they are ~45 constant tokens of a ~70-token example.

The completion is the answer alone, and TRL appends EOS. The style is chosen at SFT and stored in the checkpoint's
config (see `sidrec.models.metadata.CheckpointMetadata`), so GRPO and eval prompt a model the way it was trained. The
tasks that build the examples are registered in `sidrec.data.tasks`.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sidrec.errors import UserError

logger = logging.getLogger(__name__)

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
    row: int = 0  # the 1-based CSV row of a row task's example (0: a catalog task's); GRPO's cf reward reads it

    def user_text(self, drop: int = 0) -> str:
        """The user input with the history (minus its ``drop`` oldest entries) filled in."""
        if not self.history:
            return self.user_input
        return self.user_input.replace("{history}", self.history_sep.join(self.history[drop:]))

    def prompt(self, drop: int = 0) -> str:
        return format_prompt(self.instruction, self.user_text(drop), self.style)


class PromptTooLongError(UserError):
    pass


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


def fit_to_length(examples: Sequence[PromptExample], tokenizer, max_length: int | None) -> list[dict]:
    """Render examples, dropping the oldest history entries until prompt + completion + EOS fits ``max_length``.

    TRL truncates from the right, which would cut the answer; histories are trimmed from the left instead.

    Returns:
        `list[dict]`: records with ``prompt``, ``completion``, ``task``, ``target_sid`` and ``row``.

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
        {"prompt": p, "completion": ex.completion, "task": ex.task, "target_sid": ex.target_sid, "row": ex.row}
        for p, ex in zip(prompts, examples, strict=True)
    ]


def _lengths(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts)["input_ids"]]


def to_rl_dataset(records: Sequence[dict]):
    """A `datasets.Dataset` of GRPO prompts (``prompt``, ``target_sid``, ``row``): the records whose answer is a SID.
    ``row`` (the prompt's 1-based row of GRPO's rows, 0 for a catalog task) reaches the reward functions."""
    from datasets import Dataset

    keep = [r for r in records if r["completion"] == r["target_sid"]]
    return Dataset.from_dict({key: [r[key] for r in keep] for key in ("prompt", "target_sid", "row")})


def to_hf_dataset(records: Sequence[dict]):
    """A `datasets.Dataset` with the ``prompt``/``completion`` columns TRL's SFTTrainer expects."""
    from datasets import Dataset

    return Dataset.from_dict(
        {"prompt": [r["prompt"] for r in records], "completion": [r["completion"] for r in records]}
    )
