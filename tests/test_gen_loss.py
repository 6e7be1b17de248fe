"""Eq. 4: L = L_recon + lambda * L_gen, with L_gen splatfacto's L1 + SSIM on restored views."""

from __future__ import annotations

import pytest
import torch
from nerfstudio.data.scene_box import SceneBox

from artifactworld_ns.model import ArtifactWorldModelConfig


def make_model(**config):
    torch.manual_seed(0)
    seed_points = (torch.rand(32, 3) - 0.5, torch.randint(0, 255, (32, 3)).float())
    model = ArtifactWorldModelConfig(num_downscales=0, **config).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=4, seed_points=seed_points
    )
    model.train()
    return model


def batch_and_outputs(generated: bool):
    g = torch.Generator().manual_seed(1)
    outputs = {"rgb": torch.rand(24, 32, 3, generator=g), "background": torch.zeros(3)}
    batch = {
        "image": (torch.rand(24, 32, 3, generator=g) * 255).to(torch.uint8),
        "is_generated": generated,
        "heatmap": torch.rand(24, 32, generator=g),
    }
    return outputs, batch


def test_real_views_use_splatfacto_loss_unchanged():
    model = make_model(gen_loss_weight=0.3)
    outputs, batch = batch_and_outputs(generated=False)
    losses = model.get_loss_dict(outputs, batch)
    assert "main_loss" in losses and "gen_loss" not in losses
    assert losses["main_loss"] > 0


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_generated_views_scale_the_photometric_loss_by_lambda(weight):
    model = make_model(gen_loss_weight=weight)
    outputs, real = batch_and_outputs(generated=False)
    _, generated = batch_and_outputs(generated=True)
    recon = model.get_loss_dict(outputs, real)["main_loss"]
    losses = model.get_loss_dict(outputs, generated)
    assert "main_loss" not in losses
    assert losses["gen_loss"].item() == pytest.approx(weight * recon.item(), rel=1e-6, abs=1e-9)
    if weight == 0.0:
        assert losses["gen_loss"].item() == 0.0


def test_heatmap_weighting_masks_render_and_target_with_the_heatmap():
    model = make_model(gen_loss_weight=1.0, gen_loss_weighting="heatmap")
    outputs, batch = batch_and_outputs(generated=True)
    weighted = model.get_loss_dict(outputs, batch)["gen_loss"]
    heatmap = batch["heatmap"][..., None]
    target = batch["image"].float() / 255 * heatmap
    prediction = outputs["rgb"] * heatmap
    l1 = (target - prediction).abs().mean()
    ssim = 1 - model.ssim(target.permute(2, 0, 1)[None], prediction.permute(2, 0, 1)[None])
    expected = (1 - model.config.ssim_lambda) * l1 + model.config.ssim_lambda * ssim
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-5)
    uniform = make_model(gen_loss_weight=1.0).get_loss_dict(outputs, batch)["gen_loss"]
    assert weighted.item() != pytest.approx(uniform.item(), rel=1e-3)
