"""The ranking-rule choice on validation: one pass per stage (`RankingEngine.rank_rules`) against
ranking the whole catalogue once per candidate rule, same model and probes, one run.

    .venv/bin/python -m recommender_lib.sources.sample_data --profile full --out /tmp/full
    .venv/bin/python bench/rule_choice.py --zip /tmp/full/movielens/ml-latest-small.zip \
        --user-stride 4
    .venv/bin/python bench/rule_choice.py --movielens ../shared/data/movielens/ml-latest-small

Loads the release (keeping one user in `--user-stride`) into a warehouse file with its splits,
fits the features and trains the two-tower model on P1 train (`--params`, `--epochs`), builds
the validation probes as training does (a seeded sample of at most `NDCG_MAX_USERS` users when
the examples are streamed), then times `choose_rule` twice: as the library runs it, and with
every candidate rule ranked by `RankingEngine.rank` over the whole catalogue. Reports both
times, their ratio, and whether the chosen rule and every candidate's validation NDCG@10 agree.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from training_speed import _prepare

from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.evaluation import rule_choice
from recommender_lib.evaluation.report import load_protocol
from recommender_lib.modeling import splits
from recommender_lib.modeling.features.fit import fit_features
from recommender_lib.modeling.two_tower.dataset import streams
from recommender_lib.modeling.two_tower.fit import fit
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule
from recommender_lib.warehouse import tables as warehouse
from recommender_lib.workflow.train import _probe_users

CHEAP_SHAPE = {"tower_units": [128], "head_units": [64], "batch_size": 1024, "softmax_group": 256}


def _warehouse(args: argparse.Namespace, scratch: Path) -> Path:
    """`training_speed`'s warehouse file, then one user in `--user-stride` kept (splits rebuilt)."""
    db, _ = _prepare(args, scratch)
    if args.user_stride > 1:
        conn = warehouse.connect(db)
        conn.execute(f"DELETE FROM movielens_ratings WHERE user_id % {args.user_stride} <> 0")
        splits.build_splits(conn)
        conn.close()
    return db


def _per_rule(
    probe: rule_choice.RankingProbe,
    engine: RankingEngine,
    rules: Sequence[RankingRule],
    k: int = 10,
) -> list[np.ndarray]:
    """`ndcg_values_of_rules` as before `rank_rules`: each rule ranks the whole catalogue."""
    return [probe.ndcg_values(engine, rule, k) for rule in rules]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--zip", type=Path, help="MovieLens release zip")
    source.add_argument("--movielens", type=Path, help="extracted MovieLens release folder")
    parser.add_argument("--user-stride", type=int, default=1, help="keep one user in N")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--params", default=json.dumps(CHEAP_SHAPE), help="TwoTowerParams JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        conn = warehouse.connect(_warehouse(args, Path(tmp)), read_only=True)
        data = load_protocol(conn, splits.P1)
        overrides = json.loads(args.params) | {"epochs": args.epochs, "patience": args.epochs}
        p = TwoTowerParams.from_dict(overrides)
        transform, items = fit_features(conn, data.train, p)
        model = fit(data.train, data.validation, items, transform, p, log=print)
        print(f"load, features and training: {time.perf_counter() - t:.1f} s", flush=True)
        engine = RankingEngine.from_model(model, items.item_ids)
        users = _probe_users(data.validation, p, streamed=streams(len(data.train), p))
        warm = rule_choice.ranking_probe(
            data.train, data.validation, items, transform, user_ids=users
        )
        cold = rule_choice.cold_probes(data.train, data.validation, items, transform, users)
        print(f"{len(users):,} validation users x {len(engine):,} titles", flush=True)

        t = time.perf_counter()
        rule, tried = rule_choice.choose_rule(engine, warm, cold)
        one_pass = time.perf_counter() - t
        print(f"one pass per stage (rank_rules): {one_pass:.1f} s", flush=True)
        library = rule_choice.RankingProbe.ndcg_values_of_rules
        rule_choice.RankingProbe.ndcg_values_of_rules = _per_rule  # type: ignore[method-assign,assignment]
        try:
            t = time.perf_counter()
            rule_before, tried_before = rule_choice.choose_rule(engine, warm, cold)
            per_rule = time.perf_counter() - t
        finally:
            rule_choice.RankingProbe.ndcg_values_of_rules = library  # type: ignore[method-assign]
        print(f"every rule over the whole catalogue: {per_rule:.1f} s", flush=True)
        same = tried == tried_before
        print(f"speed-up {per_rule / one_pass:.2f}x; same rule: {rule == rule_before}; "
              f"same validation NDCG@10 for all {len(tried)} candidates: {same}")  # fmt: skip
        print(f"chosen: {rule.describe()}")


if __name__ == "__main__":
    main()
