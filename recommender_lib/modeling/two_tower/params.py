"""Hyper-parameters of the two-tower model's features, networks and training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass
class TwoTowerParams:
    """Hyper-parameters of features + model + training (a Dagster Config wraps these)."""

    embedding_dim: int = 48
    tower_units: tuple[int, ...] = (256, 128)
    head_units: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    activation: str = "gelu"
    user_noise: float = 0.1  # std of Gaussian noise on user features while training
    item_id_dim: int = 0  # 0 disables the item-id embedding
    item_id_dropout: float = 0.3  # share of training rows whose item id is replaced by OOV
    id_min_count: int = 1  # titles with fewer train ratings always use the OOV id
    retrieval_weight: float = 0.5
    temperature: float = 0.1
    softmax_group: int = 512  # rows per in-batch softmax: each row's negatives are its group's
    retrieval_min_rating: float = 0.0  # retrieval positives: train pairs rated >= this
    logq_correction: bool = True
    learning_rate: float = 4e-3
    lr_decay: bool = True  # cosine decay over `epochs`
    weight_decay: float = 1e-4
    batch_size: int = 2048
    epochs: int = 20
    patience: int = 3
    user_scheme: str = "prefix"  # training user features: "full" | "prefix" (see features.py)
    item_loo: bool = True  # leave the target out of its title's statistics in training
    cold_share: float = 0.3  # share of training rows given a short-history (cold-start) user
    cold_max: int = 10  # longest revealed history of those rows
    seed: int = 42
    jit_compile: bool = False  # XLA for the training step (slower on small CPU runs)
    op_threads: int = 1  # CPU threads per TensorFlow op while training (0: one per core)
    in_memory_rows: int = 4_000_000  # larger train sets stream their examples in chunks
    chunk_rows: int = 1_000_000  # ratings (whole users) per streamed chunk
    shard_dir: str = ""  # where streamed chunks are saved for later epochs ("": system temp)
    # feature transform
    item_lambda: float = 25.0
    user_lambda: float = 10.0
    mean_lambda: float = 5.0
    genre_lambda: float = 5.0
    share_alpha: float = 10.0
    recent_window: int = 20
    latent_dim: int = 32
    latent_shrink: float = 5.0

    def feature_params(self) -> dict[str, Any]:
        names = ("item_lambda", "user_lambda", "mean_lambda", "genre_lambda", "share_alpha",
                 "recent_window", "latent_dim", "latent_shrink", "seed")  # fmt: skip
        return {n: getattr(self, n) for n in names}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tower_units"] = list(self.tower_units)
        d["head_units"] = list(self.head_units)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwoTowerParams:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        for k in ("tower_units", "head_units"):
            if k in d:
                d[k] = tuple(int(x) for x in d[k])
        return cls(**d)
