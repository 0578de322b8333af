"""Training throughput of the two-tower model: wall time, examples/s, peak RSS and held-out quality.

    .venv/bin/python bench/training_speed.py --movielens ../shared/data/movielens/ml-latest-small \
        --params previous --params '{}'
    .venv/bin/python -m recommender_lib.sources.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/training_speed.py --epochs 1 \
        --zip /tmp/full/movielens/ml-latest-small.zip

Loads the release into a warehouse file (DuckDB, in a scratch folder) and builds the splits, then
for each `--params` (TwoTowerParams overrides as JSON, or `previous`: the defaults before issue
15) runs the two asset steps the way Dagster runs them, each in its own fresh process:
`item_features` (fit on P1 train) and `two_tower_model` (`train_evaluated_model`: early stopping
on validation, then the ranking rule chosen on validation). Each step's wall time and its own
peak RSS are reported; examples/s = P1 train rows x epochs run / the training step's wall time
(start-up, validation passes and the rule choice included), and over the epochs alone. Quality:
the best validation RMSE, and P1 test RMSE / NDCG@10 of the trained model through the serving
engine (`evaluate_all`, docs/architecture.md §6). Ratios are against the first `--params`.
`--seeds` trains each `--params` once per model seed (initialisation, shuffling, dropout) and adds
each setting's mean and standard deviation over them: the noise a quality difference is judged by.
"""

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

LIBRARY_TREE = "CINE_BENCH_LIBRARY_TREE"  # a `--baseline-code` step process imports from here
if os.environ.get(LIBRARY_TREE):  # bypass the editable install's finder for recommender_lib
    sys.meta_path = [f for f in sys.meta_path if "__editable__" not in type(f).__module__]
    sys.path.insert(0, os.environ[LIBRARY_TREE])

from recommender_lib.evaluation.protocols import evaluate_all
from recommender_lib.evaluation.report import load_protocol
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow import steps

# The training defaults before issue 15 changed them.
PREVIOUS_DEFAULTS = {
    "tower_units": [256, 128], "head_units": [128, 64], "batch_size": 512, "softmax_group": 512,
    "learning_rate": 0.002, "activation": "gelu", "op_threads": 0,
}  # fmt: skip


def _peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (reset by exec, unlike ru_maxrss, which a spawned step
    process inherits from the bench at fork time), else ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}  (peak RSS {_peak_rss_mb():,.0f} MB)", flush=True)


def _connect(path: Path) -> steps.Connect:
    def connect() -> Any:
        conn = warehouse.connect(path)
        conn.execute("SET enable_progress_bar = false")  # a clean log
        return conn

    return connect


def _exit_with_parent() -> None:
    """Stop this step process when the bench that started it is gone (killed or interrupted)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _features_step(db: Path, params: dict[str, Any], folder: Path) -> tuple:
    """The `item_features` step in this (fresh) process: (artefact, seconds, peak RSS MB)."""
    _exit_with_parent()
    t = time.perf_counter()
    feature_params = TwoTowerParams.from_dict(params).feature_params()
    artefact = steps.item_features(_connect(db), feature_params, folder)
    return artefact, time.perf_counter() - t, _peak_rss_mb()


def _train_step(
    db: Path, params: dict[str, Any], features: steps.ItemFeaturesArtefact, folder: Path
) -> tuple[float, float]:
    """The `two_tower_model` step in this (fresh) process: (seconds, peak RSS MB)."""
    _exit_with_parent()
    t = time.perf_counter()
    p = TwoTowerParams.from_dict(params)
    steps.train_evaluated_model(_connect(db), p, features, folder, _log)
    return time.perf_counter() - t, _peak_rss_mb()


def _in_fresh_process(fn: Callable[..., Any], *args: Any, code: Path | None = None) -> Any:
    """`fn(*args)` in a new spawned process (its own memory, as a Dagster step has); with
    `code`, the process imports `recommender_lib` from that source tree."""
    ctx = multiprocessing.get_context("spawn")
    if code is not None:
        os.environ[LIBRARY_TREE] = str(code.resolve())
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            return pool.submit(fn, *args).result()
    finally:
        os.environ.pop(LIBRARY_TREE, None)


def _prepare(args: argparse.Namespace, scratch: Path) -> tuple[Path, int]:
    """The release loaded into a warehouse file with its splits: (file, ratings)."""
    t = time.perf_counter()
    release = args.movielens
    if release is None:
        with zipfile.ZipFile(args.zip) as z:
            z.extractall(scratch / "release")
        release = next(p.parent for p in (scratch / "release").rglob("ratings.csv"))
    db = scratch / "warehouse.duckdb"
    conn = warehouse.connect(db)
    n = warehouse.load_movielens_release(conn, release)[0].row_count
    _log(f"load done in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    splits.build_splits(conn)
    conn.close()
    _log(f"splits done in {time.perf_counter() - t:.1f} s")
    return db, n


def _result(
    label: str, db: Path, params: dict[str, Any], scratch: Path, code: Path | None
) -> dict[str, Any]:
    """Both steps with `params` (the library at `code`, default this checkout), then the
    trained model's held-out P1 metrics."""
    features, features_s, features_rss = _in_fresh_process(
        _features_step, db, params, scratch / "f", code=code
    )
    _log(f"{label}: features done in {features_s:.1f} s (step peak RSS {features_rss:,.0f} MB)")
    train_s, train_rss = _in_fresh_process(
        _train_step, db, params, features, scratch / "m", code=code
    )
    _log(f"{label}: train done in {train_s:.1f} s (step peak RSS {train_rss:,.0f} MB)")
    model = TrainedTwoTower.load(scratch / "m")
    with warehouse.connect(db, read_only=True) as conn:
        data = load_protocol(conn, splits.P1)
    test = evaluate_all([model], data.catalogue, history=data.history, test=data.heldout)
    rows, epochs = len(data.train), int(model.info.get("epochs_run", 0))
    loop_s = sum(model.history.get("seconds", []))
    val_ndcg = model.history.get("val_ndcg10") or [float("nan")]
    return {
        "params": label,
        "epochs": epochs,
        "features_s": features_s,
        "features_rss": features_rss,
        "train_s": train_s,
        "train_rss": train_rss,
        "epoch_s": loop_s / max(epochs, 1),
        "examples_per_s": rows * epochs / train_s,
        "loop_examples_per_s": rows * epochs / max(loop_s, 1e-9),
        "val_rmse": min(model.history.get("val_rmse") or [float("nan")]),
        "val_ndcg10": val_ndcg[int(model.info.get("best_epoch", 1)) - 1],
        "test_rmse": float(test["rmse"].iloc[0]),
        "test_ndcg10": float(test["ndcg@10"].iloc[0]),
        "examples": f"{model.info['examples']}, {model.info['chunks']} chunk(s)",
        "rows": rows,
    }


def _print_table(results: list[dict[str, Any]]) -> None:
    base = results[0]
    head = (
        "| params | epochs | features s (peak MB) | train s (peak MB) | s/epoch "
        "| examples/s (step) | vs first | examples/s (epochs) | vs first | best val RMSE "
        "| its val NDCG@10 | P1 test RMSE | P1 test NDCG@10 | examples |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in results:
        print(
            f"| `{r['params']}` | {r['epochs']} | {r['features_s']:.1f} ({r['features_rss']:,.0f}) "
            f"| {r['train_s']:.1f} ({r['train_rss']:,.0f}) | {r['epoch_s']:.2f} "
            f"| {r['examples_per_s']:,.0f} | {r['examples_per_s'] / base['examples_per_s']:.2f}x "
            f"| {r['loop_examples_per_s']:,.0f} "
            f"| {r['loop_examples_per_s'] / base['loop_examples_per_s']:.2f}x "
            f"| {r['val_rmse']:.4f} | {r['val_ndcg10']:.4f} | {r['test_rmse']:.4f} "
            f"| {r['test_ndcg10']:.4f} | {r['examples']} |"
        )


def _mean_sd(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"


def _print_seed_summary(results: list[dict[str, Any]]) -> None:
    """Each setting's mean ± standard deviation over its seeds (ratios of the means)."""
    settings: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        settings.setdefault(r["setting"], []).append(r)
    first = next(iter(settings.values()))
    base = statistics.mean(r["loop_examples_per_s"] for r in first)
    head = (
        "| params | seeds | epochs | examples/s (epochs) | vs first | best val RMSE "
        "| P1 test RMSE | P1 test NDCG@10 |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for label, runs in settings.items():
        speed = [r["loop_examples_per_s"] for r in runs]
        print(
            f"| `{label}` | {len(runs)} | {_mean_sd([r['epochs'] for r in runs], '.1f')} "
            f"| {_mean_sd(speed, ',.0f')} | {statistics.mean(speed) / base:.2f}x "
            f"| {_mean_sd([r['val_rmse'] for r in runs], '.4f')} "
            f"| {_mean_sd([r['test_rmse'] for r in runs], '.4f')} "
            f"| {_mean_sd([r['test_ndcg10'] for r in runs], '.4f')} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--movielens", type=Path, help="extracted MovieLens release folder")
    source.add_argument("--zip", type=Path, help="MovieLens-style zip (e.g. a generated one)")
    parser.add_argument("--epochs", type=int, help="fixed epoch count (default: early stopping)")
    parser.add_argument(
        "--params", action="append", metavar="JSON",
        help="TwoTowerParams overrides as JSON, or 'previous' (the defaults before issue 15); "
        "repeat to run each in turn (ratios against the first); default: the defaults",
    )  # fmt: skip
    parser.add_argument("--scratch", type=Path, help="scratch folder (default: system temp)")
    parser.add_argument(
        "--baseline-code", type=Path, metavar="TREE",
        help="run the first --params with recommender_lib imported from this source tree (e.g. "
        "a `git worktree` of an earlier commit), so before and after are measured in one run",
    )  # fmt: skip
    parser.add_argument(
        "--seeds", metavar="N,N,...",
        help="train each --params once per model seed and summarise mean ± sd per setting",
    )  # fmt: skip
    args = parser.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [None]

    results = []
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        db, n = _prepare(args, Path(tmp))
        for n_setting, setting in enumerate(args.params or ["{}"]):
            overrides = PREVIOUS_DEFAULTS if setting == "previous" else json.loads(setting)
            if args.epochs:
                overrides = {**overrides, "epochs": args.epochs, "patience": args.epochs}
            code = args.baseline_code if n_setting == 0 else None
            label = setting + (f" (code at {code})" if code is not None else "")
            for seed in seeds:
                params = {**TwoTowerParams().to_dict(), **overrides}
                if seed is not None:
                    params["seed"] = seed
                run_label = label + (f", seed {seed}" if seed is not None else "")
                _log(f"training with {run_label}")
                with tempfile.TemporaryDirectory(dir=tmp) as run:
                    results.append(_result(run_label, db, params, Path(run), code))
                results[-1]["setting"] = label
    print(f"ratings {n:,}; P1 train rows {results[0]['rows']:,}")
    _print_table(results)
    if args.seeds:
        _print_seed_summary(results)


if __name__ == "__main__":
    main()
