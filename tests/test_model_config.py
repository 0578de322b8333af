"""The `two_tower_model` asset's run config reaches the library's hyper-parameters unchanged."""

from orchestration.config import TwoTowerConfig
from recommender_lib.modeling.two_tower.params import TwoTowerParams


def test_the_default_config_is_the_library_defaults() -> None:
    assert TwoTowerConfig().to_lib() == TwoTowerParams()


def test_the_large_data_settings_are_asset_config() -> None:
    config = TwoTowerConfig(
        tower_units=[128], head_units=[64], batch_size=2048, softmax_group=256,
        dropout=0.0, user_noise=0.0, weight_decay=1e-3,
    )  # fmt: skip
    p = config.to_lib()
    assert (p.tower_units, p.head_units) == ((128,), (64,))
    assert (p.batch_size, p.softmax_group) == (2048, 256)
    assert (p.dropout, p.user_noise, p.weight_decay) == (0.0, 0.0, 1e-3)
