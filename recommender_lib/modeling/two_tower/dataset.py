"""Training inputs of the two-tower model: the examples of each train rating, held in memory as
tensors or streamed chunk by chunk (`ExampleStream`), and each epoch's batches over them.

Up to `in_memory_rows` training rows the examples are held in memory as tensors; larger sets
stream them chunk by chunk (whole users per chunk), so memory is bounded by `chunk_rows`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path
from recommender_lib.modeling.features.items import ItemFeatures, training_item_rows
from recommender_lib.modeling.features.transform import FeatureTransform, baseline_prediction
from recommender_lib.modeling.features.users import training_user_features, user_row_chunks
from recommender_lib.modeling.two_tower.params import TwoTowerParams

Seed = int | Sequence[int]  # a numpy.random.default_rng seed
# The arrays of a chunk's examples (saved as its shards): feature matrices, item ids (int32),
# and float32 (rows,) vectors.
EXAMPLE_ARRAYS = ("ux", "ix", "ids", "base", "y", "pos", "logq")
PREFETCH_BATCHES = 2  # batches prepared ahead of the training step
NOISE_BANK_ROWS = 65_536  # rows of Gaussian user noise a training row draws one of


def item_id_index(items: ItemFeatures, min_count: int) -> np.ndarray:
    """Embedding row per catalogue item: 1.. for titles with >= min_count ratings, else 0 (OOV)."""
    keep = items.count >= max(min_count, 1)
    index = np.zeros(len(items), dtype=np.int32)
    index[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return index


def item_inputs(
    items: ItemFeatures, transform: FeatureTransform, item_index: np.ndarray, movie_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Item-tower inputs of `movie_ids`: feature rows and id-embedding rows (0 outside)."""
    idx = items.index_of(movie_ids)
    rows = items.rows(movie_ids, transform)
    ids = np.where(idx >= 0, item_index[np.maximum(idx, 0)], 0).astype(np.int32)
    return rows, ids


def streams(n_rows: int, p: TwoTowerParams) -> bool:
    """Whether `n_rows` training rows are streamed in chunks rather than held as tensors."""
    return n_rows > p.in_memory_rows


@dataclass(frozen=True)
class ExampleBuilder:
    """The model inputs and targets of training rows (float32, ids int32), in their order.

    `logq_item`: log of each title's share of ALL train ratings (the in-batch sampling
    probability), the same for every chunk.
    """

    items: ItemFeatures
    transform: FeatureTransform
    p: TwoTowerParams
    item_index: np.ndarray
    logq_item: np.ndarray

    @classmethod
    def for_train(
        cls,
        idx: np.ndarray,
        items: ItemFeatures,
        transform: FeatureTransform,
        p: TwoTowerParams,
        item_index: np.ndarray,
    ) -> ExampleBuilder:
        """The builder of a train set whose rows are at catalogue positions `idx`."""
        freq = np.bincount(idx, minlength=len(items)).astype(np.float64)
        logq_item = np.log(np.maximum(freq, 1.0) / max(len(idx), 1)).astype(np.float32)
        return cls(items, transform, p, item_index, logq_item)

    def __call__(self, train: pd.DataFrame, idx: np.ndarray, seed: Seed) -> dict[str, np.ndarray]:
        """Examples of the rows `train` at catalogue positions `idx` (cold-start draws: `seed`)."""
        items, transform, p = self.items, self.transform, self.p
        ux = training_user_features(
            train, items, transform, p.user_scheme,  # type: ignore[arg-type]
            cold_share=p.cold_share, cold_max=p.cold_max, seed=seed,
        )  # fmt: skip
        ix = training_item_rows(train, items, transform) if p.item_loo else items.matrix[idx]
        y = train["rating"].to_numpy(np.float32)
        return {
            "ux": ux,
            "ix": ix,
            "ids": self.item_index[idx].astype(np.int32),
            "base": baseline_prediction(ux, ix[:, transform.item_bias_column], transform).astype(
                np.float32
            ),
            "y": y,
            "pos": (y >= p.retrieval_min_rating).astype(np.float32),
            "logq": self.logq_item[idx],
        }


class ExampleStream:
    """Training batches built chunk by chunk, for train sets too big to hold as tensors.

    Chunks hold whole users (`chunk_rows` ratings or so), so `prefix` user features equal the
    unchunked ones; a chunk's cold-start draws are seeded by (seed, chunk), so its examples are
    the same every epoch: the first epoch builds each chunk once (the next one in a background
    thread while the current one trains) and writes it as `.npy` shards under a scratch folder
    (in `p.shard_dir`, default the system's temporary folder; removed by `close`); later epochs
    read the shards back. Each epoch visits the chunks in a seeded random order, shuffles the
    rows within each and drops the chunk's last partial batch (as `drop_remainder` does for the
    whole set in memory).
    """

    def __init__(
        self,
        train: pd.DataFrame,
        idx: np.ndarray,
        build: ExampleBuilder,
        p: TwoTowerParams,
        log: Callable[[str], None] | None,
    ) -> None:
        self.train, self.idx, self.build, self.p, self.log = train, idx, build, p, log
        self.chunks = user_row_chunks(train["user_id"].to_numpy(), p.chunk_rows)
        self.shards: Path | None = None  # created by the first build
        self.built: set[int] = set()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cine-examples")

    @property
    def steps_per_epoch(self) -> int:
        return sum(max(len(c) // self.p.batch_size, 1) for c in self.chunks)

    def _chunk(self, c: int) -> dict[str, np.ndarray]:
        """Chunk `c`'s examples in its rows' order: read from its shards, else built and saved."""
        if self.shards is None:
            self.shards = Path(
                tempfile.mkdtemp(prefix="cine-examples-", dir=self.p.shard_dir or None)
            )
        folder = self.shards / f"chunk-{c:05d}"
        if c in self.built:
            return {name: np.load(folder / f"{name}.npy") for name in EXAMPLE_ARRAYS}
        t = time.perf_counter()
        rows = self.chunks[c]
        arrays = self.build(self.train.iloc[rows], self.idx[rows], (self.p.seed, 0, int(c)))
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", a)
        self.built.add(c)
        if self.log:
            self.log(f"chunk {c + 1}/{len(self.chunks)}: {len(rows):,} rows built and saved "
                     f"in {time.perf_counter() - t:.1f}s")  # fmt: skip
        return arrays

    def batches(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        bs = self.p.batch_size
        rng = np.random.default_rng((self.p.seed, 1, epoch))
        order = [int(c) for c in rng.permutation(len(self.chunks))]
        ahead = self.pool.submit(self._chunk, order[0])
        for n, c in enumerate(order):
            arrays = ahead.result()
            if n + 1 < len(order):
                ahead = self.pool.submit(self._chunk, order[n + 1])
            perm = rng.permutation(len(self.chunks[c]))
            for start in range(0, max(len(perm) // bs, 1) * bs, bs):
                take = perm[start : start + bs]
                yield {name: a[take] for name, a in arrays.items()}
            del arrays  # before the one after next is built

    def close(self) -> None:
        """Stop the builder thread and remove the shards."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.shards is not None:
            shutil.rmtree(self.shards, ignore_errors=True)


Batches = Callable[[int], Iterable[Any]]  # epoch -> that epoch's training batches


def noise_bank(n_features: int, std: float, seed: int) -> np.ndarray:
    """`NOISE_BANK_ROWS` seeded rows of Gaussian noise of std `std` (float32). Each training row
    adds a randomly picked one: gathering a row costs a small share of drawing fresh normals."""
    rng = np.random.default_rng((seed, 3))
    bank = rng.standard_normal((NOISE_BANK_ROWS, n_features), dtype=np.float32)
    bank *= np.float32(std)
    return bank


def training_batches(
    train: pd.DataFrame, idx: np.ndarray, build: ExampleBuilder, stream: ExampleStream | None
) -> Batches:
    """Each epoch's training batches over `train` (catalogue positions `idx`), every batch with
    `ids_in`: its item ids, a random `item_id_dropout` share of them replaced by the OOV id 0,
    and its user features blurred by Gaussian noise of std `user_noise` (curbs memorising
    users): each row adds a random row of a `noise_bank`, picked with the batch (in memory, by
    the prefetching tf.data map, off the step's path).

    In memory (no `stream`): a tf.data pipeline over the examples as tensors shuffles (cached)
    row indices, batches them, gathers each batch (10x faster than shuffling 70k dict elements
    one by one) and prefetches, with tf.data's autotuning off. Streamed: the stream's numpy
    batches go to the step as they are, without tf.data. Why, measured: docs/architecture.md
    §6.7 and BENCHMARKS.md.
    """
    p = build.p
    drop_rate, noise = float(p.item_id_dropout), float(p.user_noise)
    bank = noise_bank(len(build.transform.user_columns), noise, p.seed) if noise > 0 else None
    if stream is not None:

        def streamed(epoch: int) -> Iterator[dict[str, np.ndarray]]:
            rng = np.random.default_rng((p.seed, 2, epoch))
            for batch in stream.batches(epoch):
                keep = rng.random(len(batch["ids"])) >= drop_rate
                batch["ids_in"] = np.where(keep, batch["ids"], 0).astype(np.int32)
                if bank is not None:  # the batch's rows are a copy
                    batch["ux"] += bank[rng.integers(0, len(bank), len(batch["ux"]))]
                yield batch

        return streamed

    import tensorflow as tf

    examples = build(train, idx, p.seed)
    tensors = {name: tf.constant(examples.pop(name)) for name in list(examples)}
    noise_rows = None if bank is None else tf.constant(bank)

    def gather(rows: Any) -> dict[str, Any]:
        batch = {name: tf.gather(t, rows) for name, t in tensors.items()}
        keep = tf.random.uniform(tf.shape(batch["ids"]), seed=p.seed) >= drop_rate
        batch["ids_in"] = tf.where(keep, batch["ids"], tf.zeros_like(batch["ids"]))
        if noise_rows is not None:  # op seed: a stream apart from the id dropout's
            pick = tf.random.uniform(
                tf.shape(rows), maxval=NOISE_BANK_ROWS, dtype=tf.int64, seed=p.seed + 1
            )
            batch["ux"] += tf.gather(noise_rows, pick)
        return batch

    ds = tf.data.Dataset.range(len(train)).cache()
    ds = ds.shuffle(len(train), seed=p.seed, reshuffle_each_iteration=True)
    ds = ds.batch(p.batch_size, drop_remainder=len(train) > p.batch_size)
    ds = ds.map(gather, num_parallel_calls=1, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    ds = ds.prefetch(PREFETCH_BATCHES).with_options(options)
    return lambda epoch: ds  # each iteration is a new, reshuffled pass
