"""Top-k selection over score matrices: the one rule for order, ties, exclusions and padding.

Every ranked list of the platform (the serving engine, the evaluation, the baselines) is cut with
`top_k_indices`: best first, ties to the lower column, excluded columns never, `PAD` where a row
has fewer than k candidates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PAD = -1  # top_k_indices pads rows that have fewer than k candidate items with this index


def _exclusion_mask(exclude: Any, shape: tuple[int, int]) -> np.ndarray | None:
    if exclude is None:
        return None
    if hasattr(exclude, "tocsr"):  # scipy.sparse matrix/array: stored non-zeros are excluded
        mask = np.asarray(exclude.toarray(), dtype=bool)
    elif isinstance(exclude, np.ndarray) and exclude.ndim == 2:
        mask = exclude.astype(bool, copy=False)
    else:
        rows = list(exclude)
        if len(rows) != shape[0]:
            raise ValueError(f"exclude has {len(rows)} rows, scores {shape[0]}")
        mask = np.zeros(shape, dtype=bool)
        for r, cols in enumerate(rows):
            cols = np.asarray(cols, dtype=np.int64)
            if cols.size:
                mask[r, cols] = True
        return mask
    if mask.shape != shape:
        raise ValueError(f"exclude mask has shape {mask.shape}, scores {shape}")
    return mask


def top_k_indices(scores: np.ndarray, k: int, exclude: Any = None) -> np.ndarray:
    """Column indices of each row's k highest scores, best first.

    `exclude`: None, a list with one array of column indices per row, or a boolean / sparse
    mask of `scores`' shape (True / non-zero = never recommend). Ties go to the lower index.
    NaN and -inf scores rank below every finite score (tied among themselves) but, unlike
    excluded items, are still returned. Rows with fewer than k candidates are padded with `PAD`
    (-1). Uses argpartition, then sorts only the k selected columns (plus boundary ties).
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D (users, items), got shape {scores.shape}")
    n_rows, n_cols = scores.shape
    kk = min(int(k), n_cols)
    if kk <= 0 or n_rows == 0:
        return np.full((n_rows, max(kk, 0)), PAD, dtype=np.int64)
    big = np.finfo(np.float64).max
    # Lower = better; every candidate is finite, excluded columns are +inf.
    neg = np.nan_to_num(-scores.astype(np.float64), nan=big, posinf=big, neginf=-big)
    mask = _exclusion_mask(exclude, scores.shape)
    if mask is not None:
        neg[mask] = np.inf
    idx = np.argpartition(neg, kk - 1, axis=1)[:, :kk]
    vals = np.take_along_axis(neg, idx, axis=1)
    # argpartition picks arbitrarily among values tied with the k-th: redo those rows so the
    # lower indices win.
    kth = vals.max(axis=1)
    better = (neg < kth[:, None]).sum(axis=1)
    tied = (neg == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(better + tied > kk):
        keep = np.flatnonzero(neg[r] < kth[r])
        ties = np.flatnonzero(neg[r] == kth[r])[: kk - keep.size]
        idx[r] = np.concatenate([keep, ties])
        vals[r] = neg[r, idx[r]]
    order = np.lexsort((idx, vals), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    idx[np.isinf(np.take_along_axis(vals, order, axis=1))] = PAD
    return idx
