"""The import rules of docs/ARCHITECTURE.md, checked on the source: a new import across a layer fails here."""

import ast
import glob
import os

import pytest

from .conftest import REPO

# module (or package prefix) -> the sidrec modules it may import; everything else in sidrec is off limits
ALLOWED = {
    "sidrec.sid": set(),
    "sidrec.metrics": {"sidrec.sid"},
    "sidrec.rewards": {"sidrec.sid", "sidrec.utils"},
    "sidrec.data": {"sidrec.data", "sidrec.sid", "sidrec.utils"},
    "sidrec.decoding": {"sidrec.sid", "sidrec.utils"},
    "sidrec.utils": {"sidrec", "sidrec.launch"},
    "sidrec.launch": {"sidrec.utils"},
    "sidrec.vllm_backend": {"sidrec.decoding", "sidrec.sid", "sidrec.utils"},
}
FORBIDDEN_EVERYWHERE = ("recipes", "scripts", "tests")


def sidrec_imports(path: str) -> set[str]:
    tree = ast.parse(open(path).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def module_name(path: str) -> str:
    return os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")


SOURCES = sorted(glob.glob(os.path.join(REPO, "sidrec", "**", "*.py"), recursive=True))


@pytest.mark.parametrize("path", SOURCES, ids=[module_name(p) for p in SOURCES])
def test_imports_follow_the_layers(path):
    name = module_name(path)
    imports = sidrec_imports(path)
    assert not [m for m in imports if m.split(".")[0] in FORBIDDEN_EVERYWHERE], "the library imports an entry script"
    rule = next((v for k, v in ALLOWED.items() if name == k or name.startswith(k + ".")), None)
    if rule is None:
        return
    ours = {m for m in imports if m == "sidrec" or m.startswith("sidrec.")} - {name}
    bad = sorted(m for m in ours if not any(m == a or m.startswith(a + ".") for a in rule))
    assert bad == [], f"{name} imports {bad}; allowed: {sorted(rule)}"


def test_only_the_vllm_backend_imports_vllm_at_module_level():
    # sidrec must import, and every path but the vLLM one run, where vllm is not installed (`make install`).
    for path in SOURCES:
        top = set()
        for node in ast.parse(open(path).read()).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                top.update(alias.name.split(".")[0] for alias in node.names)
        if module_name(path) != "sidrec.vllm_backend":
            assert "vllm" not in top, f"{module_name(path)} imports vllm at module level"


def test_the_rule_catches_a_data_module_importing_the_trainers(tmp_path, monkeypatch):
    fake = tmp_path / "sidrec" / "data" / "leaky.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("from sidrec.trainers import SidSFTTrainer\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO"]), "REPO", str(tmp_path))
    with pytest.raises(AssertionError, match=r"sidrec.data.leaky imports \['sidrec.trainers'\]"):
        test_imports_follow_the_layers(str(fake))


def test_eval_and_grpo_share_one_decoder():
    # evaluation and the GRPO trainer rank with the same function, and the benchmark measures that one too
    for path in ("sidrec/evaluation.py", "sidrec/trainers.py", "scripts/bench_decoding.py"):
        assert "sidrec.decoding" in sidrec_imports(os.path.join(REPO, path)), path
