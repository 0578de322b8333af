"""Training throughput of the two-tower model: wall time, examples/s and peak RSS.

    .venv/bin/python bench/training_speed.py --movielens ../shared/data/movielens/ml-latest-small
    .venv/bin/python -m recommender_lib.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/training_speed.py --epochs 1 \
        --zip /tmp/full/movielens/ml-latest-small.zip

Loads the release into an in-memory warehouse, builds the P1 split and the features exactly as
the assets do, then times `train_model` alone (features and splits are timed separately).
"""

import argparse
import resource
import tempfile
import time
import zipfile
from pathlib import Path

from recommender_lib import splits, training, warehouse
from recommender_lib.two_tower import TwoTowerParams


def _release_dir(args: argparse.Namespace, scratch: Path) -> Path:
    if args.movielens:
        return args.movielens
    with zipfile.ZipFile(args.zip) as z:
        z.extractall(scratch)
    return next(p.parent for p in scratch.rglob("ratings.csv"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--movielens", type=Path, help="extracted MovieLens release folder")
    source.add_argument("--zip", type=Path, help="MovieLens-style zip (e.g. a generated one)")
    parser.add_argument("--epochs", type=int, help="fixed epoch count (default: early stopping)")
    args = parser.parse_args()

    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        t = time.perf_counter()
        release = _release_dir(args, Path(scratch))
        conn = warehouse.connect(":memory:")
        n = warehouse.load_movielens_release(conn, release)[0].row_count
        timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    splits.build_splits(conn)
    data = training.load_protocol(conn, splits.P1)
    timings["splits"] = time.perf_counter() - t

    params = TwoTowerParams()
    if args.epochs:
        params = TwoTowerParams(epochs=args.epochs, patience=args.epochs)
    t = time.perf_counter()
    features = training.fit_protocol_features(conn, splits.P1, params)
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    model = training.train_model(data, params, features)
    timings["train"] = time.perf_counter() - t
    epochs = int(model.info.get("epochs_run", 0))
    examples = len(data.train) * epochs

    print(f"ratings {n:,}; P1 train rows {len(data.train):,}; epochs {epochs}")
    for stage, seconds in timings.items():
        print(f"{stage:>9}: {seconds:8.1f} s")
    print(f"examples/s: {examples / timings['train']:,.0f}  (train rows x epochs / train time)")
    print(f"peak RSS: {_peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
