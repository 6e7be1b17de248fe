"""aw-demo-scene writes a nerfstudio scene that nerfstudio's own parser reads, and refuses bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image


def test_scene_layout_and_nerfstudio_parser(small_demo_scene):
    transforms = json.loads((small_demo_scene / "transforms.json").read_text())
    assert transforms["w"] == 96 and transforms["h"] == 72 and transforms["camera_model"] == "OPENCV"
    assert len(transforms["frames"]) == 12
    for frame in transforms["frames"]:
        image = Image.open(small_demo_scene / frame["file_path"])
        assert image.size == (96, 72)
        pose = np.array(frame["transform_matrix"])
        rotation = pose[:3, :3]
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-5)
        # OpenGL convention: the camera looks along -z, towards the scene centre.
        forward = -rotation[:, 2]
        to_centre = np.array([0, 0, 0.2]) - pose[:3, 3]
        assert forward @ to_centre / np.linalg.norm(to_centre) > 0.99
    # Ground truth is a real picture: varied colours, no empty frame.
    pixels = np.asarray(Image.open(small_demo_scene / transforms["frames"][0]["file_path"])) / 255.0
    assert pixels.std() > 0.1

    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=small_demo_scene, load_3D_points=True).setup()
    outputs = parser.get_dataparser_outputs("train")
    assert len(outputs.image_filenames) + len(parser.get_dataparser_outputs("test").image_filenames) == 12
    assert outputs.metadata["points3D_xyz"].shape[0] > 500


def test_same_seed_same_scene(tmp_path):
    from artifactworld_ns.demo_scene import DemoSceneArgs, write_demo_scene

    a = write_demo_scene(DemoSceneArgs(tmp_path / "a", num_views=2, width=32, height=24, seed=3))
    b = write_demo_scene(DemoSceneArgs(tmp_path / "b", num_views=2, width=32, height=24, seed=3))
    c = write_demo_scene(DemoSceneArgs(tmp_path / "c", num_views=2, width=32, height=24, seed=4))
    image = "images/frame_00001.png"
    assert (a / image).read_bytes() == (b / image).read_bytes()
    assert (a / "sparse_pc.ply").read_text() == (b / "sparse_pc.ply").read_text()
    assert (a / "sparse_pc.ply").read_text() != (c / "sparse_pc.ply").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--width", "0"], "--width 0 is not a usable image side"),
        (["--height", "100000"], "--height 100000 is not a usable image side"),
        (["--num-views", "1"], "--num-views 1 is out of range"),
    ],
)
def test_impossible_sizes_are_one_sentence(tmp_path, run_cli, args, message):
    result = run_cli("aw-demo-scene", str(tmp_path / "scene"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "scene").exists()


def test_non_empty_directory_needs_overwrite(tmp_path, run_cli):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    result = run_cli("aw-demo-scene", str(out), "--num-views", "2", "--width", "32", "--height", "24")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {out} is not empty; pass --overwrite to replace it or choose another OUTPUT_DIR."
    ]
    assert (out / "keep.txt").read_text() == "user data" and not (out / "transforms.json").exists()

    result = run_cli("aw-demo-scene", str(out), "--num-views", "2", "--width", "32", "--height", "24", "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (out / "transforms.json").is_file() and not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scene"], "no staging folder is left behind"
