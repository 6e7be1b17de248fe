"""The sparse-view protocol with nerfstudio's standard dataparsers (nerfstudio-data, instant-ngp-data, blender)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.data.dataparsers.instant_ngp_dataparser import InstantNGPDataParserConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig


def as_blender(scene: Path, out: Path, train_frames: int) -> Path:
    """The same views in the Blender layout: transforms_{train,val,test}.json, paths without extension."""
    transforms = json.loads((scene / "transforms.json").read_text())
    shutil.copytree(scene / "images", out / "images")
    angle_x = 2 * math.atan(transforms["w"] / (2 * transforms["fl_x"]))
    frames = [
        {"file_path": f"./{Path(f['file_path']).with_suffix('')}", "transform_matrix": f["transform_matrix"]}
        for f in transforms["frames"]
    ]
    splits = {"train": frames[:train_frames], "val": frames[train_frames:], "test": frames[train_frames:]}
    for split, chosen in splits.items():
        (out / f"transforms_{split}.json").write_text(json.dumps({"camera_angle_x": angle_x, "frames": chosen}))
    return out


@pytest.mark.parametrize(
    "parser, expected",
    [
        ("nerfstudio-data", (6, 6)),  # all 12 views are candidates: 6 train, the other 6 eval
        ("instant-ngp-data", (6, 6)),
        ("blender", (4, 4)),  # fixed splits: 8 train-split views are candidates, the unselected 4 are eval
    ],
)
def test_sparse_protocol_splits_every_standard_parser(small_demo_scene, tmp_path, parser, expected):
    if parser == "nerfstudio-data":
        dataparser = NerfstudioDataParserConfig(data=small_demo_scene)
    elif parser == "instant-ngp-data":
        dataparser = InstantNGPDataParserConfig(data=small_demo_scene)
    else:
        dataparser = BlenderDataParserConfig(data=as_blender(small_demo_scene, tmp_path / "blender", train_frames=8))
    config = ArtifactWorldDataManagerConfig(dataparser=dataparser, train_view_ratio=0.5, cache_images="gpu")
    datamanager = config.setup(device="cpu", test_mode="val")
    train = {p.name for p in datamanager.train_dataset.image_filenames}
    evaluation = {p.name for p in datamanager.eval_dataset.image_filenames}
    assert (len(train), len(evaluation)) == expected
    assert not train & evaluation
    assert (
        len(datamanager.train_dataset.cameras) == expected[0] and len(datamanager.eval_dataset.cameras) == expected[1]
    )
