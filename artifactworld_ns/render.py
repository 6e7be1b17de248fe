"""``aw-render``: nerfstudio's ``ns-render`` plus the ArtifactWorld restorer as a post-pass.

The subcommands and their options are nerfstudio's own (``camera-path``, ``interpolate``, ``spiral``,
``dataset``): the classes below subclass ``nerfstudio.scripts.render``'s public commands. With
``--no-restore`` each runs nerfstudio's ``main`` unchanged, so the output is ns-render's. With
``--restore`` each builds its camera path from nerfstudio's public pieces (``eval_setup``,
``get_path_from_json`` / ``get_interpolated_camera_path`` / ``get_spiral_path``) and hands it to
:func:`artifactworld_ns.window_restore.restore_path`, which renders it through
``pipeline.model.get_outputs_for_camera`` and restores it in overlapping ``8n + 1`` windows with DBA
anchors from the nearest training views; the result is written at the render's frame count and resolution.

``spiral`` works on splatfacto-based models here (nerfstudio 1.1.5's asserts a ray-based datamanager):
its start camera is the eval dataset's first camera (the train dataset's when there are no eval views).
``dataset`` renders dataset views one by one, which is not a trajectory: it is ns-render's, unrestored.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, List, Literal, Optional, Sequence, Union

import torch
import tyro

import artifactworld_ns  # noqa: F401  (allows numpy scalars in torch.load of nerfstudio checkpoints)
from artifactworld_ns.render_io import comparison_path, write_output
from artifactworld_ns.restorer import (
    UNTRAINED_LABEL,
    ArtifactWorldError,
    StepProgress,
    check_at_least,
    check_device,
    check_output_file,
    check_output_folder,
    check_processing_max_side,
    print_error,
    put_ffmpeg_on_path,
)
from artifactworld_ns.window_restore import WindowSettings, restore_path
from artifactworld_ns.windows import MIN_BRIDGE_FRAMES, check_window_options


class RenderInputError(ArtifactWorldError, ValueError):
    """Bad user input for aw-render; the message is one sentence."""


def _ns_render():
    import nerfstudio.scripts.render as ns_render

    return ns_render


ns = _ns_render()


@dataclass
class RestoreOptions:
    """The restorer post-pass options added to every trajectory subcommand (options only)."""

    restore: bool = True
    """Restore the render with the ArtifactWorld restorer (--restore / --no-restore, or --restore True|False)."""
    preset: Literal["full", "tiny"] = "full"
    """Restorer preset: 'full' (LTX-Video 13B + released LoRAs) or 'tiny' (random weights, UNTRAINED)."""
    window_frames: int = 33
    """Frames per restored window; must be 8n + 1 (9, 17, 25, 33, ...)."""
    overlap: int = 8
    """Minimum frames shared by consecutive windows, blended linearly (at most (window_frames - 1) / 2)."""
    bridge_frames: int = MIN_BRIDGE_FRAMES
    """Frames of each bridge path between a window and its nearest training view (>= 8; dropped from the output)."""
    use_opacity: bool = True
    """Raise the heatmap where the render's accumulation is low (max(h, 1 - alpha))."""
    save_comparison: bool = False
    """Also write the raw render and the restored video side by side (OUTPUT_comparison.mp4)."""
    restorer_steps: Optional[int] = None
    """Euler steps of stage 2 (default: the preset's 8); the official heatmap blend table is scaled to N steps."""
    heatmap_steps: Optional[int] = None
    """Euler steps of stage 1 (default: the preset's)."""
    processing_max_side: Optional[int] = None
    """Process at the native size capped to this long side instead of the preset's (full: the official 960x544)."""
    restorer_device: Optional[str] = None
    """Torch device of the restorer (default: the preset's)."""
    profile: Optional[Literal["80gb", "40gb", "24gb"]] = None
    """GPU memory profile: 80gb, 40gb or 24gb chooses transformer offload and VAE tiling (bf16 weights in all three) for a GPU of that size (see docs/restorer.md, "Which GPU do I need"); prints the predicted peak and refuses a smaller GPU (default: everything resident, as 80gb)."""
    force: bool = False
    """Run --profile even when the detected GPU is smaller than its predicted peak."""

    def window_settings(self) -> WindowSettings:
        return WindowSettings(self.window_frames, self.overlap, self.bridge_frames, self.use_opacity)

    def restorer_overrides(self) -> dict:
        overrides = {
            "num_inference_steps": self.restorer_steps,
            "heatmap_steps": self.heatmap_steps,
            "processing_max_side": self.processing_max_side,
            "device": self.restorer_device,
            "memory_profile": self.profile,
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "processing_max_side" in overrides:
            overrides["processing_size"] = None  # native size capped, instead of the official 960x544
        if self.force:
            overrides["force_memory_profile"] = True
        return overrides


@dataclass
class RestoringRender(RestoreOptions, ns.BaseRender):
    """A nerfstudio render command with the restorer options: the checks before loading and the restored render."""

    output_format: Literal["images", "video"] = "video"
    """How to save output data."""

    def check_restore_options(self) -> None:
        """The config, the output path and every restorer option, before nerfstudio loads the run."""

        if not Path(self.load_config).is_file():
            raise RenderInputError(f"The config file {self.load_config} does not exist.")
        check_render_output(self.output_path, self.output_format)
        if not self.restore:
            return
        check_window_options(self.window_frames, self.overlap, self.bridge_frames)
        check_at_least("--restorer-steps", self.restorer_steps, 1)
        check_at_least("--heatmap-steps", self.heatmap_steps, 1)
        check_processing_max_side(self.processing_max_side)
        check_device(self.restorer_device, "--restorer-device")
        if list(self.rendered_output_names) != ["rgb"]:
            raise RenderInputError("--restore restores RGB only; pass --rendered-output-names rgb or use --no-restore.")
        if self.render_nearest_camera:
            raise RenderInputError("--render-nearest-camera cannot be combined with --restore; use --no-restore.")

    def load_pipeline(self, test_mode: Literal["test", "inference"]):
        """The run's pipeline, as nerfstudio's render commands load it."""
        from nerfstudio.utils import install_checks
        from nerfstudio.utils.eval_utils import eval_setup

        _, pipeline, _, _ = eval_setup(
            self.load_config, eval_num_rays_per_chunk=self.eval_num_rays_per_chunk, test_mode=test_mode
        )
        install_checks.check_ffmpeg_installed()
        return pipeline

    def render_and_restore(self, pipeline, cameras, seconds: float, crop_data=None) -> None:
        """Render ``cameras`` (a nerfstudio camera path), restore them in windows and write the output."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from artifactworld_ns.restorer.pipeline import ArtifactRestorer

        if self.camera_idx is not None:
            cameras.metadata = {"cam_idx": self.camera_idx}
        cameras.rescale_output_resolution(1.0 / self.downscale_factor)
        cameras = cameras.to(pipeline.device)
        num_frames = cameras.size
        fps = num_frames / seconds
        train_dataset = restorable_path_dataset(pipeline, cameras)
        obb_box = crop_data.obb if crop_data is not None else None
        background = crop_data.background_color if crop_data is not None else None

        restorer = ArtifactRestorer.from_preset(self.preset, **self.restorer_overrides())
        steps = StepProgress()
        restorer.progress = steps
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=ns.CONSOLE) as progress:
            steps.attach(progress)
            result = restore_path(
                pipeline, cameras, train_dataset, restorer, self.window_settings(), obb_box, background, progress
            )
        frames = result.frames
        output = self.output_path
        write_output(frames, output, fps, self.output_format, self.image_format, self.jpeg_quality)
        written = [str(output if self.output_format == "video" else output.parent / output.stem)]
        if self.save_comparison:
            comparison = comparison_path(output)
            write_output(
                torch.cat([result.raw, frames], dim=2), comparison, fps, "video", self.image_format, self.jpeg_quality
            )
            written.append(str(comparison))
        label = f" {UNTRAINED_LABEL}" if self.preset == "tiny" else ""
        ns.CONSOLE.print(
            f"Restored {num_frames} frames ({frames.shape[2]}x{frames.shape[1]}) in {len(result.windows)} windows{label}: "
            + ", ".join(written),
            markup=False,
            soft_wrap=True,
        )


# ---------------------------------------------------------------------- helpers


def check_render_output(output_path: Path, output_format: str = "video") -> None:
    """``--output-path``: a video file name (not a folder) in a writable folder with free disk space; with
    ``--output-format images`` nerfstudio writes into ``OUTPUT_PARENT/OUTPUT_STEM/``, whose parent is checked."""

    output_path = Path(output_path)
    if output_format == "video":
        check_output_file(output_path, "--output-path", example="render.mp4")
    else:
        check_output_folder(output_path.parent / output_path.stem, "--output-path")


def restorable_path_dataset(pipeline, cameras):
    """The training views a restored path takes its anchors from; one sentence when the path cannot be restored."""
    heights, widths = cameras.image_height.view(-1), cameras.image_width.view(-1)
    if bool((heights != heights[0]).any()) or bool((widths != widths[0]).any()):
        raise RenderInputError("--restore needs one resolution along the whole camera path.")
    train_dataset = pipeline.datamanager.train_dataset
    if train_dataset is None or len(train_dataset) == 0:
        raise RenderInputError("--restore needs the training views for its anchors, but the loaded pipeline has none.")
    return train_dataset


def check_camera_path_file(path: Path) -> None:
    """One sentence for a camera path file that is missing, not JSON, or has no keyframes."""
    if not Path(path).is_file():
        raise RenderInputError(f"The camera path file {path} does not exist.")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RenderInputError(f"The camera path file {path} is not valid JSON ({err}).") from None
    if not isinstance(data, dict) or not data.get("camera_path") or not data.get("keyframes", [None]):
        raise RenderInputError(f"The camera path file {path} has no keyframes, so there is nothing to render.")
    if "seconds" not in data:
        raise RenderInputError(f"The camera path file {path} has no 'seconds' entry.")


def first_camera(pipeline):
    """The spiral's start camera: the eval dataset's first camera, else the train dataset's."""
    datamanager = pipeline.datamanager
    for dataset in (getattr(datamanager, "eval_dataset", None), getattr(datamanager, "train_dataset", None)):
        if dataset is not None and len(dataset) > 0:
            return dataset.cameras[0:1].to(pipeline.device)
    raise RenderInputError("The loaded pipeline has no cameras to start a spiral from.")


# ---------------------------------------------------------------------- subcommands

_STEREO_CAMERA_TYPES = ("OMNIDIRECTIONALSTEREO_L", "VR180_L")


@dataclass
class AwRenderCameraPath(RestoringRender, ns.RenderCameraPath):
    """Render a camera path generated by the viewer or blender add-on, then restore it."""

    def main(self) -> None:
        self.check_restore_options()
        check_camera_path_file(self.camera_path_filename)
        if not self.restore:
            ns.RenderCameraPath.main(self)
            return
        from nerfstudio.cameras.camera_paths import get_path_from_json
        from nerfstudio.cameras.cameras import CameraType

        data = json.loads(Path(self.camera_path_filename).read_text(encoding="utf-8"))
        cameras = get_path_from_json(data)
        if int(cameras.camera_type[0]) in {CameraType[name].value for name in _STEREO_CAMERA_TYPES}:
            raise RenderInputError(
                "--restore restores perspective camera paths only, not omnidirectional-stereo or VR180 ones; use --no-restore."
            )
        crop_data = ns.get_crop_from_json(data)
        pipeline = self.load_pipeline("inference")
        if self.output_format == "video" and self.output_path.suffix == "":
            self.output_path = self.output_path.with_suffix(".mp4")
        self.render_and_restore(pipeline, cameras, data["seconds"], crop_data)


@dataclass
class AwRenderInterpolated(RestoringRender, ns.RenderInterpolated):
    """Render a trajectory that interpolates between training or eval dataset images, then restore it."""

    def main(self) -> None:
        self.check_restore_options()
        if not self.restore:
            ns.RenderInterpolated.main(self)
            return
        from nerfstudio.cameras.camera_paths import get_interpolated_camera_path

        pipeline = self.load_pipeline("test")
        source = pipeline.datamanager.eval_dataset if self.pose_source == "eval" else pipeline.datamanager.train_dataset
        if source is None:
            raise RenderInputError(
                f"--pose-source {self.pose_source}: the loaded pipeline has no {self.pose_source} dataset."
            )
        cameras = source.cameras
        seconds = self.interpolation_steps * len(cameras) / self.frame_rate
        camera_path = get_interpolated_camera_path(
            cameras=cameras, steps=self.interpolation_steps, order_poses=self.order_poses
        )
        self.render_and_restore(pipeline, camera_path, seconds)


@dataclass
class AwSpiralRender(RestoringRender, ns.SpiralRender):
    """Render a spiral trajectory around the first eval camera, then restore it (works on splatfacto models)."""

    def main(self) -> None:
        from nerfstudio.cameras.camera_paths import get_spiral_path

        self.check_restore_options()
        steps = int(self.frame_rate * self.seconds)
        if steps < 1:
            raise RenderInputError(f"--seconds {self.seconds} at --frame-rate {self.frame_rate} gives no frames.")
        pipeline = self.load_pipeline("test")
        camera_path = get_spiral_path(first_camera(pipeline), steps=steps, radius=self.radius)
        if self.restore:
            self.render_and_restore(pipeline, camera_path, self.seconds)
            return
        if self.camera_idx is not None:
            camera_path.metadata = {"cam_idx": self.camera_idx}
        # nerfstudio's SpiralRender.main asserts a ray-based datamanager, so the unrestored spiral calls the
        # function that main calls, with main's arguments (nerfstudio 1.1.5, scripts/render.py).
        ns._render_trajectory_video(
            pipeline,
            camera_path,
            output_filename=self.output_path,
            rendered_output_names=self.rendered_output_names,
            rendered_resolution_scaling_factor=1.0 / self.downscale_factor,
            seconds=self.seconds,
            output_format=self.output_format,
            image_format=self.image_format,
            depth_near_plane=self.depth_near_plane,
            depth_far_plane=self.depth_far_plane,
            colormap_options=self.colormap_options,
            render_nearest_camera=self.render_nearest_camera,
            check_occlusions=self.check_occlusions,
        )


@dataclass
class AwDatasetRender(ns.DatasetRender):
    """Render all images of a dataset split (ns-render's, not restored: dataset views are not a trajectory)."""

    def main(self) -> None:

        if not Path(self.load_config).is_file():
            raise RenderInputError(f"The config file {self.load_config} does not exist.")
        check_output_folder(self.output_path, "--output-path")
        ns.DatasetRender.main(self)


Commands = tyro.conf.FlagConversionOff[
    Union[
        Annotated[AwRenderCameraPath, tyro.conf.subcommand(name="camera-path")],
        Annotated[AwRenderInterpolated, tyro.conf.subcommand(name="interpolate")],
        Annotated[AwSpiralRender, tyro.conf.subcommand(name="spiral")],
        Annotated[AwDatasetRender, tyro.conf.subcommand(name="dataset")],
    ]
]

_BOOL_FLAGS = ("restore", "save-comparison", "use-opacity")
_BOOL_WORDS = {"true", "false", "1", "0", "yes", "no"}


def normalize_flags(argv: Sequence[str]) -> List[str]:
    """``--restore`` -> ``--restore True``, ``--no-restore`` -> ``--restore False`` (same for the other flags).

    nerfstudio's render options take explicit values (``--render-nearest-camera True``); these keep
    that form and also accept the bare flags.
    """
    out: List[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        name = arg[2:].replace("_", "-") if arg.startswith("--") else ""
        following = args[i + 1].lower() if i + 1 < len(args) else ""
        if name in _BOOL_FLAGS and following not in _BOOL_WORDS:
            out += [arg, "True"]
        elif name.startswith("no-") and name[3:] in _BOOL_FLAGS:
            out += [f"--{name[3:]}", "False"]
        else:
            out.append(arg)
    return out


def cli(argv: Optional[Sequence[str]] = None):
    """Parse ``aw-render`` arguments into a subcommand object."""
    return tyro.cli(Commands, args=normalize_flags(sys.argv[1:] if argv is None else argv))


def run(command) -> int:
    """Run a parsed subcommand; bad input is one sentence on stderr and exit status 2."""
    from rich.console import Console

    try:
        command.main()
    except ArtifactWorldError as err:
        print_error(Console(stderr=True), str(err))
        return 2
    return 0


def entrypoint(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of ``aw-render``."""
    from artifactworld_ns.known_warnings import quiet_known_nerfstudio_warnings

    quiet_known_nerfstudio_warnings()  # e.g. torch.cross in nerfstudio's spiral path
    put_ffmpeg_on_path()  # nerfstudio's rendering calls `ffmpeg` by name
    tyro.extras.set_accent_color("bright_yellow")
    sys.exit(run(cli(argv)))


if __name__ == "__main__":
    entrypoint()
