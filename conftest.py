# `make test` collects sidrec's doctests too; the vLLM backend module imports vllm, which only .venv-vllm has.
import importlib.util

collect_ignore = [] if importlib.util.find_spec("vllm") else ["sidrec/vllm_backend.py"]
