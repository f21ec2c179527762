"""A pipeline run dir knows what made it: other data or configs are refused before any stage runs."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from sidrec.analysis.pipeline import check_run_dir, differences, fingerprint
from sidrec.errors import UserError

from .conftest import REPO

CONFIGS = os.path.join(REPO, "recipes", "industrial", "tiny-cpu")


@pytest.fixture()
def two_datasets(small_data_dir, tmp_path):
    """The small synthetic dataset, and a copy whose train split lost its last row."""
    other = str(tmp_path / "other")
    shutil.copytree(small_data_dir, other)
    train = os.path.join(other, "train", os.listdir(os.path.join(other, "train"))[0])
    lines = open(train).read().splitlines(keepends=True)
    with open(train, "w") as f:
        f.writelines(lines[:-1])
    return small_data_dir, other


def test_fingerprint_names_what_changed(two_datasets, tmp_path):
    first, other = two_datasets
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs)
    base = fingerprint(str(configs), first, "Synthetic")
    assert differences(base, fingerprint(str(configs), first, "Synthetic")) == []
    # same file names, one changed row: caught by content, not only by path
    moved = fingerprint(str(configs), other, "Synthetic")
    train_file = [k for k in base["data_files"] if k.startswith("train")]
    assert differences(base, moved) == ["data_dir", f"data_files/{train_file[0]}"]
    (configs / "grpo.yaml").write_text((configs / "grpo.yaml").read_text() + "\nlearning_rate: 1.0e-4\n")
    assert differences(base, fingerprint(str(configs), first, "Synthetic")) == ["configs/grpo.yaml"]


def test_run_dir_is_recorded_checked_and_restarted(two_datasets, tmp_path):
    first, other = two_datasets
    run_dir = str(tmp_path / "run")
    a, b = fingerprint(CONFIGS, first, "Synthetic"), fingerprint(CONFIGS, other, "Synthetic")
    assert check_run_dir(run_dir, a) == "new"
    assert check_run_dir(run_dir, a) == "same"
    os.makedirs(os.path.join(run_dir, "sft"))
    open(os.path.join(run_dir, "sft", "run_summary.json"), "w").write('{"status": "ok"}')
    with pytest.raises(UserError, match=r"other inputs \(data_dir, data_files/train/"):
        check_run_dir(run_dir, b)
    assert os.path.isfile(os.path.join(run_dir, "sft", "run_summary.json"))  # nothing lost by the refusal
    assert check_run_dir(run_dir, b, restart=True) == "restarted"
    assert os.listdir(run_dir) == ["pipeline.json"]
    assert json.load(open(os.path.join(run_dir, "pipeline.json")))["data_dir"] == os.path.realpath(other)


def test_unrecorded_non_empty_run_dir_is_refused(tmp_path, small_data_dir):
    run_dir = tmp_path / "old"
    (run_dir / "sft").mkdir(parents=True)
    with pytest.raises(UserError, match="has no pipeline.json"):
        check_run_dir(str(run_dir), fingerprint(CONFIGS, small_data_dir, "Synthetic"))


def test_run_pipeline_with_other_data_stops_before_any_stage(two_datasets, tmp_path):
    """The reported bug: a second dataset into the same run dir reused the first one's results as its own."""
    first, other = two_datasets
    run_dir = str(tmp_path / "run")
    record = [sys.executable, "-m", "sidrec.analysis.pipeline", "--run-dir", run_dir, "--config-dir", CONFIGS]
    record += ["--accelerate-config", "accelerate_configs/cpu.yaml"]  # as run_pipeline.sh passes it
    subprocess.run([*record, "--data_dir", first, "--category", "Synthetic"], cwd=REPO, check=True)
    # the first dataset's finished stages
    for stage in ("sft", "eval_sft", "grpo", "eval_grpo"):
        os.makedirs(os.path.join(run_dir, stage))
        open(os.path.join(run_dir, stage, "run_summary.json"), "w").write('{"status": "ok"}')
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    cmd = ["bash", "scripts/run_pipeline.sh", "--config-dir", CONFIGS, "--data_dir", other, "--category", "Synthetic"]
    r = subprocess.run([*cmd, "--run-dir", run_dir], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "holds results made from other inputs (data_dir, data_files/train/" in r.stderr
    assert "== sft" not in r.stderr and "Traceback" not in r.stderr
    assert sorted(os.listdir(run_dir)) == ["eval_grpo", "eval_sft", "grpo", "pipeline.json", "sft"]
