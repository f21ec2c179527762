"""The recipes' configs: YAML gives defaults, CLI flags override (via TrlParser); each validates itself on creation.

- `common`: `SidrecScriptArguments` (data, tracking), `SidrecModelConfig`, `SidrecTrainingMixin` (SFT and GRPO);
- `sft`: `SidrecSFTConfig`; `grpo`: `SidrecGRPOConfig`; `eval`: `EvalConfig`.
"""

from sidrec.configs.common import SidrecModelConfig, SidrecScriptArguments, SidrecTrainingMixin
from sidrec.configs.eval import EvalConfig
from sidrec.configs.grpo import SidrecGRPOConfig
from sidrec.configs.sft import SidrecSFTConfig

__all__ = [
    "EvalConfig",
    "SidrecGRPOConfig",
    "SidrecModelConfig",
    "SidrecSFTConfig",
    "SidrecScriptArguments",
    "SidrecTrainingMixin",
]
