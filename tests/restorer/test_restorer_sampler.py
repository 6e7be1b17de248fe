import torch
from torch import nn

from artifactworld_ns.restorer.aatf import STAGE2_ROLES
from artifactworld_ns.restorer.heatmap import STAGE1_ROLES
from artifactworld_ns.restorer.prompts import PromptEmbedding
from artifactworld_ns.restorer.sampler import (
    CONTEXT_NOISE_SCALE,
    euler_sample,
    initial_noise,
    latent_video_coords,
    linear_quadratic_sigmas,
    pack_latents,
    sequence_timesteps,
    unpack_latents,
)


def test_stage1_timestep_layout_is_zero_then_s():
    t = sequence_timesteps(STAGE1_ROLES, 3, 0.25)
    assert t.tolist() == [[0.0, 0.0, 0.0, 250.0, 250.0, 250.0]]


def test_stage2_timestep_layout_is_zero_s_zero():
    t = sequence_timesteps(STAGE2_ROLES, 2, 0.5)
    assert t.tolist() == [[0.0, 0.0, 500.0, 500.0, 0.0, 0.0]]


def test_pack_unpack_round_trip_and_order():
    z = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(1, 2, 3, 2, 2)
    tokens = pack_latents(z)
    assert tokens.shape == (1, 12, 2)
    # token 0 is (frame 0, row 0, col 0): channel values z[0, :, 0, 0, 0]
    assert tokens[0, 0].tolist() == [0.0, 12.0]
    assert tokens[0, 5].tolist() == z[0, :, 1, 0, 1].tolist()
    assert torch.equal(unpack_latents(tokens, 3, 2, 2), z)


def test_latent_video_coords_follow_ltx_convention():
    coords = latent_video_coords(3, 1, 2, frame_rate=25.0)
    assert coords.shape == (1, 3, 6)
    # frames: latent 0 -> pixel 0, latent 1 -> 1, latent 2 -> 9 ; divided by 25
    assert torch.allclose(coords[0, 0], torch.tensor([0, 0, 1, 1, 9, 9]) / 25.0)
    assert coords[0, 1].tolist() == [0.0] * 6
    assert coords[0, 2].tolist() == [0.0, 32.0] * 3


def test_official_sigmas_are_ltx_linear_quadratic():
    # the official sigmas, computed by hand: 4 linear steps of 0.025/4 in (1 - sigma), then the quadratic
    # a i^2 + b i + c with a = (4 - 0.2) / 64, b = 0.00625 - 7.6 / 16, c = 16 a, reaching 1 at i = 8.
    expected = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
    assert torch.allclose(linear_quadratic_sigmas(8), torch.tensor(expected), atol=1e-7)
    assert linear_quadratic_sigmas(1).tolist() == [1.0, 0.0]
    assert linear_quadratic_sigmas(4).tolist()[-1] == 0.0 and len(linear_quadratic_sigmas(4)) == 5
    # timesteps = sigma x 1000, no resolution shift: the transformer sees 993.75 at step 1
    assert sequence_timesteps(STAGE1_ROLES, 1, float(linear_quadratic_sigmas(8)[1])).tolist() == [[0.0, 993.75]]


def test_initial_noise_is_drawn_as_bcfhw_then_packed():
    noise = initial_noise((1, 4, 3, 2, 2), torch.Generator().manual_seed(42), torch.device("cpu"))
    expected = torch.randn(1, 4, 3, 2, 2, generator=torch.Generator().manual_seed(42))
    assert torch.equal(noise, pack_latents(expected))
    assert not torch.equal(noise, torch.randn(1, 12, 4, generator=torch.Generator().manual_seed(42)))


class OracleVelocity(nn.Module):
    """Returns the exact flow-matching velocity (z_s - z0) / s for the target tokens, and records calls."""

    def __init__(self, z0, target_slice):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.z0, self.target_slice, self.calls = z0, target_slice, []

    def forward(
        self, hidden_states, encoder_hidden_states, timestep, encoder_attention_mask, video_coords, return_dict
    ):
        self.calls.append(
            {"timestep": timestep.clone(), "hidden": hidden_states.clone(), "coords": video_coords.clone()}
        )
        s = timestep[0, self.target_slice][0] / 1000.0
        out = torch.zeros_like(hidden_states)
        out[:, self.target_slice] = (hidden_states[:, self.target_slice] - self.z0) / s
        return (out,)


def test_euler_sampler_lands_on_data_with_exact_velocity_and_reuses_coords():
    torch.manual_seed(0)
    tokens, channels = 6, 4
    z0 = torch.randn(1, tokens, channels)
    ref = torch.randn(1, tokens, channels)
    model = OracleVelocity(z0, slice(tokens, 2 * tokens))
    prompt = PromptEmbedding(torch.zeros(1, 3, 5), torch.ones(1, 3))
    sigmas = torch.tensor([1.0, 0.6, 0.3, 0.0])
    coords = latent_video_coords(1, 2, 3)
    out = euler_sample(
        model,
        prompt,
        roles=STAGE1_ROLES,
        context=lambda step, s: {"reference": ref},
        noise=torch.randn(1, tokens, channels),
        sigmas=sigmas,
        segment_coords=coords,
        generator=torch.Generator().manual_seed(3),
    )
    assert torch.allclose(out, z0, atol=1e-5)
    assert len(model.calls) == 3
    generator = torch.Generator().manual_seed(3)
    for call, s in zip(model.calls, [1.0, 0.6, 0.3]):
        assert torch.allclose(call["timestep"], torch.tensor([[0.0] * tokens + [s * 1000] * tokens]))
        fresh = torch.randn(1, 2 * tokens, channels, generator=generator)
        # context: clean latent + 0.15 s^2 x fresh noise over the whole sequence, timestep 0
        assert torch.allclose(
            call["hidden"][:, :tokens], ref + CONTEXT_NOISE_SCALE * s**2 * fresh[:, :tokens], atol=1e-6
        )
        assert torch.equal(call["coords"], torch.cat([coords, coords], dim=2))
    assert CONTEXT_NOISE_SCALE == 0.15
