"""Served-path quality: the whole platform on a release with held-out ratings, measured over HTTP.

    .venv/bin/python bench/served_quality.py --movielens ../shared/data/movielens/ml-latest-small

1. `make_release` writes `<workdir>/release/ml-latest-small.zip` (+ `.md5`) without the held-out
   ratings (P1: each warm user's latest 20 %; P2: 20 % of the users entirely, splits.py's rules).
2. A generated IMDb sample mirror
   (`python -m recommender_lib.sources.sample_data --profile small`) stands in for the IMDb dumps;
   the `catalog` asset gets `min_votes: 1e12`, so no IMDb-only title enters the catalogue and it is
   exactly the MovieLens movies.
3. `dagster job execute -j full_refresh` runs every asset and check on them (a fresh
   `DAGSTER_HOME`, warehouse and MLflow store under `<workdir>/data`), which registers the bundle
   and moves the `champion` alias; `--model JSON` sets the `two_tower_model` asset's config
   (e.g. another seed or shape; the production refit follows it).
4. `uvicorn serving.app:app` serves the champion on 127.0.0.1; `measure_served` asks it for
   every warm user's top-10, the held-out ratings' predictions and the cold users' top-10 from
   3/5/10 revealed ratings, and computes most-popular and EASE offline on the same rows.

Prints a markdown table, the command and the platform's wall time; `--json PATH` saves every
number. Both subprocesses are stopped on exit. `--workdir` defaults to a temporary folder that
is removed afterwards (pass one to keep the logs, the release and the platform's data).
"""

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import math
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx

from recommender_lib.evaluation.served_quality import format_markdown, measure_served
from recommender_lib.evaluation.served_release import make_release

HOST = "127.0.0.1"  # loopback only
READY_TIMEOUT_S = 300.0
NO_IMDB_ONLY_TITLES = 1_000_000_000_000  # catalog min_votes no IMDb title reaches
REVEALS = (3, 5, 10)
K = 10
CLEARED_ENV = ("CINE_BUNDLE_DIR", "CINE_WAREHOUSE_PATH", "CINE_SERVING_DIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """An executable of this interpreter's environment (the project's .venv)."""
    for candidate in (Path(sys.executable).parent / name, REPO / ".venv" / "bin" / name):
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found next to {sys.executable} or in .venv/bin")
    return found


def platform_env(workdir: Path, zip_path: Path, mirror: Path) -> dict[str, str]:
    data = workdir / "data"
    home = data / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    (data / "mlflow").mkdir(parents=True, exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(REPO / "dagster.yaml")
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    return env | {
        "CINE_DATA_DIR": str(data),
        "DAGSTER_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
        "CINE_MOVIELENS_URL": zip_path.resolve().as_uri(),
        "CINE_IMDB_BASE_URL": (mirror / "imdb").resolve().as_uri(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }


def tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return f"({path} not written)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def stop(proc: subprocess.Popen | None, grace_s: float = 20.0) -> None:
    """Interrupt the process group this script started, then kill it if it lingers."""
    if proc is None or proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def start(cmd: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as fh:  # the child keeps its own handle
        return subprocess.Popen(
            list(cmd), cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() reaches its children
        )  # fmt: skip


def run_platform(
    env: dict[str, str], workdir: Path, procs: list[subprocess.Popen], model: dict[str, Any]
) -> float:
    """`full_refresh` with the catalogue limited to MovieLens titles and `model` as the
    `two_tower_model` asset's config overrides; returns its wall time."""
    ops: dict[str, Any] = {"catalog": {"config": {"min_votes": NO_IMDB_ONLY_TITLES}}}
    if model:
        ops["two_tower_model"] = {"config": model}
    config = workdir / "run_config.yaml"
    config.write_text(json.dumps({"ops": ops}) + "\n")  # JSON is YAML
    cmd = [tool("dagster"), "job", "execute", "-m", "orchestration.definitions",
           "-j", "full_refresh", "-c", str(config)]  # fmt: skip
    log = workdir / "platform.log"
    print(f"platform: {shlex.join(cmd)} (log: {log})", flush=True)
    started = time.perf_counter()
    proc = start(cmd, env, log)
    procs.append(proc)
    code = proc.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"full_refresh failed (exit {code}) after {seconds:.0f} s:\n{tail(log)}")
    return seconds


def serve(
    env: dict[str, str], workdir: Path, port: int, procs: list[subprocess.Popen]
) -> tuple[str, float]:
    """Start the API and wait for `/ready`; returns its base URL and the seconds it took."""
    cmd = [tool("uvicorn"), "serving.app:app", "--host", HOST, "--port", str(port),
           "--workers", "1", "--no-access-log"]  # fmt: skip
    log = workdir / "api.log"
    proc = start(cmd, env, log)
    procs.append(proc)
    base_url = f"http://{HOST}:{port}"
    started = time.perf_counter()
    while time.perf_counter() - started < READY_TIMEOUT_S:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(f"{base_url}/ready", timeout=5).status_code == 200:
                return base_url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the API was not ready within {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", type=Path, required=True, help="extracted release folder")
    parser.add_argument("--workdir", type=Path, help="default: a temporary folder, removed after")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--port", type=int, help="API port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--seed", type=int, default=0, help="cold-user draw (splits.py P2)")
    parser.add_argument(
        "--model", type=json.loads, default={}, metavar="JSON",
        help="`two_tower_model` asset config overrides (TwoTowerConfig), e.g. '{\"seed\": 1}'",
    )  # fmt: skip
    args = parser.parse_args()
    command = shlex.join([".venv/bin/python", "bench/served_quality.py", *sys.argv[1:]])

    # SIGTERM unwinds like Ctrl-C, so the `finally` below stops the subprocesses.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    temporary = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="served_quality_")) if temporary else args.workdir
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen] = []
    try:
        held = make_release(args.movielens, workdir / "release", seed=args.seed)
        print(
            f"release: {len(held.release)} ratings kept, {len(held.test)} held out from "
            f"{held.test['user_id'].nunique()} warm users, {len(held.cold)} from "
            f"{held.cold['user_id'].nunique()} cold users -> {held.zip_path}",
            flush=True,
        )
        mirror = workdir / "mirror"
        if not (mirror / "imdb").is_dir():
            subprocess.run(
                [sys.executable, "-m", "recommender_lib.sources.sample_data", "--profile", "small",
                 "--out", str(mirror)],
                cwd=REPO, check=True,
            )  # fmt: skip
        env = platform_env(workdir, held.zip_path, mirror)
        platform_s = run_platform(env, workdir, procs, args.model)
        print(f"platform: full_refresh took {platform_s:.0f} s", flush=True)

        base_url, ready_s = serve(env, workdir, args.port or free_port(), procs)
        with httpx.Client(base_url=base_url, timeout=60) as client:
            version = client.get("/version").json()
            results = measure_served(client, held, k=K, reveals=REVEALS)
        stop(procs.pop())
    finally:
        for proc in reversed(procs):
            stop(proc)
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(format_markdown(results, k=K, reveals=REVEALS))
    print(
        f"\n{int(results['users'])} warm users ({int(results['test_ratings'])} held-out ratings),"
        f" {int(results['cold_users'])} cold users ({int(results['cold_scored_ratings'])} scored"
        f" ratings), catalogue {int(results['catalogue_titles'])} titles; model version"
        f" {version.get('model_version')}; API measured in {results['api.seconds']:.0f} s"
    )
    print(f"platform wall time (full_refresh): {platform_s:.0f} s; API ready in {ready_s:.0f} s")
    print(f"command: {command}")
    if args.json:
        report = {
            "command": command,
            "platform_seconds": platform_s,
            "api_ready_seconds": ready_s,
            "model_version": version.get("model_version"),
            "results": {k: None if math.isnan(v) else v for k, v in results.items()},  # strict
        }
        args.json.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
