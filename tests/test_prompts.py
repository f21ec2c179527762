import pytest

from sidrec.data.minionerec import Catalog, Interaction, Item
from sidrec.data.prompts import PromptExample, PromptTooLongError, fit_to_length
from sidrec.data.tasks import (
    RL_TASKS,
    TASKS,
    build_item_alignment,
    build_tasks,
    check_task_names,
    leaks_answer,
    register_task,
    rl_task_names,
)
from sidrec.errors import UserError
from sidrec.sid import SidVocab


def row(hist_sids, target="<a_1><b_1><c_9>"):
    n = len(hist_sids)
    return Interaction(
        "u1",
        tuple(str(i) for i in range(n)),
        tuple(f"title {i}" for i in range(n)),
        tuple(hist_sids),
        "9",
        "next title",
        target,
    )


def catalog(items):
    return Catalog(items={i.item_id: i for i in items}, vocab=SidVocab.from_sids([i.sid for i in items]))


def test_sid_seq_prompt_and_completion():
    ex = build_tasks(
        ["sid_seq"], [row(["<a_1><b_1><c_1>", "<a_1><b_1><c_2>"])], catalog([Item("9", "<a_1><b_1><c_9>", "t")])
    )[0]
    p = ex.prompt()
    assert "<a_1><b_1><c_1>, <a_1><b_1><c_2> in chronological order" in p
    assert p.startswith("### Instruction:\n") and p.endswith("### Response:\n")
    assert ex.completion == "<a_1><b_1><c_9>" and ex.target_sid == "<a_1><b_1><c_9>"


@pytest.mark.parametrize(
    "task, expect_in_prompt, completion",
    [
        ("title_seq2sid", '"title 0", "title 1"', "<a_1><b_1><c_9>"),
        ("title_seq2title", '"title 0", "title 1"', "next title"),
        ("fusion", "<a_1><b_1><c_1>, <a_1><b_1><c_2>", "next title"),
    ],
)
def test_history_tasks(task, expect_in_prompt, completion):
    ex = build_tasks(
        [task], [row(["<a_1><b_1><c_1>", "<a_1><b_1><c_2>"])], catalog([Item("9", "<a_1><b_1><c_9>", "t")])
    )[0]
    assert expect_in_prompt in ex.prompt()
    assert ex.completion == completion


def test_item_alignment_examples_and_no_leak():
    items = [
        Item("1", "<a_1><b_1><c_1>", "Red Widget", "['A sturdy widget.', 'Made of steel.']"),
        Item("2", "<a_1><b_1><c_2>", "Blue Gadget", ""),
        # shares a SID with item 3: SID -> title would be ambiguous, so it is skipped for both
        Item("3", "<a_2><b_1><c_1>", "Green Thing", ""),
        Item("4", "<a_2><b_1><c_1>", "Yellow Thing", ""),
        # a description that spells out its own SID would teach copying: dropped
        Item("5", "<a_3><b_1><c_1>", "Leaky", "Its code is <a_3><b_1><c_1> exactly."),
    ]
    exs = build_item_alignment(catalog(items))
    by_item = {}
    for ex in exs:
        by_item.setdefault(ex.source, []).append(ex)
        assert not leaks_answer(ex)
    item1 = {(ex.prompt().split("### User Input:\n")[1], ex.completion) for ex in by_item["item 1"]}
    assert any("Red Widget" in p and c == "<a_1><b_1><c_1>" for p, c in item1)
    assert any("A sturdy widget. Made of steel." in p and c == "<a_1><b_1><c_1>" for p, c in item1)
    assert any("<a_1><b_1><c_1>" in p and c == "Red Widget" for p, c in item1)
    assert len(by_item["item 2"]) == 2  # no description
    assert all(ex.completion != "Green Thing" for ex in by_item["item 3"])
    assert [ex.completion for ex in by_item["item 5"]] == ["<a_3><b_1><c_1>", "Leaky"]


def test_compact_style_is_tag_and_input():
    hist = ["<a_1><b_1><c_1>", "<a_1><b_1><c_2>"]
    cat = catalog([Item("9", "<a_1><b_1><c_9>", "Red Widget", "A sturdy widget.")])
    tasks = ["sid_seq", "title_seq2sid", "fusion", "item_alignment"]
    exs = build_tasks(tasks, [row(hist)], cat, style="compact")
    got = [(ex.prompt(), ex.completion) for ex in exs]
    assert got == [
        ("next item: <a_1><b_1><c_1><a_1><b_1><c_2>\n", "<a_1><b_1><c_9>"),
        ('titles to next item: "title 0", "title 1"\n', "<a_1><b_1><c_9>"),
        ("next title: <a_1><b_1><c_1><a_1><b_1><c_2>\n", "next title"),
        ("title to item: Red Widget\n", "<a_1><b_1><c_9>"),
        ("description to item: A sturdy widget.\n", "<a_1><b_1><c_9>"),
        ("item to title: <a_1><b_1><c_9>\n", "Red Widget"),
    ]
    # the oldest history entry is dropped the same way in both styles
    assert exs[0].prompt(drop=1) == "next item: <a_1><b_1><c_2>\n"
    leaky = Item("5", "<a_3><b_1><c_1>", "Leaky", "Its code is <a_3><b_1><c_1> exactly.")
    assert [ex.completion for ex in build_item_alignment(catalog([leaky]), style="compact")] == [
        "<a_3><b_1><c_1>",
        "Leaky",
    ]


def test_title_words_are_seeded_halves_of_long_titles():
    items = [Item("1", "<a_1><b_1><c_1>", "one two three four five six"), Item("2", "<a_1><b_1><c_2>", "too short")]
    exs = build_tasks(["title_words"], [], catalog(items))
    assert [ex.source for ex in exs] == ["item 1", "item 1"]  # two samples, the 2-word title skipped
    for ex in exs:
        words = ex.user_text().removeprefix("Which item has a title with the words: ").removesuffix("?").split()
        assert len(words) == 3 and words == sorted(words, key="one two three four five six".split().index)
        assert ex.completion == "<a_1><b_1><c_1>" and ex.prompt().startswith("### Instruction:")
    assert [ex.prompt() for ex in build_tasks(["title_words"], [], catalog(items))] == [ex.prompt() for ex in exs]


def test_unknown_prompt_style_is_an_error():
    with pytest.raises(UserError, match="prompt_style must be one of minionerec, compact"):
        build_tasks(["sid_seq"], [row(["<a_1><b_1><c_1>"])], catalog([Item("9", "<a_1><b_1><c_9>", "t")]), style="x")


def test_leak_detector():
    ex = PromptExample("item_alignment", "i", "Which item is <a_1><b_1>?", "<a_1><b_1>")
    assert leaks_answer(ex)
    assert not leaks_answer(PromptExample("item_alignment", "i", "Which item is X?", "<a_1><b_1>"))


def test_unknown_task_is_an_error():
    with pytest.raises(UserError, match=r"tasks \['nope'\]: unknown or not allowed \['nope'\]; allowed: sid_seq, "):
        build_tasks(["nope"], [], catalog([Item("9", "<a_1><b_1><c_9>", "t")]))


def test_unknown_task_among_known_ones_is_named_in_one_line():
    with pytest.raises(UserError) as err:
        build_tasks(
            ["sid_seq", "sid_sequence"], [row(["<a_1><b_1><c_1>"])], catalog([Item("9", "<a_1><b_1><c_9>", "t")])
        )
    assert str(err.value) == (
        "tasks ['sid_seq', 'sid_sequence']: unknown or not allowed ['sid_sequence']; allowed: sid_seq, sid_last, "
        "sid_prev, title_seq2sid, title_seq2title, fusion, sid_pairs, item_alignment, text_to_sid, title_words"
    )
    with pytest.raises(UserError, match=r"^tasks \[\]: empty; allowed: sid_seq, "):
        build_tasks([], [], catalog([Item("9", "<a_1><b_1><c_9>", "t")]))


def test_one_registry_in_a_fixed_order_and_rl_is_a_field_of_each_entry():
    assert list(TASKS) == [
        "sid_seq", "sid_last", "sid_prev", "title_seq2sid", "title_seq2title",
        "fusion", "sid_pairs", "item_alignment", "text_to_sid", "title_words",
    ]  # fmt: skip
    assert all(name == task.name and task.description for name, task in TASKS.items())
    assert RL_TASKS == rl_task_names() == ("sid_seq", "sid_last", "title_seq2sid", "item_alignment")
    with pytest.raises(ValueError, match="'sid_seq' is already registered"):
        register_task("sid_seq")(lambda rows, catalog, source, words, style: [])


def test_a_registered_task_is_built_by_name_and_its_rl_field_decides_grpo(tmp_path):
    from sidrec.configs import SidrecGRPOConfig

    calls = []

    def tmp_rl(rows, catalog, source, max_description_words, style):
        """A throwaway SID task."""
        calls.append((len(rows), len(catalog.items), source, max_description_words, style))
        return [PromptExample("tmp_rl", "i", "x", "<a_1><b_1><c_9>", "<a_1><b_1><c_9>", style=style)]

    try:
        register_task("tmp_rl", rl=True)(tmp_rl)
        register_task("tmp_sft", description="a throwaway title task")(lambda rows, catalog, source, words, style: [])
        assert TASKS["tmp_rl"].rl and TASKS["tmp_rl"].description == "A throwaway SID task."
        assert not TASKS["tmp_sft"].rl and TASKS["tmp_sft"].description == "a throwaway title task"
        assert rl_task_names() == (*RL_TASKS, "tmp_rl")
        # one builder signature for every task: build_tasks passes all its arguments through
        cat = catalog([Item("9", "<a_1><b_1><c_9>", "t")])
        exs = build_tasks(["tmp_rl", "tmp_sft"], [row(["<a_1><b_1><c_1>"])] * 3, cat, "f.csv", 7, "compact")
        assert [ex.prompt() for ex in exs] == ["i: x\n"] and calls == [(3, 1, "f.csv", 7, "compact")]
        check_task_names(["sid_seq", "tmp_rl"], rl_task_names(), "rl_tasks")
        with pytest.raises(UserError) as err:
            check_task_names(["tmp_rl", "tmp_sft"], rl_task_names(), "rl_tasks")
        assert str(err.value) == (
            "rl_tasks ['tmp_rl', 'tmp_sft']: unknown or not allowed ['tmp_sft']; "
            "allowed: sid_seq, sid_last, title_seq2sid, item_alignment, tmp_rl"
        )
        # the GRPO config asks the registry, not a list kept by hand
        common = {"output_dir": str(tmp_path), "use_cpu": True, "per_device_train_batch_size": 4, "num_generations": 4}
        assert SidrecGRPOConfig(**common, rl_tasks=["tmp_rl"]).rl_tasks == ["tmp_rl"]
        with pytest.raises(
            UserError, match=r"^rl_tasks \['tmp_sft'\]: unknown or not allowed \['tmp_sft'\]; allowed: "
        ):
            SidrecGRPOConfig(**common, rl_tasks=["tmp_sft"])
    finally:
        TASKS.pop("tmp_rl", None)
        TASKS.pop("tmp_sft", None)
    assert rl_task_names() == RL_TASKS


def test_fit_trims_history_from_the_left(small_tokenizer):
    sids = [f"<a_{i % 3}><b_{i % 2}><c_{i}>" for i in range(10)]
    ex = build_tasks(["sid_seq"], [row(sids)], catalog([Item("9", "<a_1><b_1><c_9>", "t")]))[0]
    full = len(small_tokenizer(ex.prompt() + ex.completion)["input_ids"]) + 1
    rec = fit_to_length([ex], small_tokenizer, full - 1)[0]
    # the oldest entry went, the newest stayed, and the answer is intact
    assert sids[0] not in rec["prompt"] and sids[-1] in rec["prompt"] and sids[1] in rec["prompt"]
    assert rec["completion"] == ex.completion
    assert len(small_tokenizer(rec["prompt"] + rec["completion"])["input_ids"]) + 1 <= full - 1
    assert fit_to_length([ex], small_tokenizer, full)[0]["prompt"] == ex.prompt()


def test_fit_too_long_is_an_error(small_tokenizer):
    ex = build_tasks(["sid_seq"], [row(["<a_1><b_1><c_1>"])], catalog([Item("9", "<a_1><b_1><c_9>", "t")]))[0]
    with pytest.raises(PromptTooLongError, match="task 'sid_seq' needs .* tokens .* max_length=10"):
        fit_to_length([ex], small_tokenizer, 10)


def test_sid_last_shows_only_the_last_item_and_weighs_every_transition_alike():
    rows = [
        row(["<a_1><b_1><c_1>"]),
        row(["<a_1><b_1><c_1>", "<a_2><b_1><c_1>", "<a_3><b_2><c_1>"], "<a_4><b_1><c_1>"),
        row(["<a_5><b_1><c_1>", "<a_1><b_1><c_1>"], "<a_4><b_1><c_1>"),
    ]
    cat = catalog([Item("9", "<a_4><b_1><c_1>", "Next")])
    exs = build_tasks(["sid_last"], rows, cat, source="train.csv", style="compact")
    # one example per row, the one-item history included: after <a_1><b_1><c_1> the data holds <a_1><b_1><c_9> once
    # (a first transition) and <a_4><b_1><c_1> once, and so do the examples
    assert [(ex.prompt(), ex.completion, ex.source) for ex in exs] == [
        ("next item: <a_1><b_1><c_1>\n", "<a_1><b_1><c_9>", "train.csv, row 1"),
        ("next item: <a_3><b_2><c_1>\n", "<a_4><b_1><c_1>", "train.csv, row 2"),
        ("next item: <a_1><b_1><c_1>\n", "<a_4><b_1><c_1>", "train.csv, row 3"),
    ]
    minionerec = build_tasks(["sid_last"], rows[1:2], cat, style="minionerec")[0]
    assert "<a_3><b_2><c_1>" in minionerec.prompt() and "<a_2><b_1><c_1>" not in minionerec.prompt()


def test_sid_pairs_gives_each_consecutive_pair_of_every_row():
    a, b, c, t = "<a_1><b_1><c_1>", "<a_1><b_1><c_2>", "<a_2><b_1><c_1>", "<a_1><b_1><c_9>"
    cat = catalog([Item("9", t, "t")])
    # a user's rows are prefixes: [a] -> b, then [a, b] -> c, then [a, b, c] -> t
    rows = [row([a], b), row([a, b], c), row([a, b, c], t)]
    got = [
        (ex.prompt(), ex.completion, ex.source) for ex in build_tasks(["sid_pairs"], rows, cat, "f", style="compact")
    ]
    assert got == [
        (f"next item: {a}\n", b, "f, row 1"),
        (f"next item: {a}\n", b, "f, row 2"),
        (f"next item: {b}\n", c, "f, row 2"),
        (f"next item: {a}\n", b, "f, row 3"),
        (f"next item: {b}\n", c, "f, row 3"),
        (f"next item: {c}\n", t, "f, row 3"),
    ]
    # the same prompt as a one-item sid_seq / sid_last example, in both styles
    last = build_tasks(["sid_last"], rows[:1], cat)[0]
    pair = build_tasks(["sid_pairs"], rows[:1], cat)[0]
    assert (pair.prompt(), pair.completion) == (last.prompt(), last.completion)


def test_text_to_sid_is_alignment_without_sid_to_title():
    cat = catalog([Item("9", "<a_1><b_1><c_9>", "Red Widget", "A sturdy widget.")])
    got = [(ex.prompt(), ex.completion) for ex in build_tasks(["text_to_sid"], [], cat, style="compact")]
    assert got == [
        ("title to item: Red Widget\n", "<a_1><b_1><c_9>"),
        ("description to item: A sturdy widget.\n", "<a_1><b_1><c_9>"),
    ]


def test_sid_prev_reads_each_rows_last_transition_backwards():
    a, b, c, t = "<a_1><b_1><c_1>", "<a_1><b_1><c_2>", "<a_2><b_1><c_1>", "<a_1><b_1><c_9>"
    cat = catalog([Item("9", t, "t")])
    rows = [row([a], b), row([a, b], c), row([], t), row([a, b, c], t)]
    got = [
        (ex.prompt(), ex.completion, ex.target_sid, ex.source)
        for ex in build_tasks(["sid_prev"], rows, cat, "f", style="compact")
    ]
    # the row's next item is shown, the last history item is the answer and the SID it names; no history, no example
    assert got == [
        (f"previous item: {b}\n", a, a, "f, row 1"),
        (f"previous item: {c}\n", b, b, "f, row 2"),
        (f"previous item: {t}\n", c, c, "f, row 4"),
    ]
    minionerec = build_tasks(["sid_prev"], rows[1:2], cat, style="minionerec")[0]
    assert f"The user then interacted with {c}." in minionerec.prompt() and minionerec.completion == b
