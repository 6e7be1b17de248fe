import shutil
from pathlib import Path

import pytest
import torch
from restorer_fixtures import aw_cache, load_tiny, tiny_roots  # noqa: F401

from artifactworld_ns.restorer import RestorerInputError
from artifactworld_ns.restorer.dba import build_reference_video, trim_to_clip
from artifactworld_ns.restorer.latents import video_to_mask
from artifactworld_ns.restorer.pipeline import ArtifactRestorer, RestorationResult, hand_off_heatmap
from artifactworld_ns.restorer.roots import ReleaseRoots
from artifactworld_ns.restorer.sampler import linear_quadratic_sigmas

REPO = Path(__file__).resolve().parents[2]


def _clip(num_frames, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(num_frames, height, width, 3, generator=g)


@pytest.fixture(scope="module")
def restorer(tiny_roots, tmp_path_factory):  # noqa: F811
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTIFACTWORLD_CACHE", str(tmp_path_factory.getbasetemp() / "aw-cache"))
        return load_tiny(tiny_roots)


def test_restore_returns_input_shape_and_range(restorer):
    frames = _clip(10, 40, 72)
    seen = []
    restorer.progress = lambda stage, done, total: seen.append((stage, done, total))
    try:
        result = restorer.restore(frames, frames[0], frames[-1])
    finally:
        restorer.progress = None
    assert isinstance(result, RestorationResult)
    assert result.frames.shape == (10, 40, 72, 3) and result.heatmap.shape == (10, 40, 72)
    assert 0 <= result.frames.min() and result.frames.max() <= 1
    assert 0 <= result.heatmap.min() and result.heatmap.max() <= 1
    assert [s[1:] for s in seen] == [(i, 8) for i in range(1, 9)] * 2
    assert seen[0][0].startswith("stage 1") and seen[-1][0].startswith("stage 2")
    again = restorer.restore(frames, frames[0], frames[-1])
    assert torch.equal(again.frames, result.frames), "fixed seed -> deterministic"


def test_opacity_zero_raises_heatmap_to_one_between_the_anchors(restorer):
    frames = _clip(17, 64, 64)
    opacity = torch.zeros(17, 64, 64, 1)
    opacity[:, :, 32:] = 1.0
    result = restorer.restore(frames, frames[0], frames[-1], opacity=opacity)
    # frames 1..15 are artifact frames: raised to 1 where transparent; frame 16 is anchor B (black tail)
    assert torch.allclose(result.heatmap[1:16, :, :30], torch.ones(15, 64, 30))
    assert result.heatmap[16].eq(0).all()
    plain = restorer.restore(frames, frames[0], frames[-1])
    assert torch.allclose(result.heatmap[:, :, 34:], plain.heatmap[:, :, 34:], atol=1e-5)
    assert torch.equal(result.heatmap[0], plain.heatmap[0]), "anchor A is never raised"


def test_predict_heatmap_and_restore_reference_match_restore(restorer):
    frames = _clip(17, 64, 64, seed=3)
    reference = build_reference_video(frames, frames[0], frames[-1])
    assert reference.shape[0] == 25
    full = restorer.restore(frames, frames[0], frames[-1])
    heatmap = restorer.predict_heatmap(reference)
    assert heatmap.shape == (25, 64, 64, 3), "stage 1 returns the RGB heatmap of the whole reference"
    handed = hand_off_heatmap(heatmap)
    assert handed[-9:].eq(0).all()
    assert torch.allclose(video_to_mask(trim_to_clip(handed, 17)), full.heatmap, atol=1e-6)
    stages = []
    restorer.progress = lambda stage, done, total: stages.append(stage)
    try:
        stage2_only = restorer.restore_reference(reference, heatmap=handed)
    finally:
        restorer.progress = None
    assert all(s.startswith("stage 2") for s in stages) and len(stages) == 8
    assert stage2_only.frames.shape == (25, 64, 64, 3)
    assert torch.allclose(trim_to_clip(stage2_only.frames, 17), full.frames, atol=1e-5)
    both = restorer.restore_reference(reference)
    assert torch.allclose(trim_to_clip(both.frames, 17), full.frames, atol=1e-6)


@pytest.mark.slow
def test_each_stage_equals_a_run_with_only_its_adapter(restorer, tiny_roots, tmp_path):  # noqa: F811
    frames = _clip(9, 64, 64, seed=5)
    reference = build_reference_video(frames, frames[0], frames[-1])
    heatmap = restorer.predict_heatmap(reference)
    only1 = load_tiny(tiny_roots, adapters=("stage1",))
    assert torch.allclose(only1.predict_heatmap(reference), heatmap, atol=1e-6)
    given = torch.rand(17, 64, 64, generator=torch.Generator().manual_seed(9))
    restored = restorer.restore_reference(reference, heatmap=given).frames
    only2 = load_tiny(tiny_roots, adapters=("stage2",))
    assert torch.allclose(only2.restore_reference(reference, heatmap=given).frames, restored, atol=1e-6)
    # the stage-2 adapter in the stage-1 slot predicts a different heatmap: the adapters really switch
    swapped_weights = tmp_path / "swapped"
    shutil.copytree(tiny_roots.weights, swapped_weights)
    shutil.copy(tiny_roots.stage2_lora, swapped_weights / "stage1_pred_headmap_lora.safetensors")
    swapped = load_tiny(
        ReleaseRoots(swapped_weights, tiny_roots.ltx_main, tiny_roots.ltx_097_dev), adapters=("stage1",)
    )
    assert not torch.allclose(swapped.predict_heatmap(reference), heatmap, atol=1e-4)
    with pytest.raises(RestorerInputError, match="no LoRA adapter named 'stage2'"):
        only1.restore_reference(reference, heatmap=given)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: (_clip(1, 32, 32), None), "at least 2 frames"),
        (lambda: (torch.rand(5, 32, 32), None), "must be a \\[T, H, W, 3\\] tensor"),
        (lambda: (_clip(5, 32, 32) * 3, None), "values must lie in \\[0, 1\\]"),
        (lambda: (_clip(5, 32, 32), torch.rand(5, 32, 31)), "opacity must have shape"),
    ],
)
def test_bad_input_one_clear_sentence(restorer, make, message):
    frames, opacity = make()
    first = frames[0] if frames.ndim == 4 else torch.rand(32, 32, 3)
    with pytest.raises(RestorerInputError, match=message) as err:
        restorer.restore(frames, first, first, opacity=opacity)
    text = str(err.value)
    assert text.endswith(".") and text.count(". ") == 0


def test_anchor_of_wrong_size(restorer):
    frames = _clip(5, 32, 32)
    with pytest.raises(RestorerInputError, match="first_anchor must have shape"):
        restorer.restore(frames, torch.rand(16, 16, 3), frames[-1])


@pytest.mark.slow
def test_tiny_preset_round_trips_49_frames_960x540(capsys):
    restorer = ArtifactRestorer.from_preset("tiny", show_progress=False)
    assert "UNTRAINED" in capsys.readouterr().err
    assert restorer.settings.label.startswith("[tiny preset: UNTRAINED")
    frames = _clip(49, 540, 960)
    result = restorer.restore(frames, frames[0], frames[-1])
    assert result.frames.shape == (49, 540, 960, 3)
    assert result.heatmap.shape == (49, 540, 960)
    assert torch.isfinite(result.frames).all()
    # the release's auxiliary latents are used for the reference size they were made for
    z_full, _ = restorer.auxiliary_latents(17, 32, 64, torch.Size((1, 8, 3, 1, 2)))
    from artifactworld_ns.restorer.loading import load_auxiliary_latent

    assert torch.equal(z_full, load_auxiliary_latent(restorer.roots, "z_full.pt"))


def test_from_preset_rejects_unknown_names_and_options():
    with pytest.raises(RestorerInputError, match="Unknown restorer preset 'huge'"):
        ArtifactRestorer.from_preset("huge")
    with pytest.raises(RestorerInputError, match="Unknown restorer preset option"):
        ArtifactRestorer.from_preset("tiny", num_steps=3)


def test_full_preset_without_weights_names_the_download(tmp_path):
    with pytest.raises(RestorerInputError, match=f"hf download buaadwxl/ArtifactWorld --local-dir {tmp_path}"):
        ArtifactRestorer.from_preset("full", weights_root=str(tmp_path), device="cpu")


def test_offload_moves_to_cpu(restorer):
    assert restorer.offload().device.type == "cpu"
    assert restorer.to("cpu") is restorer


def test_two_frame_clip_is_the_minimum_and_round_trips(restorer):
    frames = _clip(2, 33, 45)
    result = restorer.restore(frames, frames[0], frames[1], opacity=torch.ones(2, 33, 45))
    assert result.frames.shape == (2, 33, 45, 3) and result.heatmap.shape == (2, 33, 45)


def test_real_transformer_sees_stage_timestep_layouts_and_shared_coords(restorer):
    frames = _clip(9, 64, 64, seed=7)
    reference = build_reference_video(frames, frames[0], frames[-1])
    seen = []
    hook = restorer.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["timestep"].clone(), kwargs["video_coords"].clone())),
        with_kwargs=True,
    )
    try:
        restorer.predict_heatmap(reference)
        restorer.restore_reference(reference, heatmap=torch.zeros(17, 64, 64))
    finally:
        hook.remove()
    sigmas = linear_quadratic_sigmas(8)
    n = 3 * 2 * 2  # latent tokens of a 17x64x64 reference
    assert len(seen) == 16
    for i, (timestep, coords) in enumerate(seen[:8]):
        s = float(sigmas[i]) * 1000
        assert torch.allclose(timestep, torch.tensor([[0.0] * n + [s] * n]))
        assert torch.equal(coords[:, :, :n], coords[:, :, n:])
    for i, (timestep, coords) in enumerate(seen[8:]):
        s = float(sigmas[i]) * 1000
        assert torch.allclose(timestep, torch.tensor([[0.0] * n + [s] * n + [0.0] * n]))
        assert torch.equal(coords[:, :, :n], coords[:, :, 2 * n :]) and torch.equal(
            coords[:, :, :n], coords[:, :, n : 2 * n]
        )


def test_step_count_must_match_an_explicit_blend_table():
    table = tuple((0.0, 1.0, 0.0) for _ in range(8))
    with pytest.raises(RestorerInputError, match="has 8 rows but num_inference_steps is 4"):
        ArtifactRestorer.from_preset("tiny", num_inference_steps=4, blend_table=table)


def test_default_schedule_follows_the_step_count():
    # columns (z_full, z_null, heatmap): 1 official first row, round(3*4/8) = 2 heatmap rows, 1 decay row
    restorer = ArtifactRestorer.from_preset("tiny", num_inference_steps=4)
    assert restorer.settings.schedule.rows == ((0.8, 0.0, 0.2), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 1.0, 0.0))
    assert ArtifactRestorer.from_preset("tiny").settings.seed == 42


def test_group_offload_keeps_blocks_on_the_cpu_and_changes_nothing(tiny_roots, aw_cache):  # noqa: F811
    from diffusers.hooks import HookRegistry

    frames = _clip(10, 40, 72, seed=3)
    plain = load_tiny(tiny_roots)
    offloaded = load_tiny(tiny_roots, group_offload=True)
    assert not plain.group_offloaded and offloaded.group_offloaded
    assert offloaded.execution_device == torch.device("cpu")
    hooks = HookRegistry.check_if_exists_or_initialize(offloaded.transformer.transformer_blocks[0])
    assert "group_offloading" in hooks.hooks, "diffusers' block-level group offload hook is on every block"
    a = plain.restore(frames, frames[0], frames[-1])
    b = offloaded.restore(frames, frames[0], frames[-1])
    assert torch.equal(a.frames, b.frames) and torch.equal(a.heatmap, b.heatmap)
    offloaded.offload().to("cpu")  # moving a group-offloaded restorer leaves the hooks in charge
    assert offloaded.group_offloaded
