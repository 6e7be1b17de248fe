"""The pseudo-view bank in nerfstudio's viewer: frustums with their restored images, as nerfstudio draws
training cameras (viser calls; the pipeline's checkbox toggles them)."""

from __future__ import annotations

import numpy as np
import torch
import viser.transforms as vtf
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

from artifactworld_ns.bank import PseudoViewBank

BANK_NODE = "/artifactworld_bank"
BANK_COLOR = (230, 120, 30)


def draw_bank(server, bank: PseudoViewBank, visible: bool) -> None:
    """Draw (or hide) every bank view under ``BANK_NODE``; nothing without a viewer (``server`` None)."""
    if server is None:
        return
    server.scene.add_frame(BANK_NODE, show_axes=False, visible=visible)
    if not visible:
        return
    for index, view in enumerate(bank.views):
        pose = torch.tensor(view.camera_to_world).numpy()
        rotation = vtf.SO3.from_matrix(pose[:3, :3]) @ vtf.SO3.from_x_radians(np.pi)
        thumbnail = bank.images[index][:: max(1, view.height // 64), :: max(1, view.height // 64)].numpy()
        server.scene.add_camera_frustum(
            name=f"{BANK_NODE}/view_{index:05d}",
            fov=float(2 * np.arctan(view.cy / view.fy)),
            aspect=view.width / view.height,
            scale=0.08,
            image=thumbnail,
            wxyz=rotation.wxyz,
            position=pose[:3, 3] * VISER_NERFSTUDIO_SCALE_RATIO,
            color=BANK_COLOR,
        )
