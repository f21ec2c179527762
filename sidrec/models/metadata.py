"""What a sidrec checkpoint carries besides its weights, in one object that records, saves and reads itself.

SFT records it in the model's config (so every checkpoint trained from it, GRPO's included, saves it in its
``config.json`` under ``sidrec_<field>`` keys); GRPO and evaluation read it back, from a loaded model or from the
checkpoint folder without loading the weights. A new checkpoint property is one new field here.
"""

from __future__ import annotations

import dataclasses

from sidrec.data.minionerec import check_history_items
from sidrec.data.prompts import DEFAULT_PROMPT_STYLE, check_prompt_style
from sidrec.errors import UserError

KEY_PREFIX = "sidrec_"


@dataclasses.dataclass(frozen=True)
class CheckpointMetadata:
    """The sidrec properties of a checkpoint.

    Args:
        prompt_style (`str`): The prompt layout SFT trained with (MiniOneRec's for checkpoints that record none).
        history_items (`int`, *optional*): How many of each user's most recent history items the prompts showed
            (None: the whole history, also for checkpoints that record none).
        rl_holdout (`bool`): Whether SFT held each user's latest train row out for GRPO (`sidrec.data.holdout`).

    Example:
        >>> from transformers import PretrainedConfig
        >>> config = PretrainedConfig()
        >>> CheckpointMetadata("compact", 2).save_to(config)
        >>> config.sidrec_prompt_style, config.sidrec_history_items
        ('compact', 2)
        >>> CheckpointMetadata.from_config(config)
        CheckpointMetadata(prompt_style='compact', history_items=2, rl_holdout=False)
        >>> CheckpointMetadata.from_config(PretrainedConfig())  # a checkpoint that records nothing
        CheckpointMetadata(prompt_style='minionerec', history_items=None, rl_holdout=False)
    """

    prompt_style: str = DEFAULT_PROMPT_STYLE
    history_items: int | None = None
    rl_holdout: bool = False

    def __post_init__(self):
        check_prompt_style(self.prompt_style)
        check_history_items(self.history_items)

    @staticmethod
    def keys() -> list[str]:
        """The config keys, one per field."""
        return [KEY_PREFIX + f.name for f in dataclasses.fields(CheckpointMetadata)]

    def save_to(self, target) -> None:
        """Record every field in ``target``: a model (its config) or a config."""
        config = getattr(target, "config", target)
        for f in dataclasses.fields(self):
            setattr(config, KEY_PREFIX + f.name, getattr(self, f.name))

    @classmethod
    def from_config(cls, config) -> CheckpointMetadata:
        """Read the fields from a config; a missing or null field takes its default."""
        values = {}
        for f in dataclasses.fields(cls):
            value = getattr(config, KEY_PREFIX + f.name, None)
            if value is not None:
                values[f.name] = value
        return cls(**values)

    @classmethod
    def from_model(cls, model) -> CheckpointMetadata:
        return cls.from_config(model.config)

    @classmethod
    def from_checkpoint(cls, path: str) -> CheckpointMetadata:
        """Read a checkpoint folder's ``config.json`` (a full model or an SFT adapter folder), without its weights."""
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: cannot read the checkpoint's config.json ({e})") from e
        return cls.from_config(config)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
