import pytest
import torch

from artifactworld_ns.restorer.aatf import (
    NOISEMAP_FEATURE_SCALE,
    OFFICIAL_BLEND_TABLE,
    BlendTable,
    PiecewiseDecay,
    blend_heatmap_latent,
    official_blend_table,
    raise_heatmap_by_opacity,
    sample_restored_latent,
    schedule_table,
)
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.prompts import PromptEmbedding
from artifactworld_ns.restorer.sampler import latent_video_coords, linear_quadratic_sigmas

# The release's configs/stage2_infer.yaml `noisemap_blend_weights`, columns (z_full, z_null, heatmap),
# typed in by hand from the official file.
OFFICIAL_ROWS = [
    (0.8, 0.0, 0.2),
    (0.0, 0.0, 1.0),
    (0.0, 0.0, 1.0),
    (0.0, 0.0, 1.0),
    (0.0, 0.25, 0.75),
    (0.0, 0.5, 0.5),
    (0.0, 0.75, 0.25),
    (0.0, 1.0, 0.0),
]


def test_default_table_is_the_official_yaml_in_its_column_order():
    assert schedule_table(OFFICIAL_BLEND_TABLE, linear_quadratic_sigmas(8)) == OFFICIAL_ROWS
    # a user pastes the official rows and gets exactly the default
    assert BlendTable(tuple(tuple(r) for r in OFFICIAL_ROWS)) == OFFICIAL_BLEND_TABLE


def test_heatmap_scale_is_the_official_feature_scale():
    assert NOISEMAP_FEATURE_SCALE == 0.05


def test_official_table_scales_to_other_step_counts():
    assert official_blend_table(8) == OFFICIAL_BLEND_TABLE
    # 16 steps: 2 first rows, 6 heatmap rows, 8 decay rows of 1/8 each, ending on z_null.
    rows = official_blend_table(16).rows
    assert rows[:2] == ((0.8, 0.0, 0.2),) * 2 and rows[2:8] == ((0.0, 0.0, 1.0),) * 6
    assert rows[8] == (0.0, 0.125, 0.875) and rows[-1] == (0.0, 1.0, 0.0) and len(rows) == 16
    assert official_blend_table(1).rows == ((0.8, 0.0, 0.2),)
    with pytest.raises(RestorerInputError, match="at least 1 step"):
        official_blend_table(0)


def test_piecewise_decay_eq2_weights_in_official_column_order():
    decay = PiecewiseDecay(tau1=0.4, tau2=0.8)
    assert decay.weights(0, 5, 1.0) == (1.0, 0.0, 0.0)
    assert decay.weights(0, 5, 0.9) == pytest.approx((0.5, 0.0, 0.5))  # alpha = (0.9 - 0.8) / 0.2
    assert decay.weights(0, 5, 0.6) == (0.0, 0.0, 1.0)
    assert decay.weights(0, 5, 0.4) == (0.0, 0.0, 1.0)
    assert decay.weights(0, 5, 0.1) == pytest.approx((0.0, 0.75, 0.25))  # beta = 0.1 / 0.4
    custom = PiecewiseDecay(0.4, 0.8, alpha=lambda s: 1.0, beta=lambda s: 0.0)
    assert custom.weights(0, 5, 0.85) == (1.0, 0.0, 0.0) and custom.weights(0, 5, 0.2) == (0.0, 1.0, 0.0)


def test_bad_schedules_raise():
    with pytest.raises(RestorerInputError, match="0 < tau1 < tau2 < 1"):
        PiecewiseDecay(0.8, 0.4)
    with pytest.raises(RestorerInputError, match="summing to 1"):
        BlendTable(((0.5, 0.4, 0.0),))
    with pytest.raises(RestorerInputError, match="has 8 rows but the sampler runs 4 steps"):
        schedule_table(OFFICIAL_BLEND_TABLE, torch.linspace(1, 0, 5))


def test_blend_and_opacity():
    full, null, hm = torch.full((2,), 10.0), torch.zeros(2), torch.full((2,), 2.0)
    assert blend_heatmap_latent((0.0, 0.75, 0.25), full, null, hm).tolist() == [0.5, 0.5]
    assert blend_heatmap_latent((0.8, 0.0, 0.2), full, null, hm).tolist() == pytest.approx([8.4, 8.4])
    h = torch.tensor([[[0.2, 0.9]]])
    o = torch.tensor([[[0.5, 0.5]]])
    assert torch.allclose(raise_heatmap_by_opacity(h, o), torch.tensor([[[0.5, 0.9]]]))
    rgb = torch.tensor([[[[0.2, 0.6, 0.9]]]])  # [1, 1, 1, 3] raised per channel
    assert torch.allclose(raise_heatmap_by_opacity(rgb, torch.tensor([[[0.3]]])), torch.tensor([[[[0.7, 0.7, 0.9]]]]))


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, hidden_states, timestep, **kwargs):
        self.calls.append((hidden_states.clone(), timestep.clone()))
        return (torch.zeros_like(hidden_states),)


def test_stage2_feeds_the_scaled_blended_heatmap_segment_each_step():
    shape = (1, 2, 1, 1, 2)  # 2 channels, 2 tokens
    z_ref, z_hm = torch.full(shape, 5.0), torch.full(shape, 2.0)
    z_full, z_null = torch.full(shape, 10.0), torch.zeros(shape)
    model = Recorder()
    sigmas = linear_quadratic_sigmas(8)
    sample_restored_latent(
        model,
        PromptEmbedding(torch.zeros(1, 1, 3), torch.ones(1, 1)),
        z_ref,
        z_hm,
        z_full,
        z_null,
        OFFICIAL_BLEND_TABLE,
        torch.zeros(1, 2, 2),
        sigmas,
        latent_video_coords(1, 1, 2),
        torch.Generator().manual_seed(0),
    )
    assert len(model.calls) == 8
    generator = torch.Generator().manual_seed(0)
    for (hidden, timestep), (w_full, w_null, w_hm), s in zip(model.calls, OFFICIAL_ROWS, sigmas.tolist()):
        fresh = torch.randn(1, 6, 2, generator=generator)  # context noise, drawn for the whole sequence
        heatmap = 0.05 * (10.0 * w_full + 2.0 * w_hm)  # 0.05 x blend of (z_full, z_null, z_hm)
        assert torch.allclose(hidden[0, 4:], heatmap + 0.15 * s**2 * fresh[0, 4:], atol=1e-6)
        assert torch.allclose(hidden[0, :2], 5.0 + 0.15 * s**2 * fresh[0, :2], atol=1e-6)  # reference segment
        assert torch.allclose(timestep, torch.tensor([[0.0, 0.0, s * 1000, s * 1000, 0.0, 0.0]]))


def test_stage2_blends_on_the_transformer_device(monkeypatch: pytest.MonkeyPatch):
    """z_ref and z_hm come from the VAE on the execution device, the auxiliary latents from the restorer's
    CPU cache: the blend must run where the transformer computes (``meta`` stands in for a GPU here)."""
    from artifactworld_ns.restorer import aatf

    segments = {}

    def sampler(transformer, prompt, *, context, noise, **kwargs):
        segments.update(context(0, 1.0))
        return torch.zeros(noise.shape)

    monkeypatch.setattr(aatf, "euler_sample", sampler)
    z = torch.zeros(1, 2, 1, 1, 2)
    sample_restored_latent(
        torch.nn.Linear(1, 1, device="meta"),
        PromptEmbedding(torch.zeros(1, 1, 3), torch.ones(1, 1)),
        z.to("meta"),
        z.to("meta"),
        z,
        z,
        OFFICIAL_BLEND_TABLE,
        torch.zeros(1, 2, 2),
        linear_quadratic_sigmas(8),
        latent_video_coords(1, 1, 2),
        torch.Generator().manual_seed(0),
    )
    assert {name: t.device.type for name, t in segments.items()} == {"reference": "meta", "heatmap": "meta"}
