# `make test` collects doctests of every module it is given (sidrec/ and tests/); the vLLM backend and the vLLM
# weight-sync probe import vllm, which only .venv-vllm has.
import importlib.util

VLLM_ONLY = ["sidrec/backends/vllm.py", "tests/vllm_sync_probe.py"]
collect_ignore = [] if importlib.util.find_spec("vllm") else VLLM_ONLY
