"""The models package: checkpoint metadata that saves and reads itself, the shared `load_trained` entry, and the
one-line error for a model path that is neither a folder nor a Hub id (in every recipe that takes one)."""

import json
import os

import pytest

from sidrec.errors import UserError
from sidrec.models.loading import check_model_path, load_trained
from sidrec.models.metadata import CheckpointMetadata

from .helpers import recipe


@pytest.mark.parametrize("path", ["Qwen/Qwen2.5-1.5B-Instruct", "gpt2", "my-org/model.v2_final"])
def test_hub_ids_pass_the_path_check(path):
    check_model_path(path)  # no folder, but a plausible Hub id: left to the Hub loader


def test_local_looking_paths_must_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    (tmp_path / "outputs" / "sft").mkdir()
    check_model_path("outputs/sft")  # exists
    for typo in ("outputs/sftt", "./sft", "/no/such/dir", "a/b/c", "~/model", "bad..name", "org--x/y", "x y"):
        with pytest.raises(UserError, match="no such folder, and not a Hub id") as e:
            check_model_path(typo)
        assert repr(typo) in str(e.value)


def test_checkpoint_metadata_round_trips_through_a_saved_checkpoint(tiny_model, tmp_path):
    CheckpointMetadata("compact", 3).save_to(tiny_model)
    tiny_model.save_pretrained(tmp_path)
    saved = json.load(open(tmp_path / "config.json"))
    assert saved["sidrec_prompt_style"] == "compact" and saved["sidrec_history_items"] == 3
    assert CheckpointMetadata.from_checkpoint(str(tmp_path)) == CheckpointMetadata("compact", 3)
    assert CheckpointMetadata.from_model(tiny_model).as_dict() == {
        "prompt_style": "compact",
        "history_items": 3,
        "rl_holdout": False,
    }
    CheckpointMetadata("compact", 3, rl_holdout=True).save_to(tiny_model)
    tiny_model.save_pretrained(tmp_path)
    assert json.load(open(tmp_path / "config.json"))["sidrec_rl_holdout"] is True
    assert CheckpointMetadata.from_checkpoint(str(tmp_path)).rl_holdout is True
    with pytest.raises(UserError, match="prompt_style must be one of"):
        CheckpointMetadata("chatty", None)
    with pytest.raises(UserError, match="history_items must be at least 1"):
        CheckpointMetadata("compact", 0)
    with pytest.raises(UserError, match="cannot read the checkpoint's config.json"):
        CheckpointMetadata.from_checkpoint(str(tmp_path / "missing"))


def test_load_trained_checks_the_sid_tokens_and_reads_the_metadata(tiny_model, small_tokenizer, small_data, tmp_path):
    from types import SimpleNamespace

    CheckpointMetadata("compact", 2).save_to(tiny_model)
    tiny_model.save_pretrained(tmp_path / "ok")
    small_tokenizer.save_pretrained(tmp_path / "ok")
    args = SimpleNamespace(model_name_or_path=str(tmp_path / "ok"), model_revision=None)
    checkpoint = load_trained(args, small_data.catalog)
    assert checkpoint.metadata == CheckpointMetadata("compact", 2)
    rows = small_data.splits["train"]
    long = next(r for r in rows if len(r.history_sids) > 2)
    assert checkpoint.cut_history([long])[0].history_sids == long.history_sids[-2:]
    # a catalog whose SID tokens the tokenizer lacks is refused before any weights load
    from sidrec.data.minionerec import Catalog, Item
    from sidrec.sid import SidVocab

    other = Catalog(items={"x": Item("x", "<a_900><b_1><c_1>", "X")}, vocab=SidVocab.from_sids(["<a_900><b_1><c_1>"]))
    with pytest.raises(UserError, match=r"lacks 3 of the catalog's SID tokens \(first: \['<a_900>'"):
        load_trained(args, other)


@pytest.mark.parametrize(
    ("script", "config"),
    [("evaluate", "recipes/demo/eval.yaml"), ("grpo", "recipes/demo/grpo.yaml"), ("sft", "recipes/demo/sft.yaml")],
)
def test_a_typo_in_the_model_path_is_one_line_before_anything_loads(script, config, small_data_dir, tmp_path):
    out = tmp_path / "out"
    extra = ["--from_scratch", "false"] if script == "sft" else []
    r = recipe(
        script, config, *extra, data_dir=small_data_dir, output_dir=out, model_name_or_path="outputs/demo/sftt/x"
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: model_name_or_path 'outputs/demo/sftt/x': no such folder, and not a Hub id (name or namespace/name)"
    ]
    assert not os.path.exists(out)  # nothing written
