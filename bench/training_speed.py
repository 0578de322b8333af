"""Training throughput of the two-tower model: wall time, examples/s and peak RSS.

    .venv/bin/python bench/training_speed.py --movielens ../shared/data/movielens/ml-latest-small
    .venv/bin/python -m recommender_lib.sources.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/training_speed.py --epochs 1 \
        --zip /tmp/full/movielens/ml-latest-small.zip

Loads the release into an in-memory warehouse, builds the P1 split and the features exactly as
the assets do, closes the warehouse, then times `train_model` alone (features and splits are
timed separately). Prints each stage's time and the peak RSS reached by its end, examples/s,
how the examples were fed (in memory or streamed) and the validation RMSE of the last epoch.
"""

import argparse
import resource
import tempfile
import time
import zipfile
from pathlib import Path

from recommender_lib.evaluation.report import load_protocol
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow import steps


def _release_dir(args: argparse.Namespace, scratch: Path) -> Path:
    if args.movielens:
        return args.movielens
    with zipfile.ZipFile(args.zip) as z:
        z.extractall(scratch)
    return next(p.parent for p in scratch.rglob("ratings.csv"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}  (peak RSS {_peak_rss_mb():,.0f} MB)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--movielens", type=Path, help="extracted MovieLens release folder")
    source.add_argument("--zip", type=Path, help="MovieLens-style zip (e.g. a generated one)")
    parser.add_argument("--epochs", type=int, help="fixed epoch count (default: early stopping)")
    args = parser.parse_args()

    timings: dict[str, tuple[float, float]] = {}  # stage -> (seconds, peak RSS MB at its end)

    def done(stage: str, start: float) -> None:
        timings[stage] = (time.perf_counter() - start, _peak_rss_mb())
        _log(f"{stage} done in {timings[stage][0]:.1f} s")

    with tempfile.TemporaryDirectory() as scratch:
        t = time.perf_counter()
        release = _release_dir(args, Path(scratch))
        conn = warehouse.connect(":memory:")
        n = warehouse.load_movielens_release(conn, release)[0].row_count
        done("load", t)

    t = time.perf_counter()
    splits.build_splits(conn)
    data = load_protocol(conn, splits.P1)
    done("splits", t)

    params = TwoTowerParams()
    if args.epochs:
        params = TwoTowerParams(epochs=args.epochs, patience=args.epochs)
    connect = steps.connection(conn)
    with tempfile.TemporaryDirectory() as scratch:
        t = time.perf_counter()
        features = steps.item_features(connect, params.feature_params(), Path(scratch) / "f")
        done("features", t)
        # the asset's step: reads P1 from the warehouse, then trains without holding it
        t = time.perf_counter()
        model = steps.train_evaluated_model(connect, params, features, Path(scratch) / "m", _log)
        done("train", t)
    epochs = int(model.info.get("epochs_run", 0))
    examples = len(data.train) * epochs
    train_s = timings["train"][0]

    print(f"ratings {n:,}; P1 train rows {len(data.train):,}; validation rows "
          f"{len(data.validation):,}; epochs {epochs}; examples {model.info['examples']}, "
          f"{model.info['chunks']} chunk(s)")  # fmt: skip
    print(f"{'stage':>9}  {'seconds':>8}  {'peak RSS MB':>11}")
    for stage, (seconds, rss) in timings.items():
        print(f"{stage:>9}  {seconds:8.1f}  {rss:11,.0f}")
    print(f"examples/s: {examples / train_s:,.0f}  (train rows x epochs / train time)")
    val_s = sum(model.history.get("val_seconds", []))
    print(f"  of which validation passes {val_s:.1f} s; without them "
          f"{examples / max(train_s - val_s, 1e-9):,.0f} examples/s")  # fmt: skip
    if model.history.get("val_rmse"):
        print(f"validation RMSE (last epoch): {model.history['val_rmse'][-1]:.4f}; "
              f"NDCG@10 {model.history['val_ndcg10'][-1]:.4f} on "
              f"{model.info['ndcg_users']:,} users")  # fmt: skip
    print(f"peak RSS: {_peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
