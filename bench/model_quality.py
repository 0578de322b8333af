"""Model quality on a MovieLens release: the two-tower model beside the baselines
(docs/architecture.md §6).

Runs exactly what the `rating_splits` -> `item_features` -> `two_tower_model` -> `model_evaluation`
assets run, on an in-memory warehouse. The model's ranking metrics go through the served ranking
engine with the rule chosen on validation (`recommender_lib.engine.ranking`), as the API ranks; the
baselines are global mean, damped bias, most popular and EASE.

    .venv/bin/python bench/model_quality.py --movielens ../shared/data/movielens/ml-latest-small

Prints markdown tables (P1 and P2) and the training time; `--json PATH` also saves them.
"""

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from recommender_lib.evaluation.report import load_protocol
from recommender_lib.modeling import splits
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow import steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--movielens", type=Path, required=True, help="extracted release folder")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--seed", type=int, default=TwoTowerParams().seed)
    args = parser.parse_args()

    conn = warehouse.connect(":memory:")
    warehouse.load_movielens_release(conn, args.movielens)
    splits.build_splits(conn)
    params = TwoTowerParams(seed=args.seed)
    connect = steps.connection(conn)
    with tempfile.TemporaryDirectory() as scratch:
        features = steps.item_features(
            connect, params.feature_params(), Path(scratch) / "item_features"
        )
        started = time.perf_counter()
        evaluated = steps.train_evaluated_model(connect, params, features, Path(scratch) / "p1")
        p1_seconds = time.perf_counter() - started
        report = steps.evaluate_model(connect, evaluated)
    p1 = load_protocol(conn, splits.P1)

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"P1 train rows {len(p1.train)}, validation {len(p1.validation)}, test {len(p1.heldout)}")
    print(f"P1 model trained in {p1_seconds:.1f} s, {evaluated.info.get('epochs_run')} epochs;"
          f" peak RSS {rss_mb:.0f} MB")  # fmt: skip
    print(f"ranking rule (P1): {evaluated.ranking_rule}\n")
    print("P1 (per-user temporal holdout)\n" + report.p1.round(4).to_markdown(index=False))
    print("\nP2 (cold start)\n" + report.p2.round(4).to_markdown(index=False))
    failures = report.gate_failures()
    print("\ngate:", "passes" if not failures else "; ".join(failures))
    if args.json:
        results = json.loads(report.to_json()) | {"p1_train_seconds": p1_seconds,
                                                  "peak_rss_mb": rss_mb}  # fmt: skip
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
