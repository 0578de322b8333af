"""Feedback API benchmark: `POST /feedback` throughput and latency, and recommendation latency
for application users, through HTTP on loopback.

    .venv/bin/python bench/feedback_api.py --build-sample [--profile demo]
    .venv/bin/python bench/feedback_api.py --bundle data/bundles/<run id>

The bundle comes as in `bench/serving_load.py` (`--build-sample` reuses its work folder). The
app runs as `uvicorn serving.app:app --workers 1` in its own process with `CINE_BUNDLE_DIR` and
`CINE_FEEDBACK_URL` = a fresh SQLite file (WAL, synchronous=FULL: every 2xx is an fsync'ed
commit). From this process (a thin asyncio HTTP/1.1 client, keep-alive connections):

1. `POST /feedback`, batches of 1 and of 100 events: `--connections` clients (default 8) send
   back to back for `--warmup` s (discarded) then `--duration` s; every event is new (unique
   `event_id`, one of 1,000 users, a random catalogue title, a random type; ratings in halves).
   Reported: requests/s, events/s, p50/p99 latency per request.
2. `GET /users/{user}/recommendations?k=10` for an application user with 10 and with 500 stored
   events (ratings, watched, dismissals, impressions), beside
   `GET /movielens-users/{id}/recommendations?k=10` for a MovieLens user of the release (the
   baseline), each with `--latency-connections` clients (default 1: latency without queueing).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving_load as sl  # the sibling benchmark: servers, HTTP client

TYPES = ("rating", "rating", "watched", "dismissed", "impression", "impression")
STARS = [x / 2 for x in range(1, 11)]


@dataclass
class Row:
    what: str
    clients: int
    requests: int
    errors: int
    seconds: float
    events_per_request: int
    p50_ms: float
    p99_ms: float

    def line(self) -> str:
        rps = self.requests / self.seconds
        events = f"{rps * self.events_per_request:,.0f}" if self.events_per_request else "—"
        return (
            f"| {self.what} | {self.clients} | {self.requests} | {self.errors} | {rps:,.0f} "
            f"| {events} | {self.p50_ms:.1f} | {self.p99_ms:.1f} |"
        )


def event_source(refs: Sequence[str], seed: int, prefix: str) -> Callable[[int], list[dict]]:
    """`make(n)`: n new events (unique ids) of random users, titles and types."""
    rng = random.Random(seed)
    counter = itertools.count()

    def make(n: int) -> list[dict]:
        out = []
        for _ in range(n):
            kind = rng.choice(TYPES)
            event = {
                "event_id": f"{prefix}-{next(counter)}",
                "user": f"bench-user-{rng.randrange(1000)}",
                "title": rng.choice(refs),
                "type": kind,
            }
            if kind == "rating":
                event["value"] = rng.choice(STARS)
            out.append(event)
        return out

    return make


async def _client(port: int, next_request: Callable[[], bytes], stop_at: float,
                  tally: sl.Tally) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection(sl.HOST, port)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            request = next_request()
            t0 = clock()
            writer.write(request)
            status, _, _ = await sl.read_response(reader)
            tally.record(status, clock() - t0)
    finally:
        writer.close()


async def _drive(port: int, next_request: Callable[[], bytes], clients: int, seconds: float):
    tally = sl.Tally()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_client(port, next_request, stop_at, tally) for _ in range(clients)))
    return tally


def measure(what: str, port: int, next_request: Callable[[], bytes], clients: int,
            args: argparse.Namespace, events: int = 0) -> Row:  # fmt: skip
    if args.warmup > 0:
        asyncio.run(_drive(port, next_request, clients, args.warmup))
    t0 = time.perf_counter()
    tally = asyncio.run(_drive(port, next_request, clients, args.duration))
    seconds = time.perf_counter() - t0
    lat = np.asarray(tally.latencies) * 1000
    errors = len(lat) - tally.statuses.get(200, 0)
    row = Row(what, clients, len(lat), errors, seconds, events,
              float(np.percentile(lat, 50)), float(np.percentile(lat, 99)))  # fmt: skip
    print(row.line(), flush=True)
    if errors:
        print(f"  non-200 statuses: {tally.statuses}", flush=True)
    return row


def post_feedback(port: int, events: list[dict]) -> dict:
    import httpx

    response = httpx.post(f"http://{sl.HOST}:{port}/feedback", json={"events": events}, timeout=60)
    response.raise_for_status()
    return response.json()


def seed_user(port: int, user: str, refs: Sequence[str], n: int, seed: int) -> None:
    """`n` events of one user: 40 % ratings (distinct titles), then watched, dismissed and
    impressions (as an application would record them)."""
    rng = random.Random(seed)
    titles = rng.sample(list(refs), min(n, len(refs)))
    kinds = ["rating"] * (n * 4 // 10) + ["watched"] * (n // 10) + ["dismissed"] * (n // 10)
    kinds += ["impression"] * (n - len(kinds))
    events = []
    for i, kind in enumerate(kinds):
        event = {"event_id": f"{user}-{i}", "user": user, "title": titles[i % len(titles)],
                 "type": kind}  # fmt: skip
        if kind == "rating":
            event["value"] = rng.choice(STARS)
        events.append(event)
    for start in range(0, n, 100):
        assert post_feedback(port, events[start : start + 100])["rejected"] == 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="serving bundle directory (manifest.json)")
    src.add_argument("--build-sample", action="store_true", help="build a sample bundle")
    p.add_argument("--profile", default="demo", help="sample profile for --build-sample")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2, help="training epochs for --build-sample")
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "cine_serving_load")  # fmt: skip
    p.add_argument("--connections", type=int, default=8, help="clients posting feedback")
    p.add_argument("--latency-connections", type=int, default=1, help="clients, GET latency")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per row")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per row")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:

    args = parse_args(argv)
    bundle = args.bundle
    if bundle is None:
        bundle = args.workdir / "bundle"
        if not (bundle / "manifest.json").is_file():
            bundle = sl.build_sample_bundle(args.workdir, args.profile, args.seed, args.epochs,
                                            None)  # fmt: skip
    catalog = pd.read_parquet(bundle / "catalog.parquet")
    refs = sl.catalogue_refs(catalog)
    with tempfile.TemporaryDirectory(prefix="cine-feedback-bench-") as tmp:
        tmpdir = Path(tmp)
        env = {**os.environ, "CINE_BUNDLE_DIR": str(bundle.resolve()), "CINE_DATA_DIR": tmp,
               "CINE_FEEDBACK_URL": f"sqlite:///{tmpdir / 'feedback' / 'events.db'}",
               "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
        server = sl.start_server("app", ["serving.app:app"], env, tmpdir)
        try:
            ready = sl.wait_ready(server, "/ready")
            print(f"app ready in {ready:.0f} s ({len(refs)} titles)\n", flush=True)
            run(args, server.port, refs)
        finally:
            server.stop()


def run(args: argparse.Namespace, port: int, refs: Sequence[str]) -> None:
    print("| measurement | clients | requests | non-200 | req/s | events/s | p50 ms | p99 ms |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|", flush=True)
    rows = []
    for batch in (1, 100):
        make = event_source(refs, args.seed + batch, f"b{batch}")

        def request(make: Callable[[int], list[dict]] = make, batch: int = batch) -> bytes:
            return sl.post_request(port, "/feedback", {"events": make(batch)})

        label = f"`POST /feedback` ({batch} event{'s' if batch > 1 else ''})"
        rows.append(measure(label, port, request, args.connections, args, batch))
    for n in (10, 500):
        seed_user(port, f"app-{n}", refs, n, args.seed)
    import httpx

    ml_user = httpx.get(f"http://{sl.HOST}:{port}/movielens-users?limit=1").json()
    user_id, n_ratings = ml_user["items"][0]["user_id"], ml_user["items"][0]["ratings"]
    targets = [
        (f"`GET /users/{{user}}/recommendations` ({n} events)", f"/users/app-{n}/recommendations")
        for n in (10, 500)
    ] + [
        (f"`GET /movielens-users/{{id}}/recommendations` ({n_ratings} ratings, baseline)",
         f"/movielens-users/{user_id}/recommendations"),
    ]  # fmt: skip
    for label, path in targets:
        request_bytes = sl.get_request(port, f"{path}?k=10")
        rows.append(measure(label, port, lambda b=request_bytes: b, args.latency_connections,
                            args))  # fmt: skip
    stored = httpx.get(f"http://{sl.HOST}:{port}/users/app-500/feedback?limit=1").json()["total"]
    print(f"\nevents stored for app-500: {stored}", flush=True)


if __name__ == "__main__":
    main()
