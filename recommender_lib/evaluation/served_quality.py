"""Served-path quality: what users get through HTTP, scored against ratings removed beforehand.

The release comes from `recommender_lib.evaluation.served_release.make_release` (the held-out
rows of docs/architecture.md §6 removed); the platform is run on it, and `measure_served`
asks the running API, through an injected HTTP client only, for what a user would see:

- `GET /movielens-users/{id}/recommendations?k=` for each warm user: NDCG@k, Recall@k over the
  removed rows (binary relevance, every removed row relevant), catalogue coverage@k, mean
  popularity of what is recommended (release rating count per title), and `already_rated`
  (recommended titles the user rated in the release; a correct service returns 0);
- `POST /scores {"user_id", "candidates"}` (chunks of at most 1000): RMSE and MAE in stars over
  every removed row;
- `POST /recommendations` for each cold user and reveal size k: the k earliest ratings, the
  unrevealed ratings up to `max(reveals)` excluded, NDCG@k / Recall@k on `reveal_rank >
  max(reveals)` (same scored rows and candidate set for every k, as `evaluate_cold_start`).

The same numbers are computed offline for most-popular and EASE on the same removed rows, the
baselines ranking every movie id of `movies.csv`. The HTTP client only needs `.get(path,
params=)` and `.post(path, json=)` returning objects with `.status_code` and `.json()`:
`httpx.Client(base_url=...)` and `fastapi.testclient.TestClient(app)` both fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from recommender_lib.evaluation.metrics import mae, ranking_metrics, rmse
from recommender_lib.evaluation.protocols import recommended_positions
from recommender_lib.evaluation.served_release import HeldOut
from recommender_lib.index.top_k import PAD
from recommender_lib.modeling.baselines import Ease, MostPopular
from recommender_lib.warehouse.catalog import imdb_only_item_id

MAX_SCORE_CANDIDATES = 1000  # `POST /scores` accepts at most this many candidates
SYSTEMS = ("api", "most_popular", "ease")


class ServedQualityError(RuntimeError):
    """The API answered something other than the contract (status, shape)."""


class Response(Protocol):
    status_code: int

    def json(self) -> Any: ...


class HttpClient(Protocol):
    """What `measure_served` needs of an HTTP client (httpx.Client, TestClient)."""

    def get(self, url: str, *, params: Any = ...) -> Response: ...

    def post(self, url: str, *, json: Any = ...) -> Response: ...


# ---------------------------------------------------------------------------- measurement


def _ok(resp: Any, what: str) -> Any:
    if resp.status_code != 200:
        try:
            body = str(resp.json())
        except Exception:
            body = str(getattr(resp, "text", ""))
        raise ServedQualityError(f"{what}: HTTP {resp.status_code}: {body[:500]}")
    return resp.json()


def _item_id(item: Mapping[str, Any]) -> int:
    """The platform's item id of a returned title (IMDb-only titles: -int(tconst[2:]))."""
    if item.get("movie_id") is not None:
        return int(item["movie_id"])
    if item.get("tconst"):
        return imdb_only_item_id(str(item["tconst"]))
    raise ServedQualityError(f"recommended item without movie_id or tconst: {item}")


def _by_user(frame: pd.DataFrame) -> dict[int, set[int]]:
    return {int(u): set(g.tolist()) for u, g in frame.groupby("user_id", sort=True)["movie_id"]}


def ranking_summary(
    lists: Mapping[int, Sequence[int]],
    relevant: Mapping[int, set[int]],
    rated: Mapping[int, set[int]],
    popularity: Mapping[int, float],
    n_catalogue: int,
    k: int = 10,
) -> dict[str, float]:
    """NDCG@k, Recall@k (mean over users with a relevant item; a missing list counts as empty),
    coverage@k (distinct recommended titles / n_catalogue), mean popularity of the recommended
    titles and `already_rated` (recommended titles found in the user's `rated` set)."""
    shown = [(u, i) for u, items in lists.items() for i in list(items)[:k]]
    distinct = {i for _, i in shown}
    return {
        **ranking_metrics(lists, relevant, k),
        f"coverage@{k}": len(distinct) / n_catalogue if n_catalogue else float("nan"),
        "mean_popularity": (
            float(np.mean([popularity.get(i, 0.0) for _, i in shown])) if shown else float("nan")
        ),
        "already_rated": float(sum(i in rated.get(u, ()) for u, i in shown)),
    }


@dataclass(frozen=True)
class _ColdSets:
    """Per scored cold user: ordered (movie_id, rating) rows up to max(reveals), the scored set."""

    prefix: dict[int, list[tuple[int, float, int]]]  # (movie_id, stars, unix time)
    relevant: dict[int, set[int]]
    excluded: dict[int, set[int]]
    rows: pd.DataFrame  # the scored rows (reveal_rank > max(reveals))


def _cold_sets(cold: pd.DataFrame, reveals: Sequence[int]) -> _ColdSets:
    top = max(reveals)
    scored = cold[cold["reveal_rank"] > top]
    users = set(scored["user_id"].tolist())
    head = cold[(cold["reveal_rank"] <= top) & cold["user_id"].isin(users)]
    head = head.sort_values(["user_id", "reveal_rank"], kind="stable")
    prefix: dict[int, list[tuple[int, float, int]]] = {u: [] for u in sorted(users)}
    for u, m, r, t in zip(
        head["user_id"], head["movie_id"], head["rating"], head["rating_ts"], strict=True
    ):
        prefix[int(u)].append((int(m), float(r), int(t)))
    return _ColdSets(prefix, _by_user(scored), _by_user(head), scored.reset_index(drop=True))


def _served_ratings(
    client: HttpClient, test: pd.DataFrame, chunk: int, versions: set[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """(truth, predictions) of the test rows `POST /scores` answered, and rows of unknown users."""
    truth: list[np.ndarray] = []
    pred: list[float] = []
    unknown = 0
    for user, rows in test.groupby("user_id", sort=True):
        movies = rows["movie_id"].tolist()
        got: list[float] = []
        for start in range(0, len(movies), chunk):
            candidates = [str(m) for m in movies[start : start + chunk]]
            resp = client.post("/scores", json={"user_id": int(user), "candidates": candidates})
            if resp.status_code == 404 and start == 0 and _unknown_user(resp):
                break
            body = _ok(resp, f"POST /scores user {user}")
            versions.add(str(body.get("model_version")))
            values = [float(v) for v in body["predicted_ratings"]]
            if len(values) != len(candidates):
                raise ServedQualityError(
                    f"POST /scores user {user}: {len(values)} ratings for {len(candidates)}"
                )
            got.extend(values)
        if len(got) < len(movies):
            unknown += len(movies)
            continue
        pred.extend(got)
        truth.append(rows["rating"].to_numpy(dtype=np.float64))
    t = np.concatenate(truth) if truth else np.empty(0)
    return t, np.asarray(pred, dtype=np.float64), unknown


def _unknown_user(resp: Any) -> bool:
    """A 404 naming an unknown user (not an unknown title, which is a broken contract)."""
    try:
        detail = resp.json().get("detail")
    except Exception:
        return False
    return isinstance(detail, str) and "user" in detail.lower()


def _api_warm(
    client: HttpClient, users: Sequence[int], k: int, versions: set[str]
) -> tuple[dict[int, list[int]], int]:
    lists: dict[int, list[int]] = {}
    unknown = 0
    for user in users:
        resp = client.get(f"/movielens-users/{user}/recommendations", params={"k": k})
        if resp.status_code == 404 and _unknown_user(resp):
            unknown += 1  # e.g. a user whose every rating was removed: scored with no hits
            lists[user] = []
            continue
        body = _ok(resp, f"GET /movielens-users/{user}/recommendations")
        versions.add(str(body.get("model_version")))
        lists[user] = [_item_id(item) for item in body["items"]][:k]
    return lists, unknown


def _api_cold(
    client: HttpClient, sets: _ColdSets, reveal: int, top: int, k: int, versions: set[str]
) -> dict[int, list[int]]:
    lists: dict[int, list[int]] = {}
    for user, rows in sets.prefix.items():
        body = {
            "ratings": [{"title": str(m), "rating": r, "rated_at": t} for m, r, t in rows[:reveal]],
            "k": k,
            "exclude": [str(m) for m, _, _ in rows[reveal:top]],
        }
        answer = _ok(client.post("/recommendations", json=body), f"POST /recommendations {user}")
        versions.add(str(answer.get("model_version")))
        lists[user] = [_item_id(item) for item in answer["items"]][:k]
    return lists


def _offline_lists(
    model: Any,
    history: pd.DataFrame,
    excluded: Mapping[int, set[int]],
    users: Sequence[int],
    catalogue: np.ndarray,
    k: int,
    batch_users: int = 256,
) -> dict[int, list[int]]:
    """Top-k movie ids per user, as the offline evaluation ranks them; `excluded` never returned."""
    column = pd.Index(catalogue)
    by_user = {int(u): g for u, g in history.groupby("user_id", sort=False)}
    empty = history.iloc[:0]
    lists: dict[int, list[int]] = {}
    for start in range(0, len(users), batch_users):
        batch = np.asarray(users[start : start + batch_users], dtype=np.int64)
        rows = pd.concat([by_user.get(int(u), empty) for u in batch], ignore_index=True)
        mask = np.zeros((len(batch), len(catalogue)), dtype=bool)
        for r, user in enumerate(batch):
            cols = column.get_indexer(list(excluded.get(int(user), ())))
            mask[r, cols[cols >= 0]] = True
        top = recommended_positions(model, rows, batch, catalogue, mask, k)
        for user, row in zip(batch, top, strict=True):
            lists[int(user)] = [int(catalogue[c]) for c in row if c != PAD]
    return lists


@dataclass
class _Scores:
    """Ranking summaries of each system, written into `out` under `<system>.` keys."""

    out: dict[str, float]
    relevant: Mapping[int, set[int]]
    rated: Mapping[int, set[int]]
    cold_sets: _ColdSets
    popularity: Mapping[int, float]
    n_catalogue: int
    k: int

    def warm(self, system: str, lists: Mapping[int, Sequence[int]]) -> None:
        summary = ranking_summary(
            lists, self.relevant, self.rated, self.popularity, self.n_catalogue, self.k
        )
        self.out.update({f"{system}.{key}": value for key, value in summary.items()})

    def cold(self, system: str, reveal: int, lists: Mapping[int, Sequence[int]]) -> None:
        c, k = self.cold_sets, self.k
        summary = ranking_summary(
            lists, c.relevant, c.excluded, self.popularity, self.n_catalogue, k
        )
        self.out[f"{system}.cold.ndcg@{k}_k{reveal}"] = summary[f"ndcg@{k}"]
        self.out[f"{system}.cold.recall@{k}_k{reveal}"] = summary[f"recall@{k}"]
        self.out[f"{system}.cold.already_rated_k{reveal}"] = summary["already_rated"]


def _score_baseline(
    name: str,
    held: HeldOut,
    scores: _Scores,
    users: Sequence[int],
    cold_users: Sequence[int],
    catalogue: np.ndarray,
    reveals: Sequence[int],
) -> None:
    """The offline baseline `name` fitted on the release, scored as the API is."""
    k, out = scores.k, scores.out
    model = (MostPopular() if name == "most_popular" else Ease()).fit(held.release)
    scores.warm(name, _offline_lists(model, held.release, scores.rated, users, catalogue, k))
    if model.predicts_ratings and not held.test.empty:
        history = held.release[held.release["user_id"].isin(users)]
        pairs = held.test[["user_id", "movie_id"]].reset_index(drop=True)
        p = np.asarray(model.predict(history, pairs), dtype=np.float64).ravel()
        truth_all = held.test["rating"].to_numpy(dtype=np.float64)
        out |= {f"{name}.rmse": rmse(truth_all, p), f"{name}.mae": mae(truth_all, p)}
    else:
        out |= {f"{name}.rmse": float("nan"), f"{name}.mae": float("nan")}
    for reveal in reveals:
        revealed = held.cold[
            (held.cold["reveal_rank"] <= reveal) & held.cold["user_id"].isin(cold_users)
        ]
        lists = _offline_lists(model, revealed, scores.cold_sets.excluded, cold_users, catalogue, k)
        scores.cold(name, reveal, lists)


def measure_served(
    client: HttpClient,
    held: HeldOut,
    k: int = 10,
    reveals: Sequence[int] = (3, 5, 10),
    popular_counts: Mapping[int, float] | pd.Series | None = None,
    *,
    baselines: Sequence[str] = ("most_popular", "ease"),
    score_chunk: int = MAX_SCORE_CANDIDATES,
) -> dict[str, float]:
    """Quality of the API behind `client` on `held`'s removed ratings, beside offline baselines.

    Keys: `<system>.ndcg@k`, `.recall@k`, `.rmse`, `.mae`, `.coverage@k`, `.mean_popularity`,
    `.already_rated`, `.cold.ndcg@k_k<r>`, `.cold.recall@k_k<r>`, `.cold.already_rated_k<r>` for
    system `api` and each of `baselines`; plus `users`, `cold_users`, `test_ratings`,
    `cold_scored_ratings`, `catalogue_titles`, `api.unknown_users` (404 users, scored as empty
    lists), `api.unscored_ratings` (their test rows, left out of RMSE), `api.model_versions`
    (distinct versions that answered; 1 unless a swap happened mid-run), `api.seconds`,
    `seconds`. `popular_counts` (movie id -> count) overrides the release rating counts used
    for mean popularity.
    """
    started = time.perf_counter()
    unknown_baselines = sorted(set(baselines) - set(SYSTEMS[1:]))
    if unknown_baselines:
        raise ValueError(f"unknown baselines {unknown_baselines}; known: {list(SYSTEMS[1:])}")
    if not reveals or min(reveals) < 1:
        raise ValueError(f"reveals must be positive, got {reveals}")
    top = max(reveals)
    catalogue = held.catalogue()
    n_cat = len(catalogue)
    counts = held.release.groupby("movie_id").size() if popular_counts is None else popular_counts
    popularity = {int(m): float(c) for m, c in dict(counts).items()}
    rated = _by_user(held.release)
    relevant = _by_user(held.test)
    users = sorted(relevant)
    cold = _cold_sets(held.cold, reveals)
    cold_users = sorted(cold.prefix)
    out: dict[str, float] = {
        "users": float(len(users)),
        "cold_users": float(len(cold_users)),
        "test_ratings": float(len(held.test)),
        "cold_scored_ratings": float(len(cold.rows)),
        "catalogue_titles": float(len(catalogue)),
    }

    scores = _Scores(out, relevant, rated, cold, popularity, n_cat, k)
    versions: set[str] = set()
    api_started = time.perf_counter()
    warm_lists, unknown_users = _api_warm(client, users, k, versions)
    scores.warm("api", warm_lists)
    truth, pred, unscored = _served_ratings(client, held.test, score_chunk, versions)
    out |= {"api.rmse": rmse(truth, pred), "api.mae": mae(truth, pred)}
    for reveal in reveals:
        scores.cold("api", reveal, _api_cold(client, cold, reveal, top, k, versions))
    out |= {
        "api.unknown_users": float(unknown_users),
        "api.unscored_ratings": float(unscored),
        "api.model_versions": float(len(versions)),
        "api.seconds": time.perf_counter() - api_started,
    }
    for name in baselines:
        _score_baseline(name, held, scores, users, cold_users, catalogue, reveals)
    out["seconds"] = time.perf_counter() - started
    return out


def format_markdown(
    results: Mapping[str, float], k: int = 10, reveals: Sequence[int] = (3, 5, 10)
) -> str:
    """A markdown table of `measure_served` results: one row per system present."""
    columns = [
        (f"NDCG@{k}", f"ndcg@{k}", 4),
        (f"Recall@{k}", f"recall@{k}", 4),
        ("RMSE", "rmse", 4),
        ("MAE", "mae", 4),
        (f"coverage@{k}", f"coverage@{k}", 4),
        ("mean popularity", "mean_popularity", 1),
        ("already rated", "already_rated", 0),
    ] + [(f"cold NDCG@{k} k={r}", f"cold.ndcg@{k}_k{r}", 4) for r in reveals]

    def cell(value: float | None, digits: int) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:.{digits}f}"

    lines = [
        "| system | " + " | ".join(title for title, _, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for system in SYSTEMS:
        if not any(key.startswith(f"{system}.") for key in results):
            continue
        cells = [cell(results.get(f"{system}.{key}"), digits) for _, key, digits in columns]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
