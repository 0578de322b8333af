"""`FeedbackStore` on a real SQLite file and on a throwaway local PostgreSQL server."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from recommender_lib.sources.feedback import (
    APP_USER_ID_BASE,
    FeedbackEvent,
    FeedbackStore,
    event_problems,
    sqlite_url,
    training_user_id,
)

PG_BIN = Path("/usr/local/bin")


def event(n: int | str, user: str = "alice", type: str = "rating", value: float | None = 4.0,
          ref: str = "tt0114709", item_id: int = 1) -> FeedbackEvent:  # fmt: skip
    value = value if type == "rating" else None
    return FeedbackEvent(f"ev-{n}", user, ref, item_id, type, value, int(time.time()) - 60)


# --------------------------------------------------------------------------- Postgres server
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port, from the local initdb/pg_ctl."""
    initdb, pg_ctl = PG_BIN / "initdb", PG_BIN / "pg_ctl"
    if not (initdb.exists() and pg_ctl.exists()):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as: dict[str, Any] = {}
    root = Path(tempfile.mkdtemp(prefix="cine-feedback-pg-"))
    if os.geteuid() == 0:  # initdb refuses root
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("running as root without a `postgres` account")
        os.chown(root, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    data, log, port = root / "data", root / "server.log", _free_port()

    def pg(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, timeout=60, check=False, **run_as
        )

    try:
        init = pg(str(initdb), "-D", str(data), "-U", "cine", "--auth=trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip()[-500:]}")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = pg(str(pg_ctl), "-D", str(data), "-l", str(log), "-w", "-t", "30",
                   "-o", options, "start")  # fmt: skip
        if start.returncode != 0:
            pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-500:]}")
        yield f"postgresql+psycopg2://cine@127.0.0.1:{port}/postgres"
        pg(str(pg_ctl), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "feedback" / "events.db")
        return
    base: str = request.getfixturevalue("postgres_url")
    yield base
    with FeedbackStore.open(base) as store, store.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE feedback_events"))


# -------------------------------------------------------------------------------- both
def test_add_is_idempotent_by_event_id(url: str) -> None:
    with FeedbackStore.open(url) as store:
        assert store.add([event(1), event(2), event(1)]) == ["accepted", "accepted", "duplicate"]
        assert store.add([event(2), event(3)]) == ["duplicate", "accepted"]
        assert store.add([]) == []
        stored = store.events_of("alice")
        assert [e.event_id for e in stored] == ["ev-1", "ev-2", "ev-3"]
        assert [e.seq for e in stored] == sorted(e.seq for e in stored)
        assert stored[0].value == 4.0 and stored[0].ref == "tt0114709"
        assert isinstance(stored[0].at, int) and stored[0].received_at >= stored[0].at


def test_events_after_is_a_cursor(url: str) -> None:
    with FeedbackStore.open(url) as store:
        assert store.max_seq() == 0 and store.events_after(0) == []
        store.add([event(i, user=f"u{i % 3}", type="rating" if i % 2 else "impression")
                   for i in range(10)])  # fmt: skip
        first = store.events_after(0, limit=4)
        assert len(first) == 4
        rest = store.events_after(first[-1].seq)
        assert [e.event_id for e in first + rest] == [f"ev-{i}" for i in range(10)]
        assert store.max_seq() == rest[-1].seq
        assert store.count_after(first[-1].seq) == 6
        assert store.count_after(0, type="rating") == 5
        assert [e.event_id for e in store.iter_after(0, batch=3)] == [f"ev-{i}" for i in range(10)]
        assert store.users() == {"u0", "u1", "u2"}


def test_forget_deletes_every_row_of_the_user_only(url: str) -> None:
    with FeedbackStore.open(url) as store:
        store.add([event(1), event(2, user="bob"), event(3), event(4, type="dismissed")])
        last = store.max_seq()
        assert store.forget("alice") == 3
        assert store.events_of("alice") == [] and store.count_of("alice") == 0
        assert store.users() == {"bob"}
        assert store.forget("alice") == 0  # idempotent
        store.add([event(5, user="carol")])
        assert store.max_seq() > last  # seqs never go back: cursors stay valid
        assert store.add([event(1)]) == ["accepted"]  # a forgotten event id is free again


def test_reopen_keeps_events_and_creates_the_schema_once(url: str) -> None:
    with FeedbackStore.open(url) as store:
        store.add([event(1), event(2)])
    with FeedbackStore.open(url) as again:
        assert [e.event_id for e in again.events_of("alice")] == ["ev-1", "ev-2"]
        names = sa.inspect(again.engine).get_table_names()
        assert names.count("feedback_events") == 1
        indexes = {i["name"] for i in sa.inspect(again.engine).get_indexes("feedback_events")}
        assert "feedback_events_user_seq" in indexes


def test_concurrent_writers_from_threads(url: str) -> None:
    with FeedbackStore.open(url) as store:
        results: list[list[str]] = []

        def write(worker: int) -> None:
            for batch in range(10):
                ids = [f"{worker}-{batch}-{i}" for i in range(5)] + ["shared"]
                results.append(store.add([event(n, user=f"w{worker}") for n in ids]))

        threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        flat = [r for batch in results for r in batch]
        assert flat.count("accepted") == 4 * 10 * 5 + 1  # "ev-shared" accepted exactly once
        stored = store.events_after(0)
        assert len(stored) == 201 and len({e.event_id for e in stored}) == 201


# One writer process: 5 batches of 10 new events plus one event every batch repeats ("ev-x").
_WRITER = """
import json, sys
from recommender_lib.sources.feedback import FeedbackStore
from tests.test_feedback_store import event
url, worker = sys.argv[1], int(sys.argv[2])
out = []
with FeedbackStore.open(url) as store:
    for batch in range(5):
        out += store.add([event(f"p{worker}-{batch}-{i}") for i in range(10)] + [event("x")])
print(json.dumps(out))
"""
REPO_ROOT = Path(__file__).resolve().parents[1]


def test_concurrent_writers_from_processes(url: str) -> None:
    """Two interpreters write at once (plain subprocesses: a stuck or dead writer fails the
    test within its timeout instead of hanging a process pool)."""
    FeedbackStore.open(url).close()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, url, str(worker)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for worker in (0, 1)
    ]
    outs = []
    for writer in writers:
        stdout, _ = writer.communicate(timeout=300)
        assert writer.returncode == 0
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    flat = [r for out in outs for r in out]
    assert flat.count("accepted") == 2 * 5 * 10 + 1
    with FeedbackStore.open(url) as store:
        seqs = [e.seq for e in store.events_after(0)]
        assert len(seqs) == 101 and seqs == sorted(set(seqs))


# ------------------------------------------------------------------------------ SQLite only
def test_sqlite_runs_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "events.db"
    with FeedbackStore.open(sqlite_url(path)) as store:
        assert path.is_file()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert (conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) > 0


def test_forgotten_events_leave_no_bytes_in_the_sqlite_files(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with FeedbackStore.open(sqlite_url(path)) as store:
        store.add([event(i, user="secret-user-42", ref="tt7654321") for i in range(50)])
        store.add([event("keep", user="bob")])
        store.forget("secret-user-42")
        files = [p for p in tmp_path.iterdir() if p.name.startswith("events.db")]
        blob = b"".join(p.read_bytes() for p in files)
        assert b"secret-user-42" not in blob and b"tt7654321" not in blob
        assert b"bob" in blob


def test_sqlite_memory_url_is_refused() -> None:
    with pytest.raises(ValueError, match="SQLite file"):
        FeedbackStore.open("sqlite://")


# ---------------------------------------------------------------------------------- rules
def test_event_rules() -> None:
    now = 1_800_000_000.0
    assert event_problems("rating", 4.5, int(now), now) == []
    assert event_problems("impression", None, None, now) == []
    assert [f for f, _ in event_problems("rating", 4.3, None, now)] == ["value"]
    assert [f for f, _ in event_problems("rating", None, None, now)] == ["value"]
    assert [f for f, _ in event_problems("rating", 5.5, None, now)] == ["value"]
    assert [f for f, _ in event_problems("dismissed", 3.0, None, now)] == ["value"]
    assert [f for f, _ in event_problems("liked", None, None, now)] == ["type"]
    assert [f for f, _ in event_problems("watched", None, int(now) + 301, now)] == ["at"]
    assert event_problems("watched", None, int(now) + 299, now) == []
    assert [f for f, _ in event_problems("watched", None, 600_000_000, now)] == ["at"]


def test_training_user_ids_are_stable_and_above_movielens_ids() -> None:
    ids = {training_user_id(f"user-{i}") for i in range(1000)}
    assert len(ids) == 1000
    assert all(APP_USER_ID_BASE <= i < APP_USER_ID_BASE + 2**56 for i in ids)
    assert training_user_id("alice") == training_user_id("alice") < 2**63


def test_compose_points_every_platform_service_at_the_feedback_database() -> None:
    import yaml

    compose = yaml.safe_load((Path(__file__).parents[1] / "docker-compose.yml").read_text())
    url = compose["x-cine-env"]["CINE_FEEDBACK_URL"]
    assert url.startswith("postgresql+psycopg2://") and url.endswith("@postgres:5432/feedback")
    for name in ("api", "user_code", "webserver", "daemon"):
        assert compose["services"][name]["environment"]["CINE_FEEDBACK_URL"] == url
    init = (Path(__file__).parents[1] / "docker/postgres/init-databases.sql").read_text()
    assert "CREATE DATABASE feedback;" in init
