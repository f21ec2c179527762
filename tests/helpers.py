"""Run the recipes as a user does: as subprocesses, optionally under ``accelerate launch``."""

import json
import os
import subprocess
import sys

from .conftest import REPO


def run(*args, cwd=REPO, env=None, launcher=None):
    """``python *args`` (or ``accelerate launch --config_file <launcher> *args``) in the repo root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    prefix = [sys.executable]
    if launcher:
        prefix = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", launcher]
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def tool(name, *args, cwd=REPO, env=None):
    """A console script of setup.cfg (``sidrec-results``, ...), as installed beside this Python (its venv's bin)."""
    path = os.path.join(os.path.dirname(sys.executable), name)
    assert os.path.isfile(path), f"{name} is not installed beside {sys.executable}: run `make install`"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([path, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def bench(script, *args):
    """Run ``scripts/<script> *args`` on one CPU thread, as a user does; returns the JSON of its last line of output."""
    r = run(f"scripts/{script}", *args, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def recipe(script, config, *extra, env=None, launcher=None, **flags):
    """Run ``recipes/{script}.py --config {config}``, ``--key value`` per keyword flag, then ``extra`` (which wins)."""
    args = [f"recipes/{script}.py", "--config", config]
    for key, value in flags.items():
        args += [f"--{key}", str(value)]
    return run(*args, *extra, env=env, launcher=launcher)


def quick_sft(data_dir, output_dir, steps, launcher=None):
    """A few-step tiny SFT (no evaluation) to start GRPO or an eval from; asserts it finished."""
    r = recipe(
        "sft", "recipes/demo/sft.yaml", *TINY, launcher=launcher, data_dir=data_dir, output_dir=output_dir,
        max_steps=steps, eval_strategy="no", early_stopping_patience="null",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    return str(output_dir)


TINY = [
    "--tiny_hidden_size",
    "32",
    "--tiny_num_layers",
    "1",
    "--tiny_num_heads",
    "2",
    "--tiny_num_kv_heads",
    "1",
    "--tiny_intermediate_size",
    "64",
    "--tiny_tokenizer_vocab_size",
    "400",
]


# Imported at interpreter start-up of every process of a recipe run (PYTHONPATH): adds a Trainer callback that kills
# the process (os._exit, no cleanup) right after the checkpoint of step SIDREC_TEST_KILL_AT_STEP is saved.
KILLER = """
import os
_step = int(os.environ.get("SIDREC_TEST_KILL_AT_STEP", "0"))
if _step:
    import transformers

    class _Kill(transformers.TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step >= _step:
                os._exit(137)

    _init = transformers.Trainer.__init__

    def _patched(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.add_callback(_Kill())

    transformers.Trainer.__init__ = _patched
"""


def killer_env(tmp_path, step):
    folder = tmp_path / "killer"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(KILLER)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "SIDREC_TEST_KILL_AT_STEP": step}
