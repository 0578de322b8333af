"""The ranking rule saved with a trained two-tower model: how its catalogue is ordered for a user.

The rule is data — chosen on validation (`recommender_lib.evaluation.rule_choice`), written in
the model's metadata and refused at load when unknown; `recommender_lib.engine.ranking` applies
it (its docstring gives the formula).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

RULE_KINDS = ("retrieval", "stars_in_window", "blend")
BLEND_WINDOW = 200  # default candidates re-ordered by stars


class UnknownRankingRuleError(ValueError):
    """A saved ranking rule this code cannot apply (unknown kind or field)."""


@dataclass(frozen=True)
class RankingRule:
    """How a user's candidates are ordered (the formula: `recommender_lib.engine.ranking`)."""

    kind: str = "retrieval"
    pop_weight: float = 0.0
    cold_pop_weight: float = 0.0
    cold_half: float = 10.0  # ratings at which the cold-start popularity boost is halved
    window: int = BLEND_WINDOW  # candidates re-ordered by stars (stars_in_window, blend)
    star_weight: float = 0.0  # blend only

    def __post_init__(self) -> None:
        if self.kind not in RULE_KINDS:
            raise UnknownRankingRuleError(
                f"unknown ranking rule {self.kind!r}; this version knows {list(RULE_KINDS)}"
            )
        if self.window < 1 or self.cold_half <= 0:
            raise UnknownRankingRuleError(f"invalid ranking rule {self}")

    def popularity_weight(self, n_ratings: np.ndarray) -> np.ndarray:
        """w(n) for each user's number of ratings."""
        n = np.asarray(n_ratings, dtype=np.float64)
        return self.pop_weight + self.cold_pop_weight * self.cold_half / (n + self.cold_half)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RankingRule:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UnknownRankingRuleError(f"ranking rule has unknown fields {unknown}")
        return cls(**data)

    def describe(self) -> str:
        text = f"{self.kind}: u·v/τ + b + w(n)·log(1+count), w(n) = {self.pop_weight:g}"
        if self.cold_pop_weight:
            text += f" + {self.cold_pop_weight:g}·{self.cold_half:g}/(n+{self.cold_half:g})"
        if self.kind == "stars_in_window":
            text += f"; top {self.window} re-ordered by predicted stars"
        elif self.kind == "blend":
            text += f"; top {self.window} by score + {self.star_weight:g}·predicted stars"
        return text
