"""Served-path quality: the held-out release (P1/P2 rules of splits.py) and the HTTP measurement."""

from __future__ import annotations

import hashlib
import json
import math
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest

from recommender_lib.evaluation import served_quality
from recommender_lib.evaluation.served_quality import (
    ServedQualityError,
    format_markdown,
    measure_served,
)
from recommender_lib.evaluation.served_release import HeldOut, cold_user_ids, make_release
from recommender_lib.modeling.splits import SplitConfig, build_splits, load_split
from recommender_lib.sources import integrity
from recommender_lib.warehouse import tables as warehouse

EOL = "\r\n"
README = "Summary\n=======\nSynthetic test release. Licence: keep this file with the data.\n"


def _ceil(fraction: float, n: int) -> int:
    return math.ceil(fraction * n - 1e-9)


def _synthetic_ratings(n_users: int = 30, seed: int = 5) -> pd.DataFrame:
    """Users with 1..15 ratings, timestamps from a small range (ties are common), rows shuffled
    so the file is not in time order; user 100 has a fixed history for exact P1 checks."""
    rng = np.random.default_rng(seed)
    frames = []
    for user in range(1, n_users + 1):
        n = int(rng.integers(1, 16))
        frames.append(
            pd.DataFrame(
                {
                    "userId": user,
                    "movieId": rng.choice(40, size=n, replace=False) + 1,
                    "rating": rng.integers(1, 11, size=n) / 2,
                    "timestamp": rng.integers(1_000, 1_006, size=n),
                }
            )
        )
    fixed = pd.DataFrame(
        {
            "userId": 100,
            "movieId": [10, 11, 12, 13, 14, 15],
            "rating": [4.0, 3.5, 5.0, 2.0, 1.5, 4.5],
            "timestamp": [5, 1, 5, 3, 9, 9],  # order: 11, 13, 10, 12, 14, 15
        }
    )
    frames.append(fixed)
    out = pd.concat(frames, ignore_index=True)
    return out.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _ratings_line(row: Any) -> str:
    return f"{row.userId},{row.movieId},{row.rating:.1f},{row.timestamp}{EOL}"


def _write_source(root: Path, ratings: pd.DataFrame) -> Path:
    """An extracted release folder in the MovieLens format (CRLF, quoted titles and tags)."""
    src = root / "ml-latest-small"
    src.mkdir(parents=True)
    header = "userId,movieId,rating,timestamp" + EOL
    body = "".join(_ratings_line(r) for r in ratings.itertuples())
    (src / "ratings.csv").write_bytes((header + body).encode())
    movies = ["movieId,title,genres"] + [
        f'{m},"Title {m}, The (1999)",Drama|Comedy' if m % 3 == 0 else f"{m},Title {m},Action"
        for m in range(1, 41)
    ]
    (src / "movies.csv").write_bytes(EOL.join([*movies, ""]).encode())
    links = ["movieId,imdbId,tmdbId"] + [
        f"{m},{m:07d},{'' if m % 5 == 0 else m}" for m in range(1, 41)
    ]
    (src / "links.csv").write_bytes(EOL.join([*links, ""]).encode())
    tags = ["userId,movieId,tag,timestamp"] + [
        f'{r.userId},{r.movieId},"funny, sad",{r.timestamp}' for r in ratings.head(25).itertuples()
    ]
    tags.append('100,99,"a tag on an unrated movie",7')
    (src / "tags.csv").write_bytes(EOL.join([*tags, ""]).encode())
    (src / "README.txt").write_bytes(README.replace("\n", EOL).encode())
    return src


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    ratings = _synthetic_ratings()
    return _write_source(tmp_path / "src", ratings), ratings


def _key(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].tolist(), frame["movie_id"].tolist(), strict=True))


# ------------------------------------------------------------------------------ make_release


def test_release_test_and_cold_partition_the_source(source, tmp_path: Path) -> None:
    src, ratings = source
    held = make_release(src, tmp_path / "out", seed=3)
    assert len(held.release) + len(held.test) + len(held.cold) == len(ratings)
    parts = [_key(held.release), _key(held.test), _key(held.cold)]
    assert set().union(*parts) == set(zip(ratings.userId, ratings.movieId, strict=True))
    assert sum(len(p) for p in parts) == len(ratings)
    assert not set(held.cold["user_id"]) & set(held.release["user_id"])
    assert not set(held.cold["user_id"]) & set(held.test["user_id"])
    assert list(held.release.columns) == ["user_id", "movie_id", "rating", "rating_ts"]
    assert list(held.cold.columns) == ["user_id", "movie_id", "rating", "rating_ts", "reveal_rank"]


def test_p1_removes_each_warm_users_latest_ratings(source, tmp_path: Path) -> None:
    src, ratings = source
    held = make_release(src, tmp_path / "out", test_fraction=0.5, cold_user_fraction=0.0)
    assert held.cold.empty
    fixed = held.test[held.test["user_id"] == 100]
    assert fixed["movie_id"].tolist() == [12, 14, 15]  # ceil(0.5 * 6) = 3, ties by movie id
    assert sorted(held.release.loc[held.release["user_id"] == 100, "movie_id"]) == [10, 11, 13]
    for user, rows in ratings.groupby("userId"):
        ordered = rows.sort_values(["timestamp", "movieId"])
        n_test = _ceil(0.5, len(rows))
        removed = held.test.loc[held.test["user_id"] == user, "movie_id"].tolist()
        assert removed == ordered["movieId"].tolist()[len(rows) - n_test :]


def _duckdb_splits(ratings: pd.DataFrame, config: SplitConfig) -> tuple[pd.DataFrame, ...]:
    conn = warehouse.connect(":memory:")
    frame = ratings.rename(
        columns={"userId": "user_id", "movieId": "movie_id", "timestamp": "rating_ts"}
    )
    conn.register("frame", frame)
    conn.execute(
        """CREATE TABLE movielens_ratings AS SELECT CAST(user_id AS INTEGER) AS user_id,
           CAST(movie_id AS INTEGER) AS movie_id, CAST(rating AS DOUBLE) AS rating,
           CAST(rating_ts AS BIGINT) AS rating_ts FROM frame"""
    )
    build_splits(conn, config)
    return load_split(conn, "P2", "cold"), load_split(conn, "P1", "test")


@pytest.mark.parametrize(("seed", "test_fraction", "cold_fraction"), [(0, 0.2, 0.2), (7, 0.3, 0.4)])
def test_held_out_rows_are_exactly_those_of_build_splits(
    source, tmp_path: Path, seed: int, test_fraction: float, cold_fraction: float
) -> None:
    src, ratings = source
    held = make_release(src, tmp_path / "out", test_fraction, cold_fraction, seed)
    config = SplitConfig(test_fraction=test_fraction, cold_user_fraction=cold_fraction, seed=seed)
    cold, p1_test = _duckdb_splits(ratings, config)
    assert set(held.cold["user_id"]) == set(cold["user_id"])
    assert len(set(cold["user_id"])) == _ceil(cold_fraction, ratings["userId"].nunique())
    merged = held.cold.merge(cold, on=["user_id", "movie_id"], suffixes=("", "_db"))
    assert len(merged) == len(cold) == len(held.cold)
    assert (merged["reveal_rank"] == merged["reveal_rank_db"]).all()
    warm_test = p1_test[~p1_test["user_id"].isin(cold["user_id"])]
    assert _key(held.test) == _key(warm_test)
    assert sorted(cold_user_ids(ratings["userId"], cold_fraction, seed)) == sorted(
        set(cold["user_id"])
    )


def test_cold_users_never_take_every_user() -> None:
    first = min([1, 2], key=lambda u: hashlib.md5(f"0:{u}".encode()).hexdigest())
    assert cold_user_ids([1, 2], 0.99) == [first]
    assert cold_user_ids([5], 0.5) == []


def test_release_files_keep_the_source_format(source, tmp_path: Path) -> None:
    src, _ = source
    dest = tmp_path / "out"
    held = make_release(src, dest)
    folder = dest / "ml-latest-small"
    source_lines = (src / "ratings.csv").read_bytes().decode().split(EOL)
    kept = _key(held.release)
    expected = [source_lines[0]] + [
        line for line in source_lines[1:-1] if tuple(int(v) for v in line.split(",")[:2]) in kept
    ]
    assert (folder / "ratings.csv").read_bytes() == (EOL.join(expected) + EOL).encode()
    for name in ("README.txt", "movies.csv", "links.csv"):
        assert (folder / name).read_bytes() == (src / name).read_bytes()
    tags = pd.read_csv(folder / "tags.csv")
    assert set(tags["userId"]) <= set(held.release["user_id"])
    assert not _key(tags.rename(columns={"userId": "user_id", "movieId": "movie_id"})) & _key(
        held.test
    )
    assert (folder / "tags.csv").read_bytes().startswith(b"userId,movieId,tag,timestamp\r\n")
    assert held.zip_path == dest / "ml-latest-small.zip"
    assert sorted(p.name for p in dest.iterdir()) == [
        "ml-latest-small", "ml-latest-small.zip", "ml-latest-small.zip.md5",
    ]  # fmt: skip


def test_zip_matches_its_md5_and_passes_the_platform_checks(source, tmp_path: Path) -> None:
    src, _ = source
    dest = tmp_path / "out"
    held = make_release(src, dest)
    md5_text = (dest / "ml-latest-small.zip.md5").read_text()
    digest = hashlib.md5(held.zip_path.read_bytes()).hexdigest()
    assert md5_text == f"MD5 (ml-latest-small.zip) = {digest}\n"
    assert integrity.parse_md5_file(md5_text, filename="ml-latest-small.zip") == digest
    assert integrity.verify_movielens_zip(held.zip_path) == "ml-latest-small"
    with zipfile.ZipFile(held.zip_path) as zf:
        names = zf.namelist()
        assert names[0] == "ml-latest-small/"
        assert all(n.startswith("ml-latest-small/") for n in names)
        assert zf.read("ml-latest-small/README.txt") == (src / "README.txt").read_bytes()
        assert (
            zf.read("ml-latest-small/ratings.csv")
            == (dest / "ml-latest-small" / "ratings.csv").read_bytes()
        )
    assert list(held.catalogue()) == list(range(1, 41))
    again = make_release(src, dest)  # rewrites in place, byte for byte
    assert hashlib.md5(again.zip_path.read_bytes()).hexdigest() == digest


def test_missing_readme_is_an_error(source, tmp_path: Path) -> None:
    src, _ = source
    (src / "README.txt").unlink()
    with pytest.raises(FileNotFoundError, match="README"):
        make_release(src, tmp_path / "out")
    assert not (tmp_path / "out" / "ml-latest-small.zip").exists()


# ---------------------------------------------------------------------------- measure_served

K = 3


def _frame(rows: list[tuple[int, int, float, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "movie_id", "rating", "rating_ts"])


def _held() -> HeldOut:
    """Release: user 1 rated 1, 2; user 2 rated 1, 3. Test: user 1 -> 4, 5; user 2 -> 6.
    Cold: user 9 rated 1..5 (scored: 3, 4, 5 for reveals (1, 2)); user 10 has too few rows."""
    release = _frame([(1, 1, 5.0, 1), (1, 2, 4.0, 2), (2, 1, 3.0, 1), (2, 3, 5.0, 2)])
    test = _frame([(1, 4, 4.0, 3), (1, 5, 2.0, 4), (2, 6, 3.0, 3)])
    cold = _frame([(9, m, 4.0, m) for m in range(1, 6)] + [(10, 7, 3.0, 1), (10, 8, 3.0, 2)])
    cold["reveal_rank"] = [1, 2, 3, 4, 5, 1, 2]
    return HeldOut(release, test, cold, Path("/nonexistent.zip"), np.arange(1, 9))


WARM = {1: [4, 7, 5], 2: [3, 6]}  # user 2 is shown 3, which it already rated
PREDICTED = {(1, 4): 3.0, (1, 5): 2.0, (2, 6): 4.0}
COLD = {1: [5, 8], 2: [3, 4, 5]}  # by number of revealed ratings


class Backend:
    """Canned answers of the three endpoints; records every request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def answer(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
        self.calls.append((method, path, payload))
        parts = path.strip("/").split("/")
        if method == "GET" and parts[0] == "movielens-users":
            user = int(parts[1])
            if user not in WARM:
                return 404, {"detail": f"unknown user {user}"}
            items = [{"movie_id": m, "tconst": None, "predicted_rating": 4.0} for m in WARM[user]]
            return 200, {"items": items[: int(payload["k"])], "model_version": "v1"}
        if method == "POST" and path == "/scores":
            user = payload["user_id"]
            if user not in WARM:
                return 404, {"detail": f"unknown user {user}"}
            values = [PREDICTED[(user, int(c))] for c in payload["candidates"]]
            return 200, {"predicted_ratings": values, "model_version": "v1"}
        if method == "POST" and path == "/recommendations":
            items = [{"movie_id": m, "tconst": None} for m in COLD[len(payload["ratings"])]]
            return 200, {"items": items, "strategy": "two_tower", "model_version": "v1"}
        return 500, {"detail": "boom"}


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code, self._body = status, body

    def json(self) -> Any:
        return self._body


class FakeClient:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def get(self, path: str, params: dict[str, Any] | None = None) -> FakeResponse:
        return FakeResponse(*self.backend.answer("GET", path, dict(params or {})))

    def post(self, path: str, json: Any = None) -> FakeResponse:
        return FakeResponse(*self.backend.answer("POST", path, json))


def _ndcg(hits: list[int], n_rel: int) -> float:
    ideal = sum(1 / math.log2(p + 2) for p in range(min(K, n_rel)))
    return sum(1 / math.log2(p + 2) for p in hits) / ideal


def test_measure_served_arithmetic() -> None:
    backend = Backend()
    out = measure_served(
        FakeClient(backend), _held(), k=K, reveals=(1, 2), baselines=("most_popular",)
    )
    # warm: user 1 hits at 0 and 2 of {4, 5}; user 2 hits at 1 of {6}
    assert out["api.ndcg@3"] == pytest.approx((_ndcg([0, 2], 2) + _ndcg([1], 1)) / 2)
    assert out["api.recall@3"] == pytest.approx(1.0)
    assert out["api.already_rated"] == 1.0
    assert out["api.coverage@3"] == pytest.approx(5 / 8)  # {4, 7, 5, 3, 6} of 8 movies
    assert out["api.mean_popularity"] == pytest.approx(1 / 5)  # only 3 has a release rating
    assert out["api.rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert out["api.mae"] == pytest.approx(2 / 3)
    # cold: scored set {3, 4, 5} for both reveal sizes
    assert out["api.cold.ndcg@3_k1"] == pytest.approx(_ndcg([0], 3))
    assert out["api.cold.recall@3_k1"] == pytest.approx(1 / 3)
    assert out["api.cold.ndcg@3_k2"] == pytest.approx(1.0)
    assert out["api.cold.already_rated_k2"] == 0.0
    cold_bodies = [p for m, path, p in backend.calls if path == "/recommendations"]
    assert cold_bodies == [
        {"ratings": [{"title": "1", "rating": 4.0, "rated_at": 1}], "k": K, "exclude": ["2"]},
        {"ratings": [{"title": "1", "rating": 4.0, "rated_at": 1},
                     {"title": "2", "rating": 4.0, "rated_at": 2}], "k": K,
         "exclude": []},
    ]  # fmt: skip
    assert out["users"] == 2 and out["cold_users"] == 1 and out["cold_scored_ratings"] == 3
    assert out["api.unknown_users"] == 0 and out["api.model_versions"] == 1
    # most popular: 1 (2 ratings), 3 (1, mean 5), 2 (1, mean 4), then 4, 5, ... by id
    assert out["most_popular.ndcg@3"] == pytest.approx((_ndcg([1, 2], 2) + 0.0) / 2)
    assert out["most_popular.recall@3"] == pytest.approx(0.5)
    assert out["most_popular.already_rated"] == 0.0
    assert out["most_popular.coverage@3"] == pytest.approx(4 / 8)  # {3, 4, 5} and {2, 4, 5}
    assert out["most_popular.cold.ndcg@3_k1"] == pytest.approx(1.0)  # 1, 2 excluded: 3, 4, 5
    mu = 17 / 4
    assert out["most_popular.rmse"] == pytest.approx(
        math.sqrt(((4 - mu) ** 2 + (2 - mu) ** 2 + (3 - mu) ** 2) / 3)
    )
    table = format_markdown(out, k=K, reveals=(1, 2))
    assert table.splitlines()[0].startswith("| system | NDCG@3 | Recall@3 | RMSE | MAE |")
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "api", "most_popular",
    ]  # fmt: skip
    assert json.loads(json.dumps(out)) == out


def test_scores_are_chunked_and_unknown_users_counted() -> None:
    backend = Backend()
    held = _held()
    extra = _frame([(3, 7, 4.0, 9)])  # user 3: every rating removed -> unknown to the API
    held = HeldOut(held.release, pd.concat([held.test, extra]), held.cold, held.zip_path)
    out = measure_served(
        FakeClient(backend), held, k=K, reveals=(1, 2), baselines=(), score_chunk=1
    )
    scores = [p for m, path, p in backend.calls if path == "/scores"]
    assert all(len(p["candidates"]) == 1 for p in scores)
    assert out["api.unknown_users"] == 1.0
    assert out["api.recall@3"] == pytest.approx(2 / 3)  # user 3 counts, with no hits
    assert out["api.unscored_ratings"] == 1.0
    assert out["api.rmse"] == pytest.approx(math.sqrt(2 / 3))  # over the answered rows
    assert out["catalogue_titles"] == 8  # from the ratings: the zip does not exist
    assert not any(key.startswith("most_popular") for key in out)


def test_contract_breaks_raise() -> None:
    class Broken(Backend):
        def answer(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
            if path == "/scores":
                return 422, {"detail": [{"field": "user_id", "message": "extra"}]}
            return super().answer(method, path, payload)

    with pytest.raises(ServedQualityError, match="HTTP 422"):
        measure_served(FakeClient(Broken()), _held(), k=K, reveals=(1, 2), baselines=())


def test_ease_plumbing_with_a_stub(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[pd.DataFrame] = []

    class StubEase:
        name = "ease"
        predicts_ratings = False

        def fit(self, train: pd.DataFrame) -> StubEase:
            return self

        def score_catalogue(
            self, history: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
        ) -> np.ndarray:
            seen.append(history)
            return np.tile(-np.asarray(item_ids, dtype=float), (len(user_ids), 1))

    monkeypatch.setattr(served_quality, "Ease", StubEase)
    out = measure_served(FakeClient(Backend()), _held(), k=K, reveals=(1, 2), baselines=("ease",))
    assert out["ease.ndcg@3"] == pytest.approx((_ndcg([1, 2], 2) + 0.0) / 2)  # lowest ids first
    assert math.isnan(out["ease.rmse"])  # predicts_ratings = False: no rating accuracy
    assert out["ease.already_rated"] == 0.0
    cold_histories = seen[-2:]
    assert [sorted(h["movie_id"]) for h in cold_histories] == [[1], [1, 2]]
    assert "| ease |" in format_markdown(out, k=K, reveals=(1, 2))


# ------------------------------------------------------------------------- over real HTTP


@pytest.fixture
def stub_server() -> Iterator[tuple[str, Backend]]:
    """The canned backend behind a real HTTP server on 127.0.0.1 (a free port)."""
    backend = Backend()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            self._send(*backend.answer("GET", url.path, params))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            self._send(*backend.answer("POST", self.path, json.loads(self.rfile.read(length))))

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", backend
    finally:
        server.shutdown()
        server.server_close()


def test_measure_served_over_http_with_httpx(stub_server) -> None:
    httpx = pytest.importorskip("httpx")
    base_url, _ = stub_server
    with httpx.Client(base_url=base_url, timeout=10) as client:
        over_http = measure_served(client, _held(), k=K, reveals=(1, 2), baselines=())
    in_process = measure_served(FakeClient(Backend()), _held(), k=K, reveals=(1, 2), baselines=())
    timing = {"seconds", "api.seconds"}
    assert {k: v for k, v in over_http.items() if k not in timing} == {
        k: v for k, v in in_process.items() if k not in timing
    }


def test_measure_served_with_a_fastapi_test_client() -> None:
    """The call the quality-floor test makes: a `TestClient` is a client as it is."""
    fastapi = pytest.importorskip("fastapi")
    from fastapi.responses import JSONResponse
    from fastapi.testclient import TestClient

    backend = Backend()
    app = fastapi.FastAPI()

    @app.get("/movielens-users/{user_id}/recommendations")
    def user_recs(user_id: int, k: int = 10) -> JSONResponse:
        status, body = backend.answer(
            "GET", f"/movielens-users/{user_id}/recommendations", {"k": k}
        )
        return JSONResponse(body, status_code=status)

    @app.post("/{name}")
    def post(name: str, payload: dict[str, Any]) -> JSONResponse:
        status, body = backend.answer("POST", f"/{name}", payload)
        return JSONResponse(body, status_code=status)

    with TestClient(app) as client:
        out = measure_served(client, _held(), k=K, reveals=(1, 2), baselines=())
    assert out["api.ndcg@3"] == pytest.approx((_ndcg([0, 2], 2) + _ndcg([1], 1)) / 2)
    assert out["api.rmse"] == pytest.approx(math.sqrt(2 / 3))
    assert out["api.cold.ndcg@3_k2"] == pytest.approx(1.0)
