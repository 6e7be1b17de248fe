"""Restoring a rendered camera path in overlapping windows, with DBA anchors from the nearest training views.

The plan (which windows, which bridges, how they blend) is :mod:`artifactworld_ns.windows`; this module
runs it on a loaded nerfstudio pipeline: it renders the path and each window's bridges through
``pipeline.model.get_outputs_for_camera`` (:func:`artifactworld_ns.render_io.render_frames`), restores
``[bridge in, window, bridge out]`` with the two nearest training images as anchors, drops the bridges
and blends the windows. ``aw-render --restore`` calls :func:`restore_path`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List

import torch
from jaxtyping import Float
from torch import Tensor

from artifactworld_ns.cameras import anchor_image
from artifactworld_ns.render_io import cameras_at, render_frames
from artifactworld_ns.windows import MIN_BRIDGE_FRAMES, Window, blend_windows, bridge_window, plan_windows

if TYPE_CHECKING:
    from artifactworld_ns.restorer.pipeline import ArtifactRestorer


@dataclass(frozen=True)
class WindowSettings:
    """How a long path is cut into restorer clips (``aw-render``'s ``--window-frames``, ``--overlap``,
    ``--bridge-frames`` and ``--use-opacity``)."""

    window_frames: int = 33
    overlap: int = 8
    bridge_frames: int = MIN_BRIDGE_FRAMES
    use_opacity: bool = True


@dataclass(frozen=True)
class RestoredPath:
    """The raw render of a path, its restored frames and the windows they were restored in."""

    raw: Float[Tensor, "frames height width 3"]
    frames: Float[Tensor, "frames height width 3"]
    windows: List[Window]


def restore_path(
    pipeline: Any,
    cameras: Any,
    train_dataset: Any,
    restorer: "ArtifactRestorer",
    settings: WindowSettings,
    obb_box: Any = None,
    background: Tensor | None = None,
    progress: Any = None,
) -> RestoredPath:
    """Render ``cameras`` (one resolution, on the pipeline's device) and restore them window by window.

    ``train_dataset`` gives the anchors (its cameras' poses pick the nearest view at each end of a window);
    ``progress`` is an optional ``rich.progress.Progress`` that gets one task per rendering pass and one for
    the windows. The frames are blended and clamped to ``[0, 1]``.
    """
    num_frames = cameras.size
    windows = plan_windows(num_frames, settings.window_frames, settings.overlap)
    raw, alpha = render_frames(pipeline, cameras, obb_box, background, progress, "rendering")
    train_poses = train_dataset.cameras.camera_to_worlds
    size = tuple(raw.shape[1:3])
    anchors: dict[int, Tensor] = {}
    restored = []
    task = progress.add_task(f"restoring {len(windows)} windows", total=len(windows)) if progress is not None else None
    for win in windows:
        bridged = bridge_window(win, cameras.camera_to_worlds.cpu(), train_poses.cpu(), settings.bridge_frames)
        bridge_cams = cameras_at(cameras, win.start, bridged.poses)
        keep = torch.zeros(bridged.poses.shape[0], dtype=torch.bool)
        keep[bridged.window_slice] = True
        b_rgb, b_alpha = render_frames(pipeline, bridge_cams[~keep], obb_box, background, progress, "  bridges")
        clip = torch.empty((keep.numel(), *raw.shape[1:]))
        opacity = torch.empty((keep.numel(), *alpha.shape[1:]))
        clip[keep], clip[~keep] = raw[win.start : win.stop], b_rgb
        opacity[keep], opacity[~keep] = alpha[win.start : win.stop], b_alpha
        for index in (bridged.first_train, bridged.last_train):
            if index not in anchors:
                anchors[index] = anchor_image(train_dataset.get_image_float32(index), size)
        result = restorer.restore(
            clip,
            anchors[bridged.first_train],
            anchors[bridged.last_train],
            opacity if settings.use_opacity else None,
        )
        restored.append(result.frames[bridged.window_slice].float())
        if task is not None:
            progress.advance(task)
    frames = blend_windows(windows, restored, num_frames).clamp(0, 1)
    return RestoredPath(raw, frames, windows)
