"""Jobs: named selections of assets that people and sensors launch."""

from __future__ import annotations

import dagster as dg

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("raw", "warehouse"),
    description="Fetch the raw IMDb and MovieLens files and load the checked warehouse tables.",
)
