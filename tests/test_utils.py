import json
import os

import pytest

from sidrec.atomic_io import atomic_dir, atomic_write_json
from sidrec.run.summary import redact, redact_argv


def test_summary_redacts_secrets():
    cfg = {"TrainingArguments": {"hub_token": "hf_secret", "learning_rate": 1.0, "nested": [{"api_key": "k"}]}}
    out = redact(cfg)
    assert out["TrainingArguments"]["hub_token"] == "<redacted>" and out["TrainingArguments"]["learning_rate"] == 1.0
    assert out["TrainingArguments"]["nested"][0]["api_key"] == "<redacted>"
    assert "hf_secret" not in str(out)


def test_summary_keeps_token_counts_and_special_tokens():
    # Settings whose names contain "token" are not secrets: the run record keeps them (they were redacted before).
    cfg = {
        "GRPOConfig": {"max_prompt_tokens": 64, "average_tokens_across_devices": True, "pad_token": "<|endoftext|>"},
        "ModelArguments": {"token": "hf_abc", "use_auth_token": "hf_def"},
    }
    out = redact(cfg)
    assert out["GRPOConfig"] == cfg["GRPOConfig"]
    assert out["ModelArguments"] == {"token": "<redacted>", "use_auth_token": "<redacted>"}
    argv = ["grpo.py", "--max_prompt_tokens", "64", "--token", "hf_abc", "--hub-token=hf_x"]
    assert redact_argv(argv) == [
        "grpo.py",
        "--max_prompt_tokens",
        "64",
        "--token",
        "<redacted>",
        "--hub-token=<redacted>",
    ]


def test_atomic_write_keeps_old_file_on_crash(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.json")
    atomic_write_json(path, {"HR@10": 0.5})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"HR@10": 0.9})
    assert json.load(open(path)) == {"HR@10": 0.5}
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temp file left behind


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(str(target)) as tmp:
            open(os.path.join(tmp, "a"), "w").write("x")
            raise RuntimeError("interrupted")
    assert not target.exists() and os.listdir(tmp_path) == []
    with atomic_dir(str(target)) as tmp:
        open(os.path.join(tmp, "a"), "w").write("x")
    assert os.listdir(target) == ["a"]


def test_atomic_outputs_get_the_permissions_open_and_makedirs_give(tmp_path):
    # mkstemp/mkdtemp create 0600 files and 0700 folders: written data must stay readable by the group as usual.
    old = os.umask(0o022)
    try:
        atomic_write_json(str(tmp_path / "index.json"), {"1": ["<a_1>"]})
        with atomic_dir(str(tmp_path / "run")) as d:
            atomic_write_json(os.path.join(d, "metrics.json"), {})
        os.umask(0o077)
        atomic_write_json(str(tmp_path / "private.json"), {})
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "index.json").st_mode & 0o777) == "0o644"
    assert oct(os.stat(tmp_path / "run").st_mode & 0o777) == "0o755"
    assert oct(os.stat(tmp_path / "run" / "metrics.json").st_mode & 0o777) == "0o644"
    assert oct(os.stat(tmp_path / "private.json").st_mode & 0o777) == "0o600"
