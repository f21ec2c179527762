"""The catalog tasks' builders: item text <-> SID alignment and partial-title augmentation, one or more examples
per catalog item (registered by name in `sidrec.data.tasks`)."""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Sequence

from sidrec.data.minionerec import Catalog
from sidrec.data.prompts import DEFAULT_PROMPT_STYLE, PromptExample, check_prompt_style, clean_description

logger = logging.getLogger("sidrec.data.tasks")  # the name its log lines had


ALIGNMENT_DIRECTIONS = ("title_to_sid", "description_to_sid", "sid_to_title")
# text_to_sid is item_alignment without SID -> title (whose title answers are most of the alignment's labelled tokens)
TEXT_TO_SID = ("title_to_sid", "description_to_sid")


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
