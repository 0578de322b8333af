"""What a registered model version says about itself: its tags and its description.

Tags carry what the registry and the promotion gates read (`bundle_version`, the gated metrics,
the data versions); every metric stays in the MLflow run. The description says, in words, what
the model was trained on, how it ranks and its headline held-out numbers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from recommender_lib.registry.promotion import GATED_METRICS, METRIC_TAG_PREFIX

HEADLINE_METRICS = (
    ("P1.two_tower.ndcg_at_10", "P1 NDCG@10"),
    ("P1.most_popular.ndcg_at_10", "most popular"),
    ("P1.two_tower.rmse", "RMSE"),
    ("P2.two_tower.ndcg_at_10_k3", "cold start (3 ratings) NDCG@10"),
)


def version_description(manifest: Mapping[str, Any]) -> str:
    """What a version was trained on, how it ranks, and its headline held-out numbers."""
    model = manifest.get("model") or {}
    data = model.get("trained_on") or {}
    parts = []
    if data:
        parts.append(
            f"Trained on {data.get('kind', '?')}: {int(data.get('ratings', 0)):,} ratings by "
            f"{int(data.get('users', 0)):,} users of {int(data.get('titles', 0)):,} titles "
            f"({str(data.get('first_rating_at'))[:10]} to {str(data.get('last_rating_at'))[:10]})."
        )
    rule = (model.get("ranking_rule") or {}).get("description")
    if rule:
        parts.append(f"Ranking: {rule}.")
    metrics = manifest.get("metrics") or {}
    shown = [f"{label} {metrics[key]:.4f}" for key, label in HEADLINE_METRICS if key in metrics]
    if shown:
        parts.append("Evaluated recipe: " + ", ".join(shown) + ". Every metric is in the run.")
    return " ".join(parts)


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, item in value.items():
            out.update(_flatten(f"{prefix}.{key}", item))
        return out
    return {prefix: value if isinstance(value, str) else json.dumps(value)}


def version_tags(
    manifest: Mapping[str, Any], bundle_version: str, tags: Mapping[str, str]
) -> dict[str, str]:
    """`bundle_version`, the gated metrics (every metric stays in the MLflow run), the data
    versions, then `tags`."""
    out = {"bundle_version": bundle_version}
    gated = {n: v for n, v in (manifest.get("metrics") or {}).items() if n in GATED_METRICS}
    out.update(_flatten(METRIC_TAG_PREFIX.rstrip("."), gated))
    out.update(_flatten("source", manifest.get("source_versions") or {}))
    out.update({str(k): str(v) for k, v in tags.items()})
    return out
