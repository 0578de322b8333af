"""Two-tower model: trains in seconds on tiny data, predicts stars, ranks, saves, cold-starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender_lib.engine.ranking import RankingEngine
from recommender_lib.evaluation.protocols import EngineRanking
from recommender_lib.modeling.features.fit import fit_features
from recommender_lib.modeling.splits import P1, load_split
from recommender_lib.modeling.two_tower.dataset import (
    ExampleBuilder,
    ExampleStream,
    item_id_index,
    streams,
    training_batches,
)
from recommender_lib.modeling.two_tower.networks import retrieval_loss
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.modeling.two_tower.ranking_rule import RankingRule
from recommender_lib.modeling.two_tower.trained import TrainedTwoTower
from recommender_lib.workflow.train import fit_two_tower, train_two_tower
from tests.support.sample_warehouse import load_sample_warehouse

TWO_TOWER_MODULES = ("params", "networks", "dataset", "fit", "trained", "ranking_rule")
TINY = TwoTowerParams(
    embedding_dim=8, tower_units=(32,), head_units=(16,), epochs=3, patience=2, batch_size=256,
    latent_dim=4, cold_share=0.3, user_noise=0.1,
)  # fmt: skip


@pytest.fixture(scope="module")
def data(sample_mirror, tmp_path_factory):
    conn = load_sample_warehouse(sample_mirror, tmp_path_factory.mktemp("ml"))
    train = load_split(conn, P1, "train")
    validation = load_split(conn, P1, "validation")
    test = load_split(conn, P1, "test")
    return conn, train, validation, test


@pytest.fixture(scope="module")
def trained(data) -> TrainedTwoTower:
    conn, train, validation, _ = data
    return fit_two_tower(conn, train, validation, TINY)


def test_tiny_model_trains_with_history(trained: TrainedTwoTower) -> None:
    h = trained.history
    assert 1 <= len(h["loss_mse"]) <= TINY.epochs
    assert len(h["val_rmse"]) == len(h["loss_mse"]) == len(h["loss_retrieval"])
    assert all(np.isfinite(h["val_rmse"]))
    assert trained.info["best_val_rmse"] == pytest.approx(min(h["val_rmse"]))
    assert trained.info["train_seconds"] > 0


def test_predictions_are_stars(data, trained: TrainedTwoTower) -> None:
    _, train, validation, test = data
    history = pd.concat([train, validation])
    pred = trained.predict(history, test[["user_id", "movie_id"]])
    assert pred.shape == (len(test),)
    assert np.isfinite(pred).all()
    assert pred.min() >= 0.5 and pred.max() <= 5.0
    assert pred.std() > 0.05  # not a constant
    # unknown titles and unknown users still get finite predictions
    odd = pd.DataFrame({"user_id": [10**9, int(train.user_id.iloc[0])], "movie_id": [1, -7]})
    assert np.isfinite(trained.predict(history, odd)).all()


def test_engine_retrieval_is_the_rule_formula(data, trained: TrainedTwoTower) -> None:
    _, train, _, _ = data
    users = np.sort(train["user_id"].unique())[:5]
    items = trained.items.item_ids
    rule = RankingRule(pop_weight=0.5, cold_pop_weight=2.0, cold_half=10.0)
    engine = RankingEngine.from_model(trained, items, rule=rule)
    ux = trained.user_features(train, users)
    u = trained.user_embeddings(ux)
    n = train.groupby("user_id").size().reindex(users).to_numpy()
    scores = engine.retrieval(u, n, rule)
    assert scores.shape == (len(users), len(items)) and np.isfinite(scores).all()
    v, b = trained.item_vectors(items)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    w = 0.5 + 2.0 * 10.0 / (n + 10.0)
    expected = u @ v.T / trained.temperature + b[None, :]
    expected += w[:, None] * np.log1p(trained.items.count)[None, :]
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)
    # a subset / reordering of items gives the same vectors; unknown ids are embedded too
    sub_v, sub_b = trained.item_vectors(np.array([items[3], items[0], -99]))
    np.testing.assert_allclose(sub_v[:2], v[[3, 0]], rtol=1e-5, atol=1e-5)
    assert np.isfinite(sub_v).all() and np.isfinite(sub_b).all()


def test_cold_start_from_one_rating(trained: TrainedTwoTower) -> None:
    movie = int(trained.items.item_ids[np.argmax(trained.items.count)])
    one = pd.DataFrame({"user_id": [-5], "movie_id": [movie], "rating": [5.0],
                        "rating_ts": [1_600_000_000]})  # fmt: skip
    pairs = pd.DataFrame({"user_id": [-5, -5], "movie_id": trained.items.item_ids[:2]})
    pred = trained.predict(one, pairs)
    assert np.isfinite(pred).all() and ((pred >= 0.5) & (pred <= 5.0)).all()
    engine = RankingEngine.from_model(trained, trained.items.item_ids)
    rated_row = trained.items.index_of(np.array([movie]))
    ranked = engine.rank(trained.user_features(one, np.array([-5])), [1], 10, excluded=[rated_row])
    assert ranked.rows.shape == (1, 10) and rated_row[0] not in ranked.rows[0]
    assert np.isfinite(ranked.stars).all() and np.isfinite(ranked.scores).all()
    # the serving helper is the same computation as `predict` for that one user
    served = trained.predict_from_ratings(one[["movie_id", "rating", "rating_ts"]], pairs.movie_id)
    np.testing.assert_allclose(served, pred, rtol=1e-5)
    # zero ratings: a pure cold start still works
    empty = one.iloc[:0]
    assert np.isfinite(trained.predict(empty, pairs)).all()


def test_save_load_round_trip(data, trained: TrainedTwoTower, tmp_path: Path) -> None:
    _, train, validation, test = data
    history = pd.concat([train, validation])
    trained.save(tmp_path / "model")
    loaded = TrainedTwoTower.load(tmp_path / "model")
    pairs = test[["user_id", "movie_id"]]
    np.testing.assert_array_equal(loaded.predict(history, pairs), trained.predict(history, pairs))
    users = np.sort(test["user_id"].unique())[:7]
    items = trained.items.item_ids
    exclude = np.zeros((len(users), len(items)), dtype=bool)
    np.testing.assert_array_equal(
        EngineRanking.of(loaded, items).positions(history, users, exclude, 10),
        EngineRanking.of(trained, items).positions(history, users, exclude, 10),
    )
    np.testing.assert_array_equal(loaded.item_vectors(items)[0], trained.item_vectors(items)[0])
    assert loaded.ranking == trained.ranking
    assert loaded.transform == trained.transform
    assert loaded.params == trained.params
    assert loaded.history == trained.history


def test_saved_model_loads_in_a_fresh_process(data, trained: TrainedTwoTower, tmp_path) -> None:
    """Loading registers the towers' own layers: nothing else need be imported first."""
    _, train, _, test = data
    trained.save(tmp_path / "model")
    train.to_pickle(tmp_path / "history.pkl")
    test[["user_id", "movie_id"]].to_pickle(tmp_path / "pairs.pkl")
    code = (
        "import numpy as np, pandas as pd; "
        "from recommender_lib.modeling.two_tower.trained import TrainedTwoTower; "
        f"d = {str(tmp_path)!r}; m = TrainedTwoTower.load(d + '/model'); "
        "p = m.predict(pd.read_pickle(d + '/history.pkl'), pd.read_pickle(d + '/pairs.pkl')); "
        "np.save(d + '/loaded.npy', p)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    np.testing.assert_array_equal(
        np.load(tmp_path / "loaded.npy"), trained.predict(train, test[["user_id", "movie_id"]])
    )


def test_training_is_reproducible(data) -> None:
    conn, train, validation, _ = data
    params = TwoTowerParams(**{**TINY.to_dict(), "epochs": 1, "tower_units": (16,)})
    transform, items = fit_features(conn, train, params)
    a = train_two_tower(train, validation, items, transform, params)
    b = train_two_tower(train, validation, items, transform, params)
    assert a.history["val_rmse"] == pytest.approx(b.history["val_rmse"], abs=1e-4)


def test_streamed_training(data, tmp_path: Path) -> None:
    """Above `in_memory_rows` examples stream in chunks of whole users, each built once and read
    back from its shards in later epochs, and the model learns."""
    conn, train, validation, _ = data
    params = TwoTowerParams(**{**TINY.to_dict(), "epochs": 2, "patience": 2,
                               "in_memory_rows": 1_000, "chunk_rows": 2_000,
                               "shard_dir": str(tmp_path)})  # fmt: skip
    transform, items = fit_features(conn, train, params)
    logs: list[str] = []
    model = train_two_tower(train, validation, items, transform, params, log=logs.append)
    h = model.history
    assert model.info["examples"] == "streamed" and model.info["chunks"] >= 3
    assert sum("built and saved" in line for line in logs) == model.info["chunks"]  # once
    assert list(tmp_path.iterdir()) == []  # the shards are removed after training
    assert len(h["loss_mse"]) == 2 and np.isfinite(h["loss_mse"] + h["loss_retrieval"]).all()
    assert h["loss_mse"][1] < h["loss_mse"][0]
    constant = np.sqrt(np.mean((validation["rating"] - train["rating"].mean()) ** 2))
    assert np.isfinite(h["val_rmse"]).all() and min(h["val_rmse"]) < constant
    assert np.isfinite(h["val_ndcg10"]).all()
    assert model.info["ndcg_users"] == validation["user_id"].nunique()  # below the sample size


@pytest.mark.parametrize("in_memory_rows", [4_000_000, 1_000], ids=["in_memory", "streamed"])
def test_user_noise_is_drawn_in_the_batches(data, tmp_path: Path, in_memory_rows: int) -> None:
    """The batches carry the user features blurred by centred noise of std `user_noise`, drawn
    with the batch rather than in the network; every other array is the noiseless batch's."""
    conn, train, _, _ = data

    def first_batch(noise: float) -> dict[str, np.ndarray]:
        streaming = {"in_memory_rows": in_memory_rows, "chunk_rows": 2_000}
        p = TwoTowerParams(
            **{**TINY.to_dict(), **streaming, "shard_dir": str(tmp_path), "user_noise": noise}
        )
        transform, items = fit_features(conn, train, p)
        idx = items.index_of(train["movie_id"].to_numpy())
        build = ExampleBuilder.for_train(idx, items, transform, p, item_id_index(items, 1))
        stream = ExampleStream(train, idx, build, p, None) if streams(len(train), p) else None
        try:
            batch = next(iter(training_batches(train, idx, build, stream)(0)))
        finally:
            if stream is not None:
                stream.close()
        return {name: np.asarray(a) for name, a in batch.items()}

    clean, noisy = first_batch(0.0), first_batch(0.5)
    blur = noisy["ux"] - clean["ux"]
    assert abs(blur.mean()) < 0.02 and blur.std() == pytest.approx(0.5, rel=0.05)
    for name in clean.keys() - {"ux"}:
        np.testing.assert_array_equal(noisy[name], clean[name])


def test_streamed_epochs_see_the_same_examples(data, tmp_path: Path) -> None:
    """Epoch 2 reads the shards epoch 1 built: the same examples, in another order."""
    conn, train, _, _ = data
    params = TwoTowerParams(
        **{**TINY.to_dict(), "chunk_rows": 2_000, "batch_size": 1, "shard_dir": str(tmp_path)}
    )  # batches of one row: no partial batch dropped
    transform, items = fit_features(conn, train, params)
    idx = items.index_of(train["movie_id"].to_numpy())
    build = ExampleBuilder.for_train(idx, items, transform, params, item_id_index(items, 1))
    stream = ExampleStream(train, idx, build, params, None)
    try:
        epochs = [list(stream.batches(e)) for e in (0, 1)]
    finally:
        stream.close()
    rows = [
        np.concatenate([np.column_stack([b["ux"], b["ix"], b["y"]]) for b in e]) for e in epochs
    ]
    assert len(epochs[0]) == len(epochs[1]) == stream.steps_per_epoch
    assert not np.array_equal(rows[0], rows[1])  # reshuffled
    np.testing.assert_array_equal(*(r[np.lexsort(r.T[::-1])] for r in rows))
    assert stream.shards is not None and not stream.shards.exists()


def test_grouped_softmax_is_the_mean_over_groups() -> None:
    """With `softmax_group` < batch, the retrieval loss is the in-batch loss of each group of
    rows (a trailing partial group included), weighted by positives: its cost per example does
    not grow with the batch, and a group as large as the batch is the plain in-batch loss."""
    import tensorflow as tf

    rng = np.random.default_rng(3)
    n, d = 300, 8
    u, v = (tf.constant(rng.normal(size=(n, d)), tf.float32) for _ in range(2))
    b = tf.constant(rng.normal(size=n), tf.float32)
    batch = {
        "ids": tf.constant(rng.integers(0, 40, n), tf.int32),
        "logq": tf.constant(rng.normal(size=n), tf.float32),
        "pos": tf.constant(rng.random(n) > 0.3, tf.float32),
    }
    grouped = float(retrieval_loss(u, v, b, batch, TwoTowerParams(softmax_group=128)))
    whole, weights = [], []
    for s in range(0, n, 128):
        part = {k: x[s : s + 128] for k, x in batch.items()}
        w = float(tf.reduce_sum(part["pos"]))
        p = TwoTowerParams(softmax_group=512)
        whole.append(
            float(retrieval_loss(u[s : s + 128], v[s : s + 128], b[s : s + 128], part, p)) * w
        )
        weights.append(w)
    assert grouped == pytest.approx(sum(whole) / sum(weights), rel=1e-5)


def test_ranking_rule_is_chosen_on_validation_and_recorded(trained: TrainedTwoTower) -> None:
    info = trained.info
    assert RankingRule.from_dict(info["ranking_rule"]) == trained.ranking
    search = info["ranking_validation_ndcg10"]
    assert len(search) >= 10 and all(np.isfinite(v) for v in search.values())
    assert any(k.startswith("stars_in_window") for k in search)
    assert any(k.startswith("blend") for k in search)


def test_refit_runs_fixed_epochs_with_the_given_rule(data) -> None:
    conn, train, validation, test = data
    everything = pd.concat([train, validation, test], ignore_index=True)
    transform, items = fit_features(conn, everything, TINY)
    rule = RankingRule(kind="blend", pop_weight=0.25, star_weight=0.5)
    model = train_two_tower(everything, None, items, transform, TINY, ranking=rule, fixed_epochs=2)
    assert model.ranking == rule and model.info["epochs_run"] == 2
    assert model.info["best_epoch"] == 2 and model.history["val_rmse"] == []


def test_params_round_trip() -> None:
    p = TwoTowerParams(tower_units=(64, 32), retrieval_weight=0.3)
    assert TwoTowerParams.from_dict(p.to_dict()) == p
    assert TwoTowerParams.from_dict({**p.to_dict(), "unknown": 1}) == p
    # params saved before a field existed load with its default
    older = {k: v for k, v in p.to_dict().items() if k not in ("in_memory_rows", "chunk_rows")}
    assert TwoTowerParams.from_dict(older) == p


def test_import_does_not_load_tensorflow() -> None:
    modules = [f"recommender_lib.modeling.two_tower.{m}" for m in TWO_TOWER_MODULES]
    modules += [f"recommender_lib.modeling.features.{m}" for m in ("transform", "items", "users")]
    modules += ["recommender_lib.modeling.features.fit", "recommender_lib.workflow.train"]
    code = (
        f"import sys, {', '.join(modules)}; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_op_threads_are_set_before_tensorflow_starts_and_reported_after() -> None:
    code = (
        "import tensorflow as tf; "
        "from recommender_lib.modeling.two_tower.fit import _use_op_threads; "
        "logs = []; assert _use_op_threads(1, logs.append) == 1 and not logs; "
        "tf.constant(1.0) + 1.0; "  # TensorFlow starts: its thread pools are fixed
        "assert _use_op_threads(2, logs.append) == 1 and 'not applied' in logs[0]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
