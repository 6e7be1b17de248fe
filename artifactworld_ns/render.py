"""``aw-render``: nerfstudio's ``ns-render`` plus the ArtifactWorld restorer as a post-pass.

The subcommands and their options are nerfstudio's own (``camera-path``, ``interpolate``, ``spiral``,
``dataset``): the classes below subclass ``nerfstudio.scripts.render``'s and only take over the last
step, ``_render_trajectory_video``. With ``--no-restore`` that step is nerfstudio's function itself, so
the output is ns-render's. With ``--restore`` the frames are rendered through
``pipeline.model.get_outputs_for_camera``, restored in overlapping ``8n + 1`` windows (see
:mod:`artifactworld_ns.windows`) with DBA anchors from the nearest training views, blended and written
at the render's frame count and resolution.

``spiral`` works on splatfacto-based models here (nerfstudio 1.1.5's asserts a ray-based datamanager):
its start camera is the eval dataset's first camera (the train dataset's when there are no eval views).
``dataset`` renders dataset views one by one, which is not a trajectory: it is ns-render's, unrestored.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, List, Literal, Optional, Sequence, Union

import torch
import tyro
from torch import Tensor

import artifactworld_ns  # noqa: F401  (allows numpy scalars in torch.load of nerfstudio checkpoints)
from artifactworld_ns.render_io import cameras_at, comparison_path, render_frames, training_image, write_output
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
from artifactworld_ns.windows import (
    MIN_BRIDGE_FRAMES,
    blend_windows,
    bridge_window,
    check_window_options,
    plan_windows,
)


class RenderInputError(ArtifactWorldError, ValueError):
    """Bad user input for aw-render; the message is one sentence."""


def _ns_render():
    import nerfstudio.scripts.render as ns_render

    return ns_render


ns = _ns_render()


@dataclass
class RestoreOptions:
    """The restorer post-pass options added to every trajectory subcommand."""

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

    # ------------------------------------------------------------------ checks before any loading

    def check_restore_options(self) -> None:
        """The config, the output path and every restorer option, before nerfstudio loads the run."""

        load_config = getattr(self, "load_config")
        if not Path(load_config).is_file():
            raise RenderInputError(f"The config file {load_config} does not exist.")
        check_render_output(getattr(self, "output_path"), getattr(self, "output_format", "video"))
        if not self.restore:
            return
        check_window_options(self.window_frames, self.overlap, self.bridge_frames)
        check_at_least("--restorer-steps", self.restorer_steps, 1)
        check_at_least("--heatmap-steps", self.heatmap_steps, 1)
        check_processing_max_side(self.processing_max_side)
        check_device(self.restorer_device, "--restorer-device")
        if list(getattr(self, "rendered_output_names", ["rgb"])) != ["rgb"]:
            raise RenderInputError("--restore restores RGB only; pass --rendered-output-names rgb or use --no-restore.")
        if getattr(self, "render_nearest_camera", False):
            raise RenderInputError("--render-nearest-camera cannot be combined with --restore; use --no-restore.")

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

    # ------------------------------------------------------------------ the replaced last step

    @contextlib.contextmanager
    def _trajectory_step(self) -> Iterator[None]:
        """While nerfstudio's ``main`` runs, its ``_render_trajectory_video`` is ours when restoring."""
        original = ns._render_trajectory_video
        if self.restore:
            ns._render_trajectory_video = self._render_and_restore
        try:
            yield
        finally:
            ns._render_trajectory_video = original

    def _render_and_restore(
        self,
        pipeline,
        cameras,
        output_filename: Path,
        rendered_output_names: List[str],
        crop_data=None,
        rendered_resolution_scaling_factor: float = 1.0,
        seconds: float = 5.0,
        output_format: Literal["images", "video"] = "video",
        image_format: Literal["jpeg", "png"] = "jpeg",
        jpeg_quality: int = 100,
        **_unused,
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from artifactworld_ns.restorer.pipeline import ArtifactRestorer

        console = ns.CONSOLE
        cameras.rescale_output_resolution(rendered_resolution_scaling_factor)
        cameras = cameras.to(pipeline.device)
        num_frames = cameras.size
        fps = num_frames / seconds
        train_dataset = restorable_path_dataset(pipeline, cameras)
        windows = plan_windows(num_frames, self.window_frames, self.overlap)
        obb_box = crop_data.obb if crop_data is not None else None
        background = crop_data.background_color if crop_data is not None else None

        restorer = ArtifactRestorer.from_preset(self.preset, **self.restorer_overrides())
        steps = StepProgress()
        restorer.progress = steps
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            steps.attach(progress)
            raw, alpha = render_frames(pipeline, cameras, obb_box, background, progress, "rendering")
            train_poses = train_dataset.cameras.camera_to_worlds
            anchors: dict[int, Tensor] = {}
            restored = []
            task = progress.add_task(f"restoring {len(windows)} windows", total=len(windows))
            for win in windows:
                bridged = bridge_window(win, cameras.camera_to_worlds.cpu(), train_poses.cpu(), self.bridge_frames)
                bridge_cams = cameras_at(cameras, win.start, bridged.poses)
                keep = torch.zeros(bridged.poses.shape[0], dtype=torch.bool)
                keep[bridged.window_slice] = True
                b_rgb, b_alpha = render_frames(pipeline, bridge_cams[~keep], obb_box, background, progress, "  bridges")
                clip = torch.empty((keep.numel(), *raw.shape[1:]))
                opacity = torch.empty((keep.numel(), *alpha.shape[1:]))
                clip[keep], clip[~keep] = raw[win.start : win.stop], b_rgb
                opacity[keep], opacity[~keep] = alpha[win.start : win.stop], b_alpha
                size = tuple(raw.shape[1:3])
                for index in (bridged.first_train, bridged.last_train):
                    if index not in anchors:
                        anchors[index] = training_image(train_dataset, index, size)
                result = restorer.restore(
                    clip,
                    anchors[bridged.first_train],
                    anchors[bridged.last_train],
                    opacity if self.use_opacity else None,
                )
                restored.append(result.frames[bridged.window_slice].float())
                progress.advance(task)
        frames = blend_windows(windows, restored, num_frames).clamp(0, 1)
        write_output(frames, output_filename, fps, output_format, image_format, jpeg_quality)
        written = [str(output_filename if output_format == "video" else output_filename.parent / output_filename.stem)]
        if self.save_comparison:
            comparison = comparison_path(output_filename)
            write_output(torch.cat([raw, frames], dim=2), comparison, fps, "video", image_format, jpeg_quality)
            written.append(str(comparison))
        label = f" {UNTRAINED_LABEL}" if self.preset == "tiny" else ""
        console.print(
            f"Restored {num_frames} frames ({frames.shape[2]}x{frames.shape[1]}) in {len(windows)} windows{label}: "
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


@dataclass
class AwRenderCameraPath(RestoreOptions, ns.RenderCameraPath):
    """Render a camera path generated by the viewer or blender add-on, then restore it."""

    def main(self) -> None:
        self.check_restore_options()
        check_camera_path_file(self.camera_path_filename)
        with self._trajectory_step():
            ns.RenderCameraPath.main(self)


@dataclass
class AwRenderInterpolated(RestoreOptions, ns.RenderInterpolated):
    """Render a trajectory that interpolates between training or eval dataset images, then restore it."""

    def main(self) -> None:
        self.check_restore_options()
        with self._trajectory_step():
            ns.RenderInterpolated.main(self)


@dataclass
class AwSpiralRender(RestoreOptions, ns.SpiralRender):
    """Render a spiral trajectory around the first eval camera, then restore it (works on splatfacto models)."""

    def main(self) -> None:
        from nerfstudio.cameras.camera_paths import get_spiral_path
        from nerfstudio.utils import install_checks
        from nerfstudio.utils.eval_utils import eval_setup

        self.check_restore_options()
        steps = int(self.frame_rate * self.seconds)
        if steps < 1:
            raise RenderInputError(f"--seconds {self.seconds} at --frame-rate {self.frame_rate} gives no frames.")
        _, pipeline, _, _ = eval_setup(
            self.load_config, eval_num_rays_per_chunk=self.eval_num_rays_per_chunk, test_mode="test"
        )
        install_checks.check_ffmpeg_installed()
        camera_path = get_spiral_path(first_camera(pipeline), steps=steps, radius=self.radius)
        if self.camera_idx is not None:
            camera_path.metadata = {"cam_idx": self.camera_idx}
        with self._trajectory_step():
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
