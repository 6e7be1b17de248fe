import pytest
import torch

from restorer.aatf import (
    PAPER_BEST_SCHEDULE,
    BlendTable,
    PiecewiseDecay,
    blend_heatmap_latent,
    paper_best_schedule,
    raise_heatmap_by_opacity,
    sample_restored_latent,
    schedule_table,
)
from restorer.errors import RestorerInputError
from restorer.prompts import PromptEmbedding
from restorer.sampler import latent_video_coords

# Paper Table 5, Exp 7: z_full (1 step), z_heatmap (3 steps), linear to z_null (4 steps)
PAPER_TABLE = [
    (1, 0, 0),
    (0, 1, 0), (0, 1, 0), (0, 1, 0),
    (0, 0.75, 0.25), (0, 0.5, 0.5), (0, 0.25, 0.75), (0, 0, 1),
]


def test_default_schedule_is_paper_table5_exp7():
    sigmas = torch.cat([torch.linspace(1.0, 0.001, 8), torch.zeros(1)])
    assert schedule_table(PAPER_BEST_SCHEDULE, sigmas) == PAPER_TABLE


def test_paper_schedule_scales_to_other_step_counts():
    assert paper_best_schedule(8) == PAPER_BEST_SCHEDULE
    # 16 steps: 2 z_full, 6 z_hm, 8 decay steps of 1/8 each, ending on z_null.
    rows = paper_best_schedule(16).rows
    assert rows[:2] == ((1.0, 0.0, 0.0),) * 2 and rows[2:8] == ((0.0, 1.0, 0.0),) * 6
    assert rows[8] == (0.0, 0.875, 0.125) and rows[-1] == (0.0, 0.0, 1.0) and len(rows) == 16
    assert paper_best_schedule(1).rows == ((1.0, 0.0, 0.0),)
    with pytest.raises(RestorerInputError, match="at least 1 step"):
        paper_best_schedule(0)


def test_piecewise_decay_eq2_weights():
    decay = PiecewiseDecay(tau1=0.4, tau2=0.8)
    assert decay.weights(0, 5, 1.0) == (1.0, 0.0, 0.0)
    w = decay.weights(0, 5, 0.9)  # alpha = (0.9 - 0.8) / 0.2 = 0.5
    assert w == pytest.approx((0.5, 0.5, 0.0))
    assert decay.weights(0, 5, 0.6) == (0.0, 1.0, 0.0)
    assert decay.weights(0, 5, 0.4) == (0.0, 1.0, 0.0)
    assert decay.weights(0, 5, 0.1) == pytest.approx((0.0, 0.25, 0.75))  # beta = 0.1 / 0.4
    custom = PiecewiseDecay(0.4, 0.8, alpha=lambda s: 1.0, beta=lambda s: 0.0)
    assert custom.weights(0, 5, 0.85) == (1.0, 0.0, 0.0) and custom.weights(0, 5, 0.2) == (0.0, 0.0, 1.0)


def test_bad_schedules_raise():
    with pytest.raises(RestorerInputError, match="0 < tau1 < tau2 < 1"):
        PiecewiseDecay(0.8, 0.4)
    with pytest.raises(RestorerInputError, match="summing to 1"):
        BlendTable(((0.5, 0.4, 0.0),))
    with pytest.raises(RestorerInputError, match="has 8 rows but the sampler runs 4 steps"):
        schedule_table(PAPER_BEST_SCHEDULE, torch.linspace(1, 0, 5))


def test_blend_and_opacity():
    full, hm, null = torch.full((2,), 10.0), torch.full((2,), 2.0), torch.zeros(2)
    assert blend_heatmap_latent((0.0, 0.25, 0.75), full, hm, null).tolist() == [0.5, 0.5]
    assert blend_heatmap_latent((0.5, 0.5, 0.0), full, hm, null).tolist() == [6.0, 6.0]
    h = torch.tensor([[[0.2, 0.9]]])
    o = torch.tensor([[[0.5, 0.5]]])
    assert torch.allclose(raise_heatmap_by_opacity(h, o), torch.tensor([[[0.5, 0.9]]]))


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, hidden_states, timestep, **kwargs):
        self.calls.append((hidden_states.clone(), timestep.clone()))
        return (torch.zeros_like(hidden_states),)


def test_stage2_feeds_blended_heatmap_segment_each_step():
    shape = (1, 2, 1, 1, 2)  # 2 channels, 2 tokens
    z_ref, z_hm = torch.full(shape, 5.0), torch.full(shape, 2.0)
    z_full, z_null = torch.full(shape, 10.0), torch.zeros(shape)
    model = Recorder()
    sigmas = torch.cat([torch.linspace(1.0, 0.001, 8), torch.zeros(1)])
    sample_restored_latent(
        model, PromptEmbedding(torch.zeros(1, 1, 3), torch.ones(1, 1)), z_ref, z_hm, z_full, z_null,
        PAPER_BEST_SCHEDULE, sigmas, latent_video_coords(1, 1, 2), torch.Generator().manual_seed(0),
    )
    assert len(model.calls) == 8
    for (hidden, timestep), (w_full, w_hm, w_null), s in zip(model.calls, PAPER_TABLE, sigmas.tolist()):
        expected = 10.0 * w_full + 2.0 * w_hm
        assert torch.allclose(hidden[0, 4:], torch.full((2, 2), expected))  # heatmap segment
        assert torch.allclose(hidden[0, :2], torch.full((2, 2), 5.0))  # reference segment
        assert torch.allclose(timestep, torch.tensor([[0.0, 0.0, s * 1000, s * 1000, 0.0, 0.0]]))
