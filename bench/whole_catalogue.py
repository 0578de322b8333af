"""Whole-IMDb catalogue (every rated title, `CatalogFilters.whole_imdb()`): build and serve.

    .venv/bin/python bench/whole_catalogue.py --mirror /tmp/fullmirror_akas --work /tmp/wc

1. Mirror: `--mirror` holds a generated `full` profile mirror (12 M basics rows, 1.5 M rated,
   ~49 M akas rows, 25 M MovieLens ratings); with `--generate` it is written there first
   (`python -m recommender_lib.sources.sample_data --profile full` does the same).
2. Build (skipped when `--work`/bundle exists, unless `--rebuild`; a build stopped after a
   model was trained reuses it and its time from `<work>/stages.json`): a DuckDB warehouse file
   under `--work`, the catalogue with `CatalogFilters.whole_imdb()` (min_votes 1, every title
   type), its akas, the splits; then every step of `workflow.steps.train_and_bundle`, timed
   one by one. Training sees the ratings of one user in `--user-stride` and 1 epoch: serving
   cost depends on the catalogue size and the embedding width, not on how well it is trained.
3. Load: `Recommender.load` in a fresh process (time, RSS), and the title-search build alone.
4. Serve: `uvicorn serving.app:app` (one worker, `CINE_BUNDLE_DIR`), time to `/ready` and
   RSS; then one keep-alive connection (`bench/serving_load.py`'s client) sends requests back
   to back for `--duration` s per endpoint after `--warmup` s: `/titles/{id}/similar?k=10`,
   `POST /recommendations` (3 ratings), `GET /movielens-users/{id}/recommendations`,
   `/titles/search`. p50/p99 per endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from serving_load import (
    drive,
    get_request,
    request_pools,
    start_server,
    wait_ready,
)

COMMAND = ".venv/bin/python bench/whole_catalogue.py --mirror /tmp/fullmirror_akas --work /tmp/wc"


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) resident set size of a process in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Timer:
    """Named stage timings (wall and this process's CPU), printed as they finish; with `path`,
    also kept in that JSON file (so a rerun that reuses a step still reports its time)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.stages: dict[str, float] = {}
        if path is not None and path.is_file():
            self.stages = json.loads(path.read_text())

    def __call__(self, name: str, fn, *args, **kw):
        t, cpu = time.perf_counter(), time.process_time()
        out = fn(*args, **kw)
        self.stages[name] = time.perf_counter() - t
        if self.path is not None:
            self.path.write_text(json.dumps(self.stages))
        print(
            f"  {name}: {self.stages[name]:.1f} s wall, {time.process_time() - cpu:.1f} s CPU "
            f"(RSS peak {rss_mb()[1]:,.0f} MiB)",
            flush=True,
        )
        return out


def reused_model(folder: Path, timer: Timer):
    """The model a previous run of this bench trained into `folder` (its time is in the
    timer's file), or None."""
    from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
    from recommender_lib.workflow.steps import ModelArtefact

    if not folder.is_dir() or timer.path is None:
        return None
    print(f"  reusing the model in {folder}", flush=True)
    return ModelArtefact.of(TrainedTwoTower.load(folder), folder)


def progress(line: str) -> None:
    """A training step's log line, as it comes."""
    print(f"    {line}", flush=True)


def load_warehouse(mirror_dir: Path, db: Path, user_stride: int, timer: Timer) -> None:
    """The warehouse file: MovieLens (1 user in `user_stride` kept), IMDb titles, the
    whole-IMDb catalogue, its akas, the splits."""
    from recommender_lib.modeling.splits import build_splits
    from recommender_lib.sources.integrity import extract_zip
    from recommender_lib.warehouse import tables as wh
    from recommender_lib.warehouse.akas import load_catalog_akas
    from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog

    db.unlink(missing_ok=True)
    conn = wh.connect(db)
    conn.execute("SET memory_limit = '4GB'")
    release = extract_zip(mirror_dir / "movielens" / "ml-latest-small.zip", db.parent / "scratch")
    timer("load MovieLens", wh.load_movielens_release, conn, release / "ml-latest-small")
    conn.execute(f"DELETE FROM movielens_ratings WHERE user_id % {user_stride} <> 0")
    imdb = mirror_dir / "imdb"
    basics, ratings = imdb / "title.basics.tsv.gz", imdb / "title.ratings.tsv.gz"
    timer("load imdb_titles", wh.load_imdb_titles, conn, basics, ratings)
    timer("build catalog (whole_imdb)", build_catalog, conn, CatalogFilters.whole_imdb())
    timer("load catalog_akas", load_catalog_akas, conn, imdb / "title.akas.tsv.gz")
    timer("build splits", build_splits, conn)
    conn.execute("CREATE OR REPLACE TABLE bench_done AS SELECT 1 AS done")
    conn.close()


def build(mirror_dir: Path, work: Path, user_stride: int, epochs: int) -> dict:
    """Warehouse (reused when complete), whole-IMDb catalogue and bundle under `work`; returns
    timings and counts."""
    from recommender_lib.modeling.two_tower.params import TwoTowerParams
    from recommender_lib.warehouse import tables as wh
    from recommender_lib.workflow import steps

    work.mkdir(parents=True, exist_ok=True)
    timer = Timer(work / "stages.json")
    db = work / "warehouse.duckdb"
    done = False
    if db.is_file():
        with wh.connect(db, read_only=True) as check:
            done = wh.table_exists(check, "bench_done")
    if not done:
        load_warehouse(mirror_dir, db, user_stride, timer)
    conn = wh.connect(db)
    conn.execute("SET memory_limit = '4GB'")
    counts = {
        name: conn.execute(sql).fetchall()[0][0]
        for name, sql in {
            "catalog_titles": "SELECT count(*) FROM catalog",
            "imdb_only_titles": "SELECT count(*) FROM catalog WHERE movie_id IS NULL",
            "catalog_akas": "SELECT count(*) FROM catalog_akas",
            "training_ratings": "SELECT count(*) FROM movielens_ratings",
            "training_users": "SELECT count(DISTINCT user_id) FROM movielens_ratings",
        }.items()
    }
    print(f"  {counts}", flush=True)

    connect = steps.connection(conn)
    parts = work / "parts"
    params = TwoTowerParams(epochs=epochs, patience=epochs)
    t_bundle = time.perf_counter()
    content = timer("content_features", steps.content_features, connect, parts / "content")
    features = timer(
        "item_features",
        steps.item_features,
        connect,
        params.feature_params(),
        parts / "item_features",
    )
    p1 = reused_model(parts / "p1", timer) or timer(
        "train P1 model",
        steps.train_evaluated_model,
        connect,
        params,
        features,
        parts / "p1",
        progress,
    )
    prod = reused_model(parts / "prod", timer) or timer(
        "refit production model", steps.refit_production, connect, p1, parts / "prod", progress
    )
    emb = timer(
        "item_embeddings", steps.item_embeddings, connect, prod, parts / "item_embeddings.npz"
    )
    index = timer("content_index", steps.content_index, connect, content, parts / "content_index")
    users = timer("user_features", steps.user_features, connect, prod, parts / "user_features.npz")
    bundle_dir = work / "bundle"
    manifest = {"dagster_run_id": "bench-whole-catalogue"}
    timer(
        "assemble bundle",
        steps.serving_bundle,
        connect,
        prod,
        emb,
        index,
        users,
        bundle_dir,
        manifest,
    )
    conn.close()
    size = sum(f.stat().st_size for f in bundle_dir.rglob("*") if f.is_file())
    return {
        **counts,
        "user_stride": user_stride,
        "epochs": epochs,
        "stages_s": timer.stages,
        "bundle_steps_s": time.perf_counter() - t_bundle,
        "bundle_mb": size / 2**20,
        "build_peak_rss_mb": rss_mb()[1],
        "approximate_content_index": index.approximate,
        "content_recall_at_10": index.recall_at_10,
    }


def load_in_fresh_process(bundle: Path) -> dict:
    """`Recommender.load` time and RSS measured in a new interpreter (`--load-only`)."""
    out = subprocess.run(
        [sys.executable, __file__, "--load-only", str(bundle)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_only(bundle: Path) -> None:
    from recommender_lib.engine.recommender import Recommender
    from recommender_lib.index.title_search import TitleSearchIndex

    base = rss_mb()[0]
    t, cpu = time.perf_counter(), time.process_time()
    rec = Recommender.load(bundle)
    load_s, load_cpu = time.perf_counter() - t, time.process_time() - cpu
    rss, peak = rss_mb()
    t, cpu = time.perf_counter(), time.process_time()
    TitleSearchIndex.build(
        rec.embeddings.item_ids,
        rec.catalog["title"].tolist(),
        rec.catalog["year"].tolist(),
        rec.catalog["popularity"],
        rec.localized.alternates(),
    )
    search_s, search_cpu = time.perf_counter() - t, time.process_time() - cpu
    result = {
        "titles": len(rec.catalog),
        "akas": len(rec.localized),
        "load_s": load_s,
        "load_cpu_s": load_cpu,
        "search_build_s": search_s,
        "search_build_cpu_s": search_cpu,
        "imports_rss_mb": base,
        "rss_after_load_mb": rss,
        "peak_rss_during_load_mb": peak,
    }
    print(json.dumps(result))


def search_only(db: Path) -> None:
    """The bundle-load work of localized titles and title search, timed step by step from a
    warehouse's `catalog` + `catalog_akas` (popularity = IMDb votes / 100: order only)."""
    from recommender_lib.index.localized_titles import LocalizedTitles
    from recommender_lib.index.title_search import TitleSearchIndex
    from recommender_lib.warehouse import tables as wh

    with wh.connect(db, read_only=True) as conn:
        catalog = conn.execute(
            "SELECT item_id, title, year, coalesce(imdb_votes, 0) / 100.0 AS popularity "
            "FROM catalog ORDER BY item_id"
        ).df()
        akas = conn.execute(
            "SELECT c.item_id, a.title, a.region, a.language, 1 AS preference, a.ordering "
            "FROM catalog_akas a JOIN catalog c USING (tconst) WHERE a.title IS NOT NULL"
        ).df()
    ids = catalog["item_id"].to_numpy(np.int64)
    timer = Timer()
    localized = timer("LocalizedTitles", LocalizedTitles, akas, ids)
    del akas
    alternates = timer("alternates", localized.alternates)
    index = timer(
        "TitleSearchIndex.build",
        TitleSearchIndex.build,
        ids,
        catalog["title"].tolist(),
        catalog["year"].tolist(),
        catalog["popularity"],
        alternates,
    )
    del alternates
    print(f"  {len(ids):,} titles, {len(localized):,} akas; RSS now/peak {rss_mb()} MiB")
    ms = []
    for query in catalog["title"].sample(300, random_state=1).astype(str):
        t = time.perf_counter()
        index.search(query, 10)
        ms.append((time.perf_counter() - t) * 1000)
    print(
        f"  search by title: p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms"
    )


def personal_pools(bundle: Path, port: int, seed: int, n: int) -> dict[str, list[bytes]]:
    """`/similar`, `POST /recommendations` and `/titles/search` (as the load test builds them)
    and `GET /movielens-users/{id}/recommendations` over the bundle's users."""
    catalog = pd.read_parquet(bundle / "catalog.parquet", columns=["tconst", "movie_id", "title"])
    pools = request_pools(catalog, port, seed, n)
    with np.load(bundle / "users" / "user_features.npz") as users:
        ids = users["user_ids"].tolist()
    rng = random.Random(seed)
    pools["user"] = [
        get_request(port, f"/movielens-users/{rng.choice(ids)}/recommendations?k=10")
        for _ in range(n)
    ]
    return pools


def serve(bundle: Path, args: argparse.Namespace) -> dict:
    """The app under uvicorn: time to `/ready`, RSS, one-connection p50/p99 per endpoint."""
    logdir = Path(tempfile.mkdtemp(prefix="whole_catalogue_"))
    env = {
        **os.environ,
        "CINE_BUNDLE_DIR": str(bundle),
        "CINE_DATA_DIR": str(logdir / "data"),
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    app = start_server("app", ["serving.app:app"], env, logdir)
    result: dict = {}
    try:
        result["ready_s"] = wait_ready(app, "/ready", timeout=1800)
        result["rss_ready_mb"], result["peak_rss_ready_mb"] = rss_mb(app.proc.pid)
        pools = personal_pools(bundle, app.port, args.seed, args.pool)
        for name in ("similar", "recommend", "user", "search"):
            if args.warmup > 0:
                asyncio.run(drive(app.port, pools[name], 1, args.warmup, args.seed + 1))
            tally = asyncio.run(drive(app.port, pools[name], 1, args.duration, args.seed))
            ms = np.asarray(tally.latencies) * 1000
            bad = sum(c for s, c in tally.statuses.items() if s != 200)
            result[name] = {
                "requests": len(ms),
                "non_200": bad,
                "p50_ms": float(np.percentile(ms, 50)),
                "p99_ms": float(np.percentile(ms, 99)),
            }
            print(f"  {name}: {result[name]}", flush=True)
        result["rss_after_mb"], result["peak_rss_mb"] = rss_mb(app.proc.pid)
    finally:
        app.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mirror", type=Path, default=Path("/tmp/fullmirror_akas"))
    parser.add_argument("--generate", action="store_true", help="write a `full` mirror first")
    parser.add_argument("--work", type=Path, default=Path("/tmp/wc"))
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--user-stride", type=int, default=40, help="train on 1 user in N")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--pool", type=int, default=2000, help="distinct requests per endpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--search-only", type=Path, help="time the search build of a warehouse")
    args = parser.parse_args()
    if args.search_only:
        search_only(args.search_only)
        return
    if args.load_only:
        load_only(args.load_only)
        return

    if args.generate:
        from recommender_lib.sources.sample_data import PROFILES, write_sample_mirror

        write_sample_mirror(args.mirror, replace(PROFILES["full"]), seed=0)
    bundle = args.work / "bundle"
    info_path = args.work / "build.json"
    if args.rebuild:  # also retrain: drop the models and step times a previous run kept
        shutil.rmtree(args.work / "parts", ignore_errors=True)
        (args.work / "stages.json").unlink(missing_ok=True)
    if args.rebuild or not (bundle / "manifest.json").is_file():
        print("build", flush=True)
        info_path.write_text(
            json.dumps(build(args.mirror, args.work, args.user_stride, args.epochs))
        )
    build_info = json.loads(info_path.read_text())
    print("load in a fresh process", flush=True)
    loaded = load_in_fresh_process(bundle)
    print(f"  {loaded}", flush=True)
    print("serve", flush=True)
    served = serve(bundle, args)
    report = {
        "build": build_info,
        "load": loaded,
        "serve": served,
        "loadavg": Path("/proc/loadavg").read_text().strip(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
