"""Jobs: named selections of assets that people and sensors launch."""

from __future__ import annotations

import dagster as dg

from orchestration.assets.model import TRAINING_POOL
from orchestration.resources import REBUILD_WAREHOUSE_TAG
from recommender_lib.warehouse.app_feedback import APP_FEEDBACK

# The application's feedback is copied by the runs that train on it, not by dump ingestion.
_APP_FEEDBACK = dg.AssetSelection.assets(APP_FEEDBACK)

POOL_TAG = "cine/pool"
# Tags of the runs that train. On Kubernetes (deploy/k8s) the run queue admits one `cine/pool`
# training run at a time, so no second run holds a GPU node while it waits for the pool, and
# `dagster-k8s/config` puts the run's pod on a GPU node with one GPU (deep-merged over the run
# launcher's `runK8sConfig`). Only dagster-k8s's launchers read that tag: `dagster dev` and
# docker-compose (the default run launcher) ignore it.
TRAINING_RUN_TAGS = {
    POOL_TAG: TRAINING_POOL,
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}},
        "pod_spec_config": {
            "node_selector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
        },
    },
}

ingest_job = dg.define_asset_job(
    "ingest",
    selection=dg.AssetSelection.groups("raw", "warehouse") - _APP_FEEDBACK,
    description="Fetch the raw IMDb and MovieLens files and load the checked warehouse tables.",
)

retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.groups("features", "model", "registry") | _APP_FEEDBACK,
    tags=TRAINING_RUN_TAGS,
    description="Copy the new application feedback, then features from the warehouse, train and "
    "evaluate the model, build the serving bundle, register it and promote it when its checks "
    "pass.",
)

full_refresh_job = dg.define_asset_job(
    "full_refresh",
    selection=dg.AssetSelection.all(),
    tags=TRAINING_RUN_TAGS,
    description="Ingest, then retrain: every asset and check, in dependency order.",
)

rebuild_warehouse_job = dg.define_asset_job(
    "rebuild_warehouse",
    selection=dg.AssetSelection.groups("warehouse", "features"),
    tags={REBUILD_WAREHOUSE_TAG: "true"},
    description="Rebuild the warehouse tables and features from the current raw versions (no "
    "download). A corrupt or truncated warehouse file is first moved aside as "
    "`<file>.broken-<UTC time>`, never deleted. `make rebuild-warehouse` runs it.",
)

jobs = [ingest_job, retrain_job, full_refresh_job, rebuild_warehouse_job]
