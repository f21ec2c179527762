"""What a SID build is asked for: the method, its options, the codebook size of each level, seed, collisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from sidrec.codebook.collisions import COLLISION_METHODS
from sidrec.codebook.methods import get_sid_method
from sidrec.errors import UserError

LEVEL_NAMES = "abcdefghijklmnopqrstuvwxyz"
DEFAULT_METHOD = "rq_kmeans_balanced"


@dataclass
class CodebookConfig:
    """A SID build's settings.

    ``method`` names an entry of ``SID_METHODS`` and ``options`` its keyword options. ``balanced`` is the switch from
    before methods had names: unset, it follows the method; ``balanced=False`` alone means ``rq_kmeans`` (plain
    residual k-means); a value that contradicts ``method`` is an error.
    """

    levels: int = 3
    # Codes per level: one number for every level, or one per level (e.g. [256, 256, 64]).
    codes: int | list[int] = 256
    balanced: bool | None = None
    seed: int = 42
    collisions: str = "move"
    method: str = ""
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.collisions not in COLLISION_METHODS:
            raise UserError(f"collisions must be one of {', '.join(COLLISION_METHODS)}, got {self.collisions!r}")
        most = len(LEVEL_NAMES) - (self.collisions == "extra_level")
        if not 1 <= self.levels <= most:
            raise UserError(
                f"levels must be between 1 and {most} with collisions={self.collisions}, got {self.levels}"
            )
        if isinstance(self.codes, (list, tuple)) and len(self.codes) != self.levels:
            raise UserError(f"codes lists one size per level: {self.levels} levels, got {list(self.codes)}")
        if min(self.codes_per_level) < 2:
            raise UserError(f"codes must be at least 2 per level, got {self.codes}")
        if not self.method:
            self.method = "rq_kmeans" if self.balanced is False else DEFAULT_METHOD
        balanced = self.method == DEFAULT_METHOD
        if self.balanced is not None and self.balanced != balanced:
            raise UserError(
                f"balanced={self.balanced} contradicts method {self.method} (balanced is rq_kmeans_balanced)"
            )
        self.balanced = balanced
        get_sid_method(self.method).check_options(self.options)

    @property
    def codes_per_level(self) -> list[int]:
        """Codes at each of ``levels`` (the extra collision level, if any, numbers up to the last level's count).

        Example:
        >>> CodebookConfig(levels=3, codes=[256, 128, 64]).codes_per_level, CodebookConfig(levels=2).codes_per_level
        ([256, 128, 64], [256, 256])
        """
        codes = self.codes if isinstance(self.codes, (list, tuple)) else [self.codes] * self.levels
        return [int(c) for c in codes]

    @property
    def sid_length(self) -> int:
        return self.levels + (self.collisions == "extra_level")
