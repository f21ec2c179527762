"""The layers of docs/ARCHITECTURE.md, checked on the source: every module has a layer, imports only point down (or
across, to a sibling of its own layer), the import graph has no circle, and there is one decoder."""

import ast
import glob
import os

from .conftest import REPO

# Lowest first. A module may import sidrec modules of a lower layer, or of its own layer (the graph must stay acyclic).
LAYERS = {
    "base": ["sidrec", "sidrec.errors", "sidrec.atomic_io"],
    "core": [
        "sidrec.sid",
        "sidrec.metrics",
        "sidrec.rewards",
        "sidrec.decoding",
        "sidrec.data",
        "sidrec.data.minionerec",
        "sidrec.data.prompts",
        "sidrec.data.item_tasks",
        "sidrec.data.tasks",
        "sidrec.data.holdout",
        "sidrec.data.synthetic",
        "sidrec.data.interactions",
        "sidrec.codebook",
        "sidrec.codebook.embed",
        "sidrec.codebook.methods",
        "sidrec.codebook.config",
        "sidrec.codebook.kmeans",
        "sidrec.codebook.rqvae",
        "sidrec.codebook.collisions",
        "sidrec.codebook.diagnostics",
        "sidrec.codebook.build",
    ],
    "models": [
        "sidrec.models",
        "sidrec.models.metadata",
        "sidrec.models.sid_tokens",
        "sidrec.models.tiny",
        "sidrec.models.dropout",
        "sidrec.models.sid_init",
        "sidrec.models.loading",
        "sidrec.models.averaging",
        "sidrec.models.standin",
        "sidrec.models.seqrec",
        "sidrec.patches",
    ],
    "ranking and run records": [
        "sidrec.evaluation",
        "sidrec.backends",
        "sidrec.backends.hf",
        "sidrec.backends.vllm",
        "sidrec.run",
        "sidrec.run.summary",
        "sidrec.run.launch",
        "sidrec.run.tracking",
    ],
    "configs": [
        "sidrec.configs",
        "sidrec.configs.common",
        "sidrec.configs.sft",
        "sidrec.configs.grpo",
        "sidrec.configs.eval",
    ],  # fmt: skip
    "trainers": ["sidrec.trainers"],
    "recipe skeleton": ["sidrec.run.recipe"],
    "tools": [
        "sidrec.analysis",
        "sidrec.analysis.report",
        "sidrec.analysis.plots",
        "sidrec.analysis.baselines",
        "sidrec.analysis.results",
        "sidrec.analysis.pipeline",
        "sidrec.analysis.smoke",
        "sidrec.analysis.tuning_log",
        "sidrec.analysis.bootstrap",
        "sidrec.analysis.grpo_log",
        "sidrec.cli",
        "sidrec.cli.build_sids",
        "sidrec.cli.prepare_interactions",
    ],
}
LAYER_OF = {m: i for i, mods in enumerate(LAYERS.values()) for m in mods}
FORBIDDEN_EVERYWHERE = ("recipes", "scripts", "tests")


def sidrec_imports(path: str) -> set[str]:
    """Every module a file imports, at any depth (inside functions too); ``from sidrec import x`` counts as
    ``sidrec.x`` when x is a module."""
    tree = ast.parse(open(path).read())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            for alias in node.names:
                if f"{node.module}.{alias.name}" in LAYER_OF:
                    out.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def ours(imports: set[str], name: str) -> set[str]:
    return {m for m in imports if m == "sidrec" or m.startswith("sidrec.")} - {name}


def module_name(path: str, root: str = REPO) -> str:
    return os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")


def sources(root: str = REPO) -> list[str]:
    return sorted(glob.glob(os.path.join(root, "sidrec", "**", "*.py"), recursive=True))


SOURCES = sources()


def import_graph(root: str = REPO) -> dict[str, set[str]]:
    return {module_name(p, root): ours(sidrec_imports(p), module_name(p, root)) for p in sources(root)}


def layer_problems(graph: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, imports in sorted(graph.items()):
        if name not in LAYER_OF:
            problems.append(f"{name} has no layer in tests/test_architecture.py (and docs/ARCHITECTURE.md)")
            continue
        for m in sorted(imports):
            if m not in LAYER_OF:
                problems.append(f"{name} imports {m}, which is not a module with a layer")
            elif LAYER_OF[m] > LAYER_OF[name]:
                problems.append(f"{name} ({list(LAYERS)[LAYER_OF[name]]}) imports {m} ({list(LAYERS)[LAYER_OF[m]]})")
    return problems


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_has_a_layer_and_imports_point_down():
    graph = import_graph()
    assert set(graph) == set(LAYER_OF), f"listed but missing: {sorted(set(LAYER_OF) - set(graph))}"
    assert layer_problems(graph) == []


def test_no_import_circle():
    assert find_cycle(import_graph()) is None


def test_no_module_imports_an_entry_script():
    for path in SOURCES:
        bad = [m for m in sidrec_imports(path) if m.split(".")[0] in FORBIDDEN_EVERYWHERE]
        assert bad == [], f"{module_name(path)} imports {bad}"


def test_the_rules_catch_an_upward_import_a_circle_and_an_unlisted_module(tmp_path):
    def write(rel: str, text: str) -> None:
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    write("sidrec/__init__.py", "")
    write("sidrec/data/__init__.py", "")
    write("sidrec/data/leaky.py", "from sidrec.trainers import SidSFTTrainer\n")
    write("sidrec/sid.py", "def f():\n    from sidrec.metrics import hr_ndcg\n")  # inside a function: still counted
    write("sidrec/metrics.py", "from sidrec.sid import parse_sid\n")
    write("sidrec/trainers.py", "")
    graph = import_graph(str(tmp_path))
    problems = layer_problems(graph)
    assert "sidrec.data.leaky has no layer in tests/test_architecture.py (and docs/ARCHITECTURE.md)" in problems
    assert find_cycle(graph) == ["sidrec.metrics", "sidrec.sid", "sidrec.metrics"]
    graph["sidrec.data"] = {"sidrec.trainers"}
    assert "sidrec.data (core) imports sidrec.trainers (trainers)" in layer_problems(graph)


def test_only_the_vllm_backend_imports_vllm_at_module_level():
    # sidrec must import, and every path but the vLLM one run, where vllm is not installed (`make install`).
    for path in SOURCES:
        top = set()
        for node in ast.parse(open(path).read()).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                top.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                top.update(alias.name.split(".")[0] for alias in node.names)
        if module_name(path) != "sidrec.backends.vllm":
            assert "vllm" not in top, f"{module_name(path)} imports vllm at module level"


# What only a decoder does: HF beam search, the SID-constraint processor, beam-wise top-k over scores.
DECODER_MARKERS = ("num_beams=", "LogitsProcessor)", "_tree_search", "_generate_search", "GenerationConfig(")


def decoder_sites(path: str) -> list[str]:
    """The decoder markers found in ``path``'s code (strings and comments excluded)."""
    tree = ast.parse(open(path).read())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in ("_tree_search", "_generate_search"):
            found.append(f"defines {node.name}")
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(b) for b in node.bases]
            if any(b.endswith("LogitsProcessor") for b in bases) and node.name != "SidTrieLogitsProcessor":
                found.append(f"subclasses a LogitsProcessor: {node.name}")
        if isinstance(node, ast.Call) and ast.unparse(node.func).endswith((".generate", "GenerationConfig")):
            if any(k.arg == "num_beams" for k in node.keywords):
                found.append(f"beam search through {ast.unparse(node.func)}")
    return found


def test_there_is_one_decoder_and_eval_grpo_and_the_benchmark_use_it():
    # sidrec.decoding is the only HF beam search and constraint processor; the vLLM backend drives the same search
    # step by step over an engine (checked against it in tests/test_vllm.py) and its processor only masks samples.
    elsewhere = {
        module_name(p): decoder_sites(p)
        for p in SOURCES + [os.path.join(REPO, "recipes", f) for f in ("sft.py", "grpo.py", "evaluate.py")]
        if not p.endswith(os.path.join("sidrec", "decoding.py"))
    }
    assert {m: s for m, s in elsewhere.items() if s} == {}
    assert len(decoder_sites(os.path.join(REPO, "sidrec", "decoding.py"))) >= 3
    # and the rankers of evaluation and GRPO, and the benchmark, call that one
    for path in ("sidrec/evaluation.py", "sidrec/trainers.py", "sidrec/backends/hf.py", "scripts/bench_decoding.py"):
        calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(open(os.path.join(REPO, path)).read()))
                 if isinstance(n, ast.Call)}  # fmt: skip
        assert "rank_items" in calls, path


def test_the_decoder_check_catches_a_second_beam_search(tmp_path):
    copy = tmp_path / "copy.py"
    copy.write_text(
        "from transformers import LogitsProcessor\n"
        "class MyMask(LogitsProcessor):\n    pass\n"
        "def rank(model, ids):\n    return model.generate(ids, num_beams=50)\n"
    )
    assert sorted(decoder_sites(str(copy))) == [
        "beam search through model.generate",
        "subclasses a LogitsProcessor: MyMask",
    ]


def test_nothing_imports_a_script_by_file_path():
    # tools are console scripts (setup.cfg) and benchmarks run as programs; no module is loaded from a file path
    for path in glob.glob(os.path.join(REPO, "tests", "*.py")) + SOURCES:
        calls = {ast.unparse(n.func) for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, ast.Call)}
        assert not any(c.endswith("spec_from_file_location") for c in calls), path
