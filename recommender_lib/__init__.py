"""Ciné-Reco library: ingestion, warehouse SQL, quality rules, features and models.

Pure Python: nothing in this package imports dagster, so every piece can be unit-tested and
reused by the serving layer.
"""

__version__ = "0.1.0"
