import os

import pytest

from sidrec.data import load_rec_dataset
from sidrec.data.synthetic import SyntheticConfig, make_synthetic_dataset
from sidrec.data.tasks import build_tasks
from sidrec.models.tiny import build_local_tokenizer, build_tiny_model, tokenizer_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_DATA = os.path.join(REPO, "..", "shared", "data", "Amazon")
SMALL = SyntheticConfig(num_categories=3, subcategories_per_category=2, num_items=48, num_users=80, seed=0)


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory):
    return make_synthetic_dataset(str(tmp_path_factory.mktemp("data") / "synthetic"), SMALL)


@pytest.fixture(scope="session")
def small_data(small_data_dir):
    return load_rec_dataset(small_data_dir, "Synthetic")


@pytest.fixture(scope="session")
def small_tokenizer(small_data):
    examples = build_tasks(["sid_seq", "item_alignment"], small_data.splits["train"], small_data.catalog)
    return build_local_tokenizer(tokenizer_corpus(small_data.catalog, examples), 400, small_data.catalog.vocab)


@pytest.fixture()
def tiny_model(small_tokenizer):
    return build_tiny_model(
        small_tokenizer, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64
    )


# A clean clone without ../shared says so in the test summary, not only in `-rs` output.
_MARKED_OUTCOMES: dict[str, dict[str, int]] = {}
_SKIP_REASONS: dict[str, set] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.skipped):
        for marker in ("real_data", "gpu", "slow", "vllm"):
            if marker in report.keywords:
                outcome = "skipped" if report.skipped else "ran"
                counts = _MARKED_OUTCOMES.setdefault(marker, {"ran": 0, "skipped": 0})
                counts[outcome] += 1
                if report.skipped and isinstance(report.longrepr, tuple):
                    _SKIP_REASONS.setdefault(marker, set()).add(report.longrepr[2].removeprefix("Skipped: "))


def pytest_terminal_summary(terminalreporter):
    for marker, counts in sorted(_MARKED_OUTCOMES.items()):
        reasons = "; ".join(sorted(_SKIP_REASONS.get(marker, ())))
        line = f"{marker} tests: {counts['ran']} ran, {counts['skipped']} skipped"
        terminalreporter.write_line(line + (f" ({reasons})" if reasons else ""))
