"""Where a training step of the two-tower model goes, on the real ml-latest-small (P1's train
split): TensorFlow's profiler over `--steps` steps (op time by op type, summed over the compute
threads), then examples/s of the input pipeline alone, of the steps alone on batches drawn
beforehand, and of whole epochs (batches drawn while the steps run).

    .venv/bin/python bench/training_profile.py --movielens ../shared/data/movielens/ml-latest-small
    .venv/bin/python bench/training_profile.py --movielens ... --params '{"activation":"relu"}'

One process, the library of this checkout, `op_threads` applied as `fit` applies it; the
set-up is `fit`'s (`two_tower.fit._Setup`), so the step profiled is the step that trains.
"""

import argparse
import collections
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from recommender_lib.evaluation.report import load_protocol
from recommender_lib.modeling import splits
from recommender_lib.modeling.features.transform import check_ratings
from recommender_lib.modeling.two_tower import fit
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow import steps


def _setup(release: Path, p: TwoTowerParams, scratch: Path) -> tuple[Any, int]:
    """`fit`'s training set-up on P1's train split of `release`: (setup, train rows)."""
    db = scratch / "warehouse.duckdb"
    with warehouse.connect(db) as conn:
        warehouse.load_movielens_release(conn, release)
        splits.build_splits(conn)
        train = check_ratings(load_protocol(conn, splits.P1).train)
    features = steps.item_features(
        steps.connection(warehouse.connect(db)), p.feature_params(), scratch / "features"
    )
    transform, items = features.load()
    return fit._Setup.build(train, items, transform, p, None), len(train)


def _op_times(trace_dir: Path, n_steps: int) -> tuple[collections.Counter, collections.Counter]:
    """(ms per step, ops per step) by op type, over the compute threads of the saved trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(next(trace_dir.rglob("*.xplane.pb")).read_bytes())
    ms: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith("ExecutorState"):  # "scope/op:OpType"
                    op_type = name.rsplit(":", 1)[1]
                    ms[op_type] += event.duration_ps / 1e9 / n_steps
                    count[op_type] += 1 / n_steps
    return ms, count


def _speeds(run: Any, batches: list[Any], rows: int, batch_size: int) -> dict[str, float]:
    """Examples/s, best of three passes: the input pipeline alone, the steps alone over
    `batches`, whole epochs."""
    seconds: dict[str, list[float]] = {"input pipeline alone": [], "steps alone": [], "epochs": []}
    for epoch in (1, 2, 3):
        t = time.perf_counter()
        for _ in run.batches(epoch):
            pass
        seconds["input pipeline alone"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for batch in batches:
            mse, _ = run.step(batch)
        float(mse)
        seconds["steps alone"].append(time.perf_counter() - t)
        t = time.perf_counter()
        fit._epoch(run.batches(epoch + 3), run.step)
        seconds["epochs"].append(time.perf_counter() - t)
    drawn = rows // batch_size * batch_size  # whole batches only (drop_remainder)
    examples = {"input pipeline alone": drawn, "steps alone": len(batches) * batch_size,
                "epochs": rows}  # fmt: skip
    return {name: examples[name] / min(s) for name, s in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--movielens", type=Path, required=True, help="an ml-latest-small folder")
    ap.add_argument("--params", default="{}", help="TwoTowerParams overrides (JSON)")
    ap.add_argument("--steps", type=int, default=20, help="steps profiled")
    ap.add_argument("--top", type=int, default=20, help="op types listed")
    args = ap.parse_args()
    p = TwoTowerParams.from_dict({**TwoTowerParams().to_dict(), **json.loads(args.params)})
    threads = fit._use_op_threads(p.op_threads, print)
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(p.seed)
    with tempfile.TemporaryDirectory(prefix="cine-profile-") as tmp:
        scratch = Path(tmp)
        run, rows = _setup(args.movielens, p, scratch)
        warm, profiled = 5, args.steps
        batches = list(itertools.islice(run.batches(0), warm + profiled))
        t = time.perf_counter()
        run.step(batches[0])
        first_step = time.perf_counter() - t
        for batch in batches[1:warm]:
            run.step(batch)
        tf.profiler.experimental.start(str(scratch / "trace"))
        for batch in batches[warm:]:
            mse, _ = run.step(batch)
        float(mse)
        tf.profiler.experimental.stop()
        ms, count = _op_times(scratch / "trace", len(batches) - warm)
        speeds = _speeds(run, batches[warm:], rows, p.batch_size)
    print(f"params {args.params}, op_threads {threads}; first step (tracing) {first_step:.2f} s")
    print(f"op time per step {sum(ms.values()):.1f} ms over {sum(count.values()):,.0f} ops "
          f"(batch {p.batch_size}, {len(batches) - warm} steps profiled)\n")  # fmt: skip
    print("| op type | ms per step | ops per step |\n|---|---:|---:|")
    for op_type, v in ms.most_common(args.top):
        print(f"| {op_type} | {v:.2f} | {count[op_type]:.0f} |")
    print("\nexamples/s, best of 3: " + "; ".join(f"{k} {v:,.0f}" for k, v in speeds.items()))


if __name__ == "__main__":
    main()
