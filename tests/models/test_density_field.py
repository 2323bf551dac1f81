"""DensityField: ImplicitVolume and VolumeGrid share one config base and one class, and keep their defaults."""
from __future__ import annotations

from dataclasses import fields

import pytest

from models.geometry.density_field import DensityField, DensityFieldConfig
from models.geometry.implicit_volume import ImplicitVolume, ImplicitVolumeConfig
from models.geometry.volume_grid import VolumeGrid, VolumeGridConfig


def defaults(cfg_cls) -> dict:
    return {f.name: getattr(cfg_cls(), f.name) for f in fields(DensityFieldConfig) if f.name != "_target_"}


def test_both_extend_the_base_and_keep_their_defaults():
    assert issubclass(ImplicitVolumeConfig, DensityFieldConfig) and issubclass(VolumeGridConfig, DensityFieldConfig)
    assert issubclass(ImplicitVolume, DensityField) and issubclass(VolumeGrid, DensityField)
    shared = dict(
        radius=1.0, n_feature_dims=3, density_activation="softplus", density_bias="blob_magic3d", density_blob_scale=10.0,
        density_blob_std=0.5, finite_difference_eps=0.01, isosurface_resolution=128, isosurface_threshold=25.0,
        isosurface_chunk=2**18, isosurface_fill_cavities=True, isosurface_cavity_max_opening=0.0, isosurface_fill_unseen=None,
    )
    assert defaults(ImplicitVolumeConfig) == {**shared, "normal_type": "analytic"}
    assert defaults(VolumeGridConfig) == {**shared, "normal_type": "finite_difference"}
    assert ImplicitVolumeConfig()._target_ == "models.geometry.implicit_volume.ImplicitVolume"
    assert VolumeGridConfig()._target_ == "models.geometry.volume_grid.VolumeGrid"


def test_normal_type_error_names_each_fields_choices():
    with pytest.raises(ValueError, match=r"normal_type=None is not allowed: must be one of 'analytic', 'finite_difference'\."):
        ImplicitVolume(ImplicitVolumeConfig(normal_type=None))
    with pytest.raises(ValueError, match=r"normal_type='analytic' is not allowed: must be one of 'finite_difference', None\."):
        VolumeGrid(VolumeGridConfig(grid_size=[2, 2, 2], normal_type="analytic"))
