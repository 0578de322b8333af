"""The promotion gates a new model version must pass before the `champion` alias moves to it.

* `smoke_failures`: the loaded bundle answers sanely — a popular title's content neighbours
  share its genres, and a user who loves a few popular titles gets k distinct, unseen titles
  with finite predicted ratings in [0.5, 5].
* `regression_failures`: the candidate's held-out metrics — measured through the served
  ranking (`recommender_lib.engine.ranking`) — are not worse than the current champion's beyond a
  tolerance (lower is better for RMSE/MAE, higher for NDCG/Recall).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recommender_lib.engine.recommender import Recommender

# metric -> +1 when higher is better, -1 when lower is better
GATED_METRICS: dict[str, int] = {
    "P1.two_tower.rmse": -1,
    "P1.two_tower.ndcg_at_10": +1,
    "P2.two_tower.rmse_k3": -1,
    "P2.two_tower.ndcg_at_10_k3": +1,
}
METRIC_TAG_PREFIX = "metric."


def smoke_failures(rec: Recommender, probes: int = 20, k: int = 5) -> list[str]:
    """What is wrong with the answers of `rec` on a fixed probe set (empty list = sane)."""
    failures: list[str] = []
    with_genres = [int(r) for r in rec._popular if len(rec.catalog.iloc[int(r)]["genres"])]
    probe_rows = with_genres[:probes]
    if not probe_rows:
        return ["no catalogue title has genres: nothing to probe"]
    shared = []
    for row in probe_rows:
        genres = set(rec.title(row)["genres"])
        item = int(rec.embeddings.item_ids[row])
        neighbours = rec.content.similar(item, k)
        if any(i == item for i, _ in neighbours):
            failures.append(f"title {item} is its own neighbour")
        shared += [bool(genres & set(rec.title(rec.row_of(i))["genres"])) for i, _ in neighbours]
    share = float(np.mean(shared)) if shared else 0.0
    if share < 0.8:
        failures.append(f"only {share:.0%} of content neighbours share a genre with the probe")
    liked = [(int(rec.embeddings.item_ids[r]), 5.0) for r in probe_rows[:3]]
    result = rec.recommend(liked, k)
    ids = [i.item_id for i in result.items]
    stars = np.array([i.predicted_rating for i in result.items])
    if len(ids) != k or len(set(ids)) != k:
        failures.append(f"recommend returned {len(ids)} items ({len(set(ids))} distinct), not {k}")
    if {i for i, _ in liked} & set(ids):
        failures.append("recommend returned a title the user rated")
    if not (np.isfinite(stars).all() and ((stars >= 0.5) & (stars <= 5.0)).all()):
        failures.append(f"predicted ratings outside [0.5, 5]: {stars.tolist()}")
    return failures


def regression_failures(
    candidate_tags: Mapping[str, str], champion_tags: Mapping[str, str], tolerance: float
) -> list[str]:
    """Gated metrics (version tags `metric.<name>`) where the candidate is worse than the
    champion by more than `tolerance` (relative; negative = must improve). Metrics missing on
    either side are not compared."""
    failures = []
    for name, direction in GATED_METRICS.items():
        old = champion_tags.get(METRIC_TAG_PREFIX + name)
        new = candidate_tags.get(METRIC_TAG_PREFIX + name)
        if old is None or new is None:
            continue
        old_v, new_v = float(old), float(new)
        worse_by = (old_v - new_v) * direction  # > 0 when the candidate is worse
        if worse_by > tolerance * abs(old_v):
            failures.append(
                f"{name} {new_v:.4f} is worse than the champion's {old_v:.4f} "
                f"by more than {tolerance:.0%}"
            )
    return failures
