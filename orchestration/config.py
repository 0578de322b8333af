"""Run-configurable parameters of the feature and model assets (editable in the launchpad)."""

import dagster as dg

from recommender_lib.modeling.splits import SplitConfig
from recommender_lib.modeling.two_tower.params import TwoTowerParams
from recommender_lib.warehouse.catalog import DEFAULT_SCOPE, CatalogFilters


class CatalogConfig(dg.Config):
    """Which IMDb titles without a MovieLens movie are recommendable (MovieLens ones always are).

    `scope` names a preset (`default`: popular titles; `whole_imdb`: every rated IMDb title,
    `CatalogFilters.whole_imdb`); `title_types` / `min_votes` left unset take the preset's.
    """

    scope: str = DEFAULT_SCOPE
    title_types: list[str] | None = None
    min_votes: int | None = None
    include_adult: bool = False

    def to_lib(self) -> CatalogFilters:
        preset = CatalogFilters.named(self.scope)
        return CatalogFilters(
            title_types=preset.title_types if self.title_types is None else tuple(self.title_types),
            min_votes=preset.min_votes if self.min_votes is None else self.min_votes,
            include_adult=self.include_adult,
        )


class SplitsConfig(dg.Config):
    """Evaluation protocols P1 (temporal holdout) and P2 (cold start), docs/architecture.md §6."""

    test_fraction: float = 0.2
    validation_fraction: float = 0.1
    cold_user_fraction: float = 0.2
    reveal_k: list[int] = [3, 5, 10]
    seed: int = 0

    def to_lib(self) -> SplitConfig:
        return SplitConfig(
            test_fraction=self.test_fraction,
            validation_fraction=self.validation_fraction,
            cold_user_fraction=self.cold_user_fraction,
            reveal_k=tuple(self.reveal_k),
            seed=self.seed,
        )


_DEFAULTS = TwoTowerParams()


class FeaturesConfig(dg.Config):
    """Settings of the feature transform fitted by `item_features`, recorded in the transform:
    the P2 model and the production refit fit their features with the same settings."""

    item_lambda: float = _DEFAULTS.item_lambda
    user_lambda: float = _DEFAULTS.user_lambda
    mean_lambda: float = _DEFAULTS.mean_lambda
    genre_lambda: float = _DEFAULTS.genre_lambda
    share_alpha: float = _DEFAULTS.share_alpha
    recent_window: int = _DEFAULTS.recent_window
    latent_dim: int = _DEFAULTS.latent_dim
    latent_shrink: float = _DEFAULTS.latent_shrink
    seed: int = _DEFAULTS.seed  # the seed of the co-rating factors (truncated SVD)

    def to_lib(self) -> dict[str, float | int]:
        return self.model_dump()


class TwoTowerConfig(dg.Config):
    """Hyper-parameters of the two-tower model and its training (see `TwoTowerParams`); the
    feature settings come from `item_features` (`FeaturesConfig`)."""

    embedding_dim: int = _DEFAULTS.embedding_dim
    tower_units: list[int] = list(_DEFAULTS.tower_units)
    head_units: list[int] = list(_DEFAULTS.head_units)
    dropout: float = _DEFAULTS.dropout
    user_noise: float = _DEFAULTS.user_noise  # std of the training-time noise on user features
    activation: str = _DEFAULTS.activation
    retrieval_weight: float = _DEFAULTS.retrieval_weight
    temperature: float = _DEFAULTS.temperature
    softmax_group: int = _DEFAULTS.softmax_group  # rows per in-batch softmax (its negatives)
    learning_rate: float = _DEFAULTS.learning_rate
    weight_decay: float = _DEFAULTS.weight_decay
    batch_size: int = _DEFAULTS.batch_size
    epochs: int = _DEFAULTS.epochs
    patience: int = _DEFAULTS.patience
    seed: int = _DEFAULTS.seed
    in_memory_rows: int = _DEFAULTS.in_memory_rows  # above: examples streamed in user chunks
    chunk_rows: int = _DEFAULTS.chunk_rows
    shard_dir: str = _DEFAULTS.shard_dir  # streamed chunks' scratch folder ("": system temp)
    op_threads: int = _DEFAULTS.op_threads  # CPU threads per TensorFlow op (0: one per core)

    def to_lib(self) -> TwoTowerParams:
        return TwoTowerParams.from_dict(self.model_dump())


class PromotionGateConfig(dg.Config):
    """How much better than the baselines the served ranking must be to pass the quality gate:
    P1 RMSE below damped bias by `rmse_margin`, P1 NDCG@10 >= `ndcg_ratio` x most popular,
    cold-start (k = 3) NDCG@10 >= `cold_ndcg_ratio` x most popular."""

    rmse_margin: float = 0.0
    ndcg_ratio: float = 1.3
    cold_ndcg_ratio: float = 1.0


class PromotionConfig(dg.Config):
    """How much worse than the current champion (relative) a new version may be on the gated
    held-out metrics (P1 RMSE and NDCG@10, P2 k=3 RMSE and NDCG@10) and still be promoted."""

    tolerance: float = 0.02
