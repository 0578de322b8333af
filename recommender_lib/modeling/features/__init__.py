"""Model features computed from the TRAIN split only (docs/architecture.md §3
`user_/item_features`).

Two kinds of vectors feed the two-tower model:

* **item features** — one row for EVERY catalogue title, rated or not: genre multi-hot (MovieLens
  genres; IMDb genres mapped onto them for titles without MovieLens genres), IMDb average rating,
  log votes, year and runtime (scaled; missing -> 0 plus a missing indicator), MovieLens train
  statistics (log count, mean shrunk toward the global mean, damped item bias, rating era) and
  implicit co-rating factors (truncated SVD of the train user x title matrix; 0 for unrated
  titles). Aggregations run in DuckDB over the train split registered as a view.
* **user features** — built from a list of ratings by ONE code path
  (`user_features_from_ratings` / `user_feature_matrix`), used for training users and at serving
  time alike (cold start from one rating up, even zero): log count, shrunk mean, spread, damped
  user bias, bias over the most recent ratings, per-genre preference shrunk toward the user's own
  mean (never raw per-genre means), per-genre share of the user's ratings (all / recent) shrunk
  toward the catalogue-wide share, recency (time of the last rating, span of activity), and the
  history's mean co-rating factors (all / recent) and taste direction (factors weighted by the
  rating's residual).

Every fitted quantity (global mean, lambdas, genre vocabulary and priors, scalers, column order)
lives in a `FeatureTransform` dataclass that round-trips through plain JSON; the per-title arrays
live in `ItemFeatures` (saved as `.npz`, no pickle).

Modules: `transform` (the fitted `FeatureTransform`, rating frames), `items` (item features and
their folder), `users` (user features and the known users' npz), `fit` (fitting on a split).

Training examples and leakage (chosen on validation RMSE, see `training_user_features`):
`prefix` (default) computes a training rating's user features from the user's ratings strictly
before it — what is known at test time, never the target; `full` includes the target;
`loo` (all other ratings) leaks the target through the shift of the user's statistics and is
kept only for comparison. Item statistics of a training row leave the target rating out
(`training_item_rows`), otherwise a title with few ratings "knows" its own target.
"""
