"""Serving load test: the FastAPI app under uvicorn, driven from a second process on loopback.

    .venv/bin/python bench/serving_load.py --build-sample [--profile demo]
    .venv/bin/python bench/serving_load.py --bundle data/bundles/<run id>

A bundle comes either from `--bundle PATH` (a `make platform` run writes them under
`data/bundles/<run id>/`) or from `--build-sample`, which generates a sample mirror
(`recommender_lib.sources.sample_data`, profile `demo` by default), loads it into an in-memory
warehouse, builds the catalogue (the platform's default filters), trains a production-shaped
two-tower model for `--epochs` epochs (serving cost does not depend on how well it is trained) and
assembles a bundle under `--workdir` (reused by later runs unless `--rebuild`).

The script starts two servers on free loopback ports, each `uvicorn ... --workers 1`:

* the app: `uvicorn serving.app:app` with `CINE_BUNDLE_DIR=<bundle>` (polled on `/ready`);
* the ceiling: a minimal FastAPI app with one `def` endpoint returning `{"ok": true}`, the most a
  single uvicorn worker can serve through FastAPI's routing, validation and thread pool.

Then, per endpoint, `--connections` keep-alive HTTP/1.1 connections (asyncio, a deliberately thin
client so it steals as little CPU from the server as possible) send requests back to back for
`--warmup` seconds (discarded) and `--duration` seconds (measured):

* `GET /ok` on the ceiling app;
* `GET /health` on the app: its middleware (request id, JSON access log, Prometheus metrics)
  and routing without model work, i.e. the ceiling of this app;
* `GET /titles/{ref}/similar?k=10` over random catalogue titles (IMDb ids and MovieLens ids);
* `GET /titles/search?q=` over random title prefixes and one-typo titles;
* `POST /recommendations` with 3 random ratings (k=10).

It prints a markdown table (throughput, ratio to the ceiling, p50/p99 latency, the CPU used
during the window by the server, by the client and by every other process, as shares of one
core, and the server's CPU time per request with its ratio to the ceiling's: on a shared box
the servers get uneven CPU shares, which moves req/s but hardly CPU per request) and the peak
RSS (VmHWM) of both servers. Client and servers share the machine's cores, so on a small box
the client's CPU is part of the picture; on a shared box, so is "other CPU".
`--rounds N` repeats the sequence and reports each endpoint's median round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, for the servers and the client
READY_TIMEOUT_S = 300.0
LABELS = {
    "ceiling": "`GET /ok` (ceiling app)",
    "health": "`GET /health` (app, no model work)",
    "similar": "`GET /titles/{id}/similar?k=10`",
    "search": "`GET /titles/search?q=`",
    "recommend": "`POST /recommendations` (3 ratings)",
}


# ----------------------------------------------------------------------------- ceiling app


def ceiling_app():
    """Minimal FastAPI app (uvicorn factory): one synchronous JSON endpoint."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/ok")
    def ok() -> dict[str, bool]:
        return {"ok": True}

    return app


# ----------------------------------------------------------------------------- sample bundle


def build_sample_bundle(
    workdir: Path, profile: str, seed: int, epochs: int, min_votes: int | None
) -> Path:
    """Generate a sample mirror and build a real serving bundle from it at `workdir/bundle`."""
    from recommender_lib.modeling import splits
    from recommender_lib.modeling.two_tower.params import TwoTowerParams
    from recommender_lib.sources.integrity import extract_zip
    from recommender_lib.sources.sample_data import write_sample_mirror
    from recommender_lib.warehouse import tables as warehouse
    from recommender_lib.warehouse.catalog import CatalogFilters, build_catalog
    from recommender_lib.workflow.steps import connection, train_and_bundle

    t0 = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    mirror = write_sample_mirror(workdir / "mirror", profile, seed=seed)
    print(f"sample mirror ({profile}): {time.perf_counter() - t0:.0f} s", flush=True)

    release = extract_zip(mirror.movielens_zip, workdir / "scratch") / "ml-latest-small"
    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_release(conn, release)
    warehouse.load_imdb_titles(conn, mirror.basics, mirror.ratings)
    splits.build_splits(conn)
    filters = CatalogFilters() if min_votes is None else CatalogFilters(min_votes=min_votes)
    build_catalog(conn, filters)
    print(f"warehouse + catalogue: {time.perf_counter() - t0:.0f} s", flush=True)

    params = TwoTowerParams(epochs=epochs, patience=epochs)
    manifest = {
        "dagster_run_id": f"bench-serving-load-{profile}",
        "source_versions": {"sample_profile": profile, "sample_seed": seed},
    }
    bundle, model = train_and_bundle(connection(conn), params, workdir, manifest)
    n_titles = len(model.items)
    conn.close()
    print(f"bundle at {bundle} ({n_titles} titles): {time.perf_counter() - t0:.0f} s", flush=True)
    return bundle


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(name: str, args: Sequence[str], env: dict[str, str], logdir: Path) -> Server:
    port = free_port()
    log = logdir / f"{name}.log"
    cmd = [
        sys.executable, "-m", "uvicorn", *args, "--host", HOST, "--port", str(port),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return Server(name, proc, port, log)


def wait_ready(server: Server, path: str, timeout: float = READY_TIMEOUT_S) -> float:
    """Seconds until `GET path` answers 200; raises with the server log when it does not."""
    import httpx

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if server.proc.poll() is not None:
            break
        try:
            if httpx.get(f"http://{HOST}:{server.port}{path}", timeout=2.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    tail = server.log.read_text(errors="replace")[-4000:]
    raise RuntimeError(f"{server.name} did not become ready on {path}:\n{tail}")


# ----------------------------------------------------------------------------- requests


def get_request(port: int, path: str) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n\r\n"
    return head.encode()


def post_request(port: int, path: str, payload: object) -> bytes:
    body = json.dumps(payload).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAccept: application/json\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def catalogue_refs(catalog: pd.DataFrame) -> list[str]:
    """Every catalogue title as the API accepts it: its tconst, else its MovieLens id."""
    refs = []
    for tconst, movie_id in zip(catalog["tconst"], catalog["movie_id"], strict=True):
        if isinstance(tconst, str):
            refs.append(tconst)
        elif not pd.isna(movie_id):
            refs.append(str(int(movie_id)))
    return refs


def typo(rng: random.Random, text: str) -> str:
    """One random edit (drop, swap, replace or insert a letter)."""
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.choice(("drop", "swap", "replace", "insert"))
    if kind == "drop":
        return text[:i] + text[i + 1 :]
    if kind == "swap":
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    letter = rng.choice(string.ascii_lowercase)
    return text[:i] + letter + text[i + (kind == "replace") :]


def search_queries(rng: random.Random, titles: Sequence[str], n: int) -> list[str]:
    """Half prefixes (3-12 characters) and half whole titles with one typo."""
    out = []
    for _ in range(n):
        title = rng.choice(titles).strip()
        if rng.random() < 0.5:
            out.append(title[: rng.randint(3, 12)].strip() or title)
        else:
            out.append(typo(rng, title[:40]))
    return out


def request_pools(catalog: pd.DataFrame, port: int, seed: int, n: int) -> dict[str, list[bytes]]:
    rng = random.Random(seed)
    refs = catalogue_refs(catalog)
    titles = [str(t) for t in catalog["title"]]
    steps = [x / 2 for x in range(1, 11)]
    quote = urllib.parse.quote
    return {
        "similar": [
            get_request(port, f"/titles/{quote(rng.choice(refs))}/similar?k=10") for _ in range(n)
        ],
        "search": [
            get_request(port, f"/titles/search?q={quote(q)}&limit=10")
            for q in search_queries(rng, titles, n)
        ],
        "recommend": [
            post_request(
                port,
                "/recommendations",
                {
                    "ratings": [
                        {"title": ref, "rating": rng.choice(steps)} for ref in rng.sample(refs, 3)
                    ],
                    "k": 10,
                },
            )
            for _ in range(n)
        ],
    }


# ----------------------------------------------------------------------------- client


class ProtocolError(Exception):
    pass


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, keep_alive) of one HTTP/1.1 response (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ProtocolError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers expected
                break
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(chunks)
    else:
        raise ProtocolError("response without Content-Length or chunked encoding")
    keep_alive = headers.get("connection", "").lower() != "close"
    return int(parts[1]), body, keep_alive


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    failures: int = 0  # connection or protocol errors

    def record(self, status: int, seconds: float) -> None:
        self.latencies.append(seconds)
        self.statuses[status] = self.statuses.get(status, 0) + 1


async def connection(
    port: int, pool: Sequence[bytes], rng: random.Random, stop_at: float, tally: Tally
) -> None:
    reader = writer = None
    clock = time.perf_counter
    while clock() < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(HOST, port)
            request = pool[rng.randrange(len(pool))]
            t0 = clock()
            writer.write(request)
            status, _, keep_alive = await read_response(reader)
            tally.record(status, clock() - t0)
            if not keep_alive:
                writer.close()
                reader = writer = None
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError):
            tally.failures += 1
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()


async def drive(port: int, pool: Sequence[bytes], connections: int, seconds: float, seed: int):
    tally = Tally()
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(
        *(
            connection(port, pool, random.Random(seed * 1000 + c), stop_at, tally)
            for c in range(connections)
        )
    )
    return tally


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    endpoint: str
    requests: int
    non_200: int
    failures: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # share of one core during the window
    client_cpu: float
    other_cpu: float  # every other process on the machine

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def cpu_us(self) -> float:
        """Server CPU per request in microseconds: robust to a busy shared machine, where the
        server may get less than a core (and so fewer requests per second)."""
        return self.server_cpu * self.seconds / max(self.requests, 1) * 1e6


def run_endpoint(
    name: str,
    server: Server,
    pool: Sequence[bytes],
    args: argparse.Namespace,
    run: Callable,
) -> Result:
    if args.warmup > 0:
        run(drive(server.port, pool, args.connections, args.warmup, args.seed + 1))
    server_cpu0, client_cpu0 = server.cpu_seconds(), client_cpu_seconds()
    busy0, t0 = machine_busy_seconds(), time.perf_counter()
    tally = run(drive(server.port, pool, args.connections, args.duration, args.seed))
    seconds = time.perf_counter() - t0
    server_cpu = (server.cpu_seconds() - server_cpu0) / seconds
    client_cpu = (client_cpu_seconds() - client_cpu0) / seconds
    busy = (machine_busy_seconds() - busy0) / seconds
    lat = np.asarray(tally.latencies) * 1000
    ok = tally.statuses.get(200, 0)
    result = Result(
        endpoint=name,
        requests=len(lat),
        non_200=len(lat) - ok,
        failures=tally.failures,
        seconds=seconds,
        p50_ms=float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        p99_ms=float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        other_cpu=max(0.0, busy - server_cpu - client_cpu),
    )
    bad = {s: c for s, c in tally.statuses.items() if s != 200}
    print(
        f"{name}: {result.rps:.0f} req/s, p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, "
        f"CPU server {server_cpu:.0%} ({result.cpu_us:.0f} us/req) client {client_cpu:.0%} "
        f"other {result.other_cpu:.0%}"
        + (f", non-200 {bad}" if bad else "")
        + (f", connection errors {tally.failures}" if tally.failures else ""),
        flush=True,
    )
    return result


def check_endpoints(app: Server, pools: dict[str, list[bytes]]) -> None:
    """One request of each kind through the same client, so a broken endpoint fails loudly."""

    async def one(request: bytes) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection(HOST, app.port)
        writer.write(request)
        status, body, _ = await read_response(reader)
        writer.close()
        return status, body

    for name, pool in pools.items():
        status, body = asyncio.run(one(pool[0]))
        payload = json.loads(body) if body else {}
        if status != 200 or "model_version" not in payload:
            raise RuntimeError(f"{name}: {status} {body[:500]!r}")


# ----------------------------------------------------------------------------- report


def median_round(rounds: Sequence[Result]) -> Result:
    """The round with the median throughput (the lower middle one for an even count)."""
    ordered = sorted(rounds, key=lambda r: r.rps)
    return ordered[(len(ordered) - 1) // 2]


def markdown(results: dict[str, list[Result]]) -> str:
    """One row per endpoint (its median round); CPU columns are shares of one core."""
    ceiling = median_round(results["ceiling"])
    many = any(len(rounds) > 1 for rounds in results.values())
    lines = [
        "| endpoint | requests | non-200 | req/s | vs ceiling | p50 ms | p99 ms "
        "| server CPU | client CPU | other CPU | server CPU µs/req | CPU vs ceiling |"
        + (" req/s per round |" if many else ""),
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|" + ("---|" if many else ""),
    ]
    for rounds in results.values():
        r = median_round(rounds)
        line = (
            f"| {r.endpoint} | {r.requests} | {r.non_200 + r.failures} | {r.rps:,.0f} "
            f"| {r.rps / ceiling.rps:.0%} | {r.p50_ms:.1f} | {r.p99_ms:.1f} "
            f"| {r.server_cpu:.0%} | {r.client_cpu:.0%} | {r.other_cpu:.0%} "
            f"| {r.cpu_us:,.0f} | {ceiling.cpu_us / r.cpu_us:.0%} |"
        )
        if many:
            line += " " + ", ".join(f"{x.rps:,.0f}" for x in rounds) + " |"
        lines.append(line)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bundle", type=Path, help="serving bundle directory (manifest.json)")
    src.add_argument(
        "--build-sample", action="store_true", help="build a bundle from a generated sample"
    )
    p.add_argument("--profile", default="demo", help="sample profile for --build-sample")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--epochs", type=int, default=2, help="training epochs for --build-sample")
    p.add_argument(
        "--min-votes", type=int, default=None, help="catalogue filter (default: the platform's)"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "cine_serving_load",
        help="where --build-sample writes (and reuses) its bundle",
    )
    p.add_argument("--rebuild", action="store_true", help="rebuild the sample bundle")
    p.add_argument("--app", default="serving.app:app", help="uvicorn target of the app")
    p.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per endpoint")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per endpoint")
    p.add_argument("--pool", type=int, default=2000, help="distinct requests per endpoint")
    p.add_argument(
        "--rounds", type=int, default=1, help="repeat every endpoint; report the median round"
    )
    p.add_argument(
        "--endpoints",
        default=",".join(LABELS),
        help=f"comma-separated subset of {','.join(LABELS)} (the ceiling always runs)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.build_sample:
        bundle = args.workdir / args.profile / "bundle"
        if args.rebuild or not (bundle / "manifest.json").is_file():
            bundle = build_sample_bundle(
                args.workdir / args.profile, args.profile, args.seed, args.epochs, args.min_votes
            )
        else:
            print(f"reusing {bundle} (--rebuild to build it again)", flush=True)
    else:
        bundle = args.bundle.resolve()
    catalog = pd.read_parquet(bundle / "catalog.parquet", columns=["tconst", "movie_id", "title"])
    manifest = json.loads((bundle / "manifest.json").read_text())

    logdir = Path(tempfile.mkdtemp(prefix="serving_load_logs_"))
    env = {**os.environ, "CINE_BUNDLE_DIR": str(bundle), "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app = start_server("app", [args.app], env, logdir)
    ceiling = start_server(
        "ceiling", ["--factory", "serving_load:ceiling_app", "--app-dir", str(REPO / "bench")],
        env, logdir,
    )  # fmt: skip
    try:
        print(f"ceiling ready in {wait_ready(ceiling, '/ok'):.1f} s", flush=True)
        print(f"app ready in {wait_ready(app, '/ready'):.1f} s", flush=True)
        pools = request_pools(catalog, app.port, args.seed, args.pool)
        check_endpoints(app, pools)
        pools["ceiling"] = [get_request(ceiling.port, "/ok")]
        pools["health"] = [get_request(app.port, "/health")]
        try:
            import uvloop

            run = uvloop.run
        except ImportError:
            run = asyncio.run
        wanted = ["ceiling"] + [
            e for e in (x.strip() for x in args.endpoints.split(",")) if e and e != "ceiling"
        ]
        unknown = sorted(set(wanted) - set(LABELS))
        if unknown:
            raise SystemExit(f"unknown endpoints {unknown}; choose from {list(LABELS)}")
        results: dict[str, list[Result]] = {name: [] for name in wanted}
        print(f"load average before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
        for round_no in range(args.rounds):
            if args.rounds > 1:
                print(f"round {round_no + 1}/{args.rounds}", flush=True)
            for name in wanted:
                server = ceiling if name == "ceiling" else app
                results[name].append(run_endpoint(LABELS[name], server, pools[name], args, run))
        rss = {s.name: s.peak_rss_mb() for s in (app, ceiling)}
    finally:
        app.stop()
        ceiling.stop()

    print()
    print(
        f"bundle {manifest.get('bundle_version')} ({len(catalog):,} titles), "
        f"{args.connections} connections, {args.duration:g} s per endpoint "
        f"(+{args.warmup:g} s warm-up), {args.rounds} round(s), "
        f"{os.cpu_count()} CPUs shared by client and servers"
    )
    print()
    print(markdown(results))
    print()
    print(f"peak RSS: app server {rss['app']:.0f} MiB, ceiling server {rss['ceiling']:.0f} MiB")
    if "similar" in results:
        share = median_round(results["similar"]).rps / median_round(results["ceiling"]).rps
        verdict = "meets" if share >= 0.5 else "misses"
        print(f"/similar: {share:.0%} of the ceiling's throughput ({verdict} the 50 % target)")
    print(f"server logs: {logdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
