"""Content vectors of the catalogue (docs/architecture.md §3 `content_features`) for the cosine
index.

A title's vector is its genre multi-hot scaled to unit length (so a title with six genres does
not outweigh one with two), followed by four standardised numerics — year, log runtime, IMDb
rating, log IMDb votes — clipped to ±3 and weighted by `numeric_weight` (missing -> 0, the
mean). Genres dominate the cosine; the numerics separate titles of the same genres by era and
standing. Content uses no ratings, so it is not split-dependent and covers every title.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recommender_lib.atomic import atomic_path, write_text_atomic
from recommender_lib.index.content_index import METADATA_COLUMNS, ContentIndex

CONTENT_VERSION = 1
NUMERICS = ("year", "log_runtime", "imdb_rating", "imdb_log_votes")
TRANSFORM_FILE = "content_transform.json"
VECTORS_FILE = "content_vectors.npy"
ITEM_IDS_FILE = "item_ids.npy"


@dataclass
class ContentTransform:
    """The fitted content transform (plain JSON): genre vocabulary, scalers, weights."""

    genres: list[str]
    scalers: dict[str, list[float]] = field(default_factory=dict)  # name -> [center, scale]
    numeric_weight: float = 0.35
    clip: float = 3.0
    version: int = CONTENT_VERSION

    @property
    def columns(self) -> list[str]:
        return [f"genre:{g}" for g in self.genres] + list(NUMERICS)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ContentTransform:
        data = json.loads(text)
        if data.get("version") != CONTENT_VERSION:
            raise ValueError(f"content transform version {data.get('version')} unsupported")
        return cls(**data)


def _genre_lists(catalog: pd.DataFrame) -> list[list[str]]:
    return [
        [str(g) for g in v] if isinstance(v, list | tuple | np.ndarray) else []
        for v in catalog["genres"].tolist()
    ]


def _numerics(catalog: pd.DataFrame) -> dict[str, np.ndarray]:
    def col(name: str) -> np.ndarray:
        return catalog[name].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)

    runtime = col("runtime")
    votes = col("imdb_votes")
    return {
        "year": col("year"),
        "log_runtime": np.log(np.where(runtime > 0, runtime, np.nan)),
        "imdb_rating": col("imdb_rating"),
        "imdb_log_votes": np.log1p(np.where(votes >= 0, votes, np.nan)),
    }


def fit_content_transform(catalog: pd.DataFrame, numeric_weight: float = 0.35) -> ContentTransform:
    """Fit the genre vocabulary and the numeric scalers on the catalogue table."""
    if catalog.empty:
        raise ValueError("cannot fit content features on an empty catalogue")
    genres = sorted({g for names in _genre_lists(catalog) for g in names})
    scalers = {}
    for name, values in _numerics(catalog).items():
        finite = values[np.isfinite(values)]
        center = float(finite.mean()) if len(finite) else 0.0
        scale = float(finite.std()) if len(finite) > 1 else 0.0
        scalers[name] = [center, scale if scale > 1e-9 else 1.0]
    return ContentTransform(genres=genres, scalers=scalers, numeric_weight=numeric_weight)


def content_vectors(catalog: pd.DataFrame, transform: ContentTransform) -> np.ndarray:
    """(n_titles, len(transform.columns)) float32 content vectors in catalogue row order.

    Genres outside the fitted vocabulary are ignored (a new genre needs a refit).
    """
    vocab = {g: j for j, g in enumerate(transform.genres)}
    out = np.zeros((len(catalog), len(transform.columns)), dtype=np.float32)
    for row, names in enumerate(_genre_lists(catalog)):
        cols = sorted({vocab[g] for g in names if g in vocab})
        if cols:
            out[row, cols] = 1.0 / np.sqrt(len(cols))
    offset = len(transform.genres)
    for j, (name, values) in enumerate(_numerics(catalog).items()):
        center, scale = transform.scalers[name]
        z = np.clip((values - center) / scale, -transform.clip, transform.clip)
        out[:, offset + j] = np.nan_to_num(z, nan=0.0) * transform.numeric_weight
    return out


@dataclass
class ContentFeatures:
    """Content vectors with their item ids and the transform that produced them."""

    item_ids: np.ndarray  # int64, catalogue order
    vectors: np.ndarray  # float32
    transform: ContentTransform

    @classmethod
    def build(cls, catalog: pd.DataFrame, numeric_weight: float = 0.35) -> ContentFeatures:
        if catalog["item_id"].duplicated().any():
            raise ValueError("catalogue item ids are not unique")
        transform = fit_content_transform(catalog, numeric_weight)
        return cls(
            item_ids=catalog["item_id"].to_numpy(np.int64),
            vectors=content_vectors(catalog, transform),
            transform=transform,
        )

    def save(self, directory: str | Path) -> Path:
        """Write the vectors, ids (`.npy`, no pickle) and the transform (JSON) atomically."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name, array in ((VECTORS_FILE, self.vectors), (ITEM_IDS_FILE, self.item_ids)):
            with atomic_path(out / name) as tmp, tmp.open("wb") as fh:
                np.save(fh, array, allow_pickle=False)
        write_text_atomic(out / TRANSFORM_FILE, self.transform.to_json())
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ContentFeatures:
        d = Path(directory)
        return cls(
            item_ids=np.load(d / ITEM_IDS_FILE, allow_pickle=False),
            vectors=np.load(d / VECTORS_FILE, allow_pickle=False),
            transform=ContentTransform.from_json((d / TRANSFORM_FILE).read_text()),
        )


def build_content_index(catalog: pd.DataFrame, features: ContentFeatures) -> ContentIndex:
    """The cosine index over the content vectors, with the catalogue's filter metadata."""
    meta = catalog.rename(columns={"imdb_votes": "num_votes"})[list(METADATA_COLUMNS)]
    return ContentIndex.build(
        features.item_ids, features.vectors, meta, genre_vocab=features.transform.genres
    )


def save_content_index(index: ContentIndex, transform: ContentTransform, directory: Path) -> Path:
    """Write the index and, beside it, the content transform that produced its vectors."""
    index.save(directory)
    write_text_atomic(Path(directory) / TRANSFORM_FILE, transform.to_json())
    return Path(directory)
