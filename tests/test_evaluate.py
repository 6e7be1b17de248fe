"""aw-eval: video metrics against torchmetrics, unavailable metrics, file-set mismatches, scene eval."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import wave_clip

from artifactworld_ns import evaluate as ev
from artifactworld_ns import metrics
from artifactworld_ns.restorer import ALEXNET_WEIGHTS_FILE
from artifactworld_ns.restorer.video_io import read_video, write_video


def _clip(frames: int = 5, height: int = 32, width: int = 48, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = wave_clip(
        frames, height, width, freqs=(7, 6, 0), speeds=(0.5, 0.3, 0), blue=lambda x, y, t: 0.4 + 0.3 * x * y + 0 * t
    )
    return (base + 0.03 * torch.rand(base.shape, generator=g)).clamp(0, 1)


def _degrade(clip: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    blurred = torch.nn.functional.avg_pool2d(clip.permute(0, 3, 1, 2), 3, stride=1, padding=1).permute(0, 2, 3, 1)
    return (blurred + 0.08 * torch.randn(clip.shape, generator=g)).clamp(0, 1)


@pytest.fixture
def folders(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    clean_a, clean_b = _clip(seed=0), _clip(seed=3)
    write_video(gt / "a.mp4", clean_a, 10)
    write_video(gt / "b.mp4", clean_b, 10)
    write_video(gt / "only_gt.mp4", clean_a, 10)
    write_video(pred / "a.mp4", clean_a, 10)
    write_video(pred / "b.mp4", _degrade(clean_b), 10)
    write_video(pred / "only_pred.mp4", clean_a, 10)
    return pred, gt


@pytest.fixture
def fake_alexnet(tmp_path, monkeypatch):
    """A torch hub cache holding random AlexNet weights under the name torchvision looks for."""
    import torchvision

    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), hub / "checkpoints" / ALEXNET_WEIGHTS_FILE)
    # torch.hub.set_dir, undone afterwards (set_dir(get_dir()) would pin the folder and hide TORCH_HOME from later tests)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub))
    return hub


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))


def test_identical_clips_score_cap_ssim_one_lpips_zero(tmp_path, fake_alexnet):
    clip = _clip()
    suite = metrics.MetricSuite.build(clip_model=None)
    assert suite.lpips is not None and "lpips" not in suite.unavailable
    values = suite.score(clip, clip)
    assert values["psnr"] == metrics.PSNR_CAP_DB
    assert values["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert values["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_degraded_pair_matches_torchmetrics_called_directly(folders, fake_alexnet):
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    pred_dir, gt_dir = folders
    report = ev.evaluate_videos(pred_dir, gt_dir, metrics.MetricSuite.build(clip_model=None))
    pred, _ = read_video(pred_dir / "b.mp4")
    gt, _ = read_video(gt_dir / "b.mp4")
    p, g = pred.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2)
    psnr = torch.stack(
        [peak_signal_noise_ratio(p[i : i + 1], g[i : i + 1], data_range=1.0) for i in range(len(p))]
    ).mean()
    ssim = structural_similarity_index_measure(p, g, data_range=1.0)
    lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)(p, g)
    got = report["per_clip"]["b.mp4"]
    assert 10 < got["psnr"] < 40
    assert got["psnr"] == pytest.approx(float(psnr), rel=1e-5)
    assert got["ssim"] == pytest.approx(float(ssim), rel=1e-5)
    assert got["lpips"] == pytest.approx(float(lpips), rel=1e-4)
    assert report["per_clip"]["a.mp4"]["psnr"] == metrics.PSNR_CAP_DB
    for metric in ("psnr", "ssim", "lpips"):
        expected = (report["per_clip"]["a.mp4"][metric] + got[metric]) / 2
        assert report["mean"][metric] == pytest.approx(expected)


def test_mismatched_file_sets_score_the_intersection_and_list_the_rest(folders, empty_hub, capsys):
    pred_dir, gt_dir = folders
    out = pred_dir.parent / "report" / "eval.json"
    code = ev.run(
        [
            "video",
            "--pred",
            str(pred_dir),
            "--gt",
            str(gt_dir),
            "--out",
            str(out),
            "--clip-model",
            str(pred_dir / "no-clip"),
            "--compare-paper",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert sorted(report["per_clip"]) == ["a.mp4", "b.mp4"] and report["count"] == 2
    assert report["only_in_pred"] == ["only_pred.mp4"] and report["only_in_gt"] == ["only_gt.mp4"]
    # Metrics without local weights: null in the mean, absent per clip, with a reason -- never a number.
    for metric in ("lpips", "clip_i", "fvd"):
        assert report["mean"][metric] is None
        assert report["unavailable"][metric]
        assert all(metric not in values for values in report["per_clip"].values())
    assert "AlexNet" in report["unavailable"]["lpips"]
    captured = capsys.readouterr()
    err = " ".join(captured.err.split())
    assert "1 file(s) only in --pred, not scored: only_pred.mp4." in err
    assert "1 file(s) only in --gt, not scored: only_gt.mp4." in err
    table = out.with_suffix(".md").read_text()
    assert table in captured.out
    assert (
        "| this run (2 clips) |" in table
        and "| ArtifactWorld, paper Table 3 (1,284 clips) | 24.20 | 0.7547 | 0.2893 | 0.9663 | 33.92 |" in table
    )
    assert "LPIPS↓ unavailable:" in table and "| n/a | n/a | n/a |" in table


def test_frame_count_mismatch_is_reported_and_exit_status_2(tmp_path, empty_hub, capsys):
    pred, gt = tmp_path / "p", tmp_path / "g"
    pred.mkdir(), gt.mkdir()
    write_video(gt / "c.mp4", _clip(frames=6), 10)
    write_video(pred / "c.mp4", _clip(frames=4), 10)
    write_video(gt / "d.mp4", _clip(frames=4), 10)
    write_video(pred / "d.mp4", _clip(frames=4), 10)
    assert ev.run(["video", "--pred", str(pred), "--gt", str(gt), "--clip-model", str(tmp_path / "none")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "c.mp4: the prediction has 4 frames of 48x32 but the ground truth 6 frames of 48x32." in err


def test_no_common_files_and_missing_folder_are_one_sentence(tmp_path, capsys):
    (tmp_path / "p").mkdir(), (tmp_path / "g").mkdir()
    write_video(tmp_path / "p" / "x.mp4", _clip(frames=2), 10)
    assert ev.run(["video", "--pred", str(tmp_path / "p"), "--gt", str(tmp_path / "g")]) == 2
    assert "have no .mp4 file name in common." in " ".join(capsys.readouterr().err.split())
    assert ev.run(["video", "--pred", str(tmp_path / "missing"), "--gt", str(tmp_path / "g")]) == 2
    assert f"The --pred folder {tmp_path / 'missing'} does not exist." in " ".join(capsys.readouterr().err.split())


def test_frechet_distance_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 3, generator=g, dtype=torch.float64)
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Whitened a (sample covariance exactly I) and b = a * s + m: FD = |m - mean(a)|^2 + sum (1 - s)^2.
    a = a - a.mean(0)
    vals, vecs = torch.linalg.eigh(torch.cov(a.T))
    a = a @ vecs @ torch.diag(vals.rsqrt()) @ vecs.T
    s, m = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    b = a * s + m
    expected = float(m.pow(2).sum() + (1 - s).pow(2).sum())
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_exact_in_one_dimension():
    a = torch.tensor([[0.0], [1.0], [2.0], [3.0]], dtype=torch.float64)
    b = a * 3 + 5
    # mu: 1.5 vs 9.5; sigma: s vs 3 s -> FD = 64 + (2 s)^2 with s^2 = var(a).
    expected = 64.0 + 4 * float(a.var())
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


class _TinyDetector(torch.nn.Module):
    def forward(
        self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = True
    ) -> torch.Tensor:
        assert x.shape[1] == 3 and x.shape[-1] == 224
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def test_fvd_with_a_local_detector_is_set_level(folders, tmp_path, empty_hub):
    detector = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_TinyDetector()).save(str(detector))
    pred_dir, gt_dir = folders
    suite = metrics.MetricSuite.build(clip_model=None, fvd_model=detector)
    assert suite.i3d is not None and "fvd" not in suite.unavailable
    same = ev.evaluate_videos(gt_dir, gt_dir, suite)
    assert same["mean"]["fvd"] == pytest.approx(0.0, abs=1e-6)
    report = ev.evaluate_videos(pred_dir, gt_dir, suite)
    assert report["mean"]["fvd"] > 0 and all("fvd" not in v for v in report["per_clip"].values())
    missing = metrics.MetricSuite.build(clip_model=None, fvd_model=tmp_path / "absent.pt")
    assert "does not exist" in missing.unavailable["fvd"]


def test_clip_i_with_local_weights(tmp_path, empty_hub):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    suite = metrics.MetricSuite.build(clip_model=str(tmp_path / "clip"))
    assert suite.clip is not None and "clip_i" not in suite.unavailable
    clip = _clip()
    assert suite.score(clip, clip)["clip_i"] == pytest.approx(1.0, abs=1e-6)
    other = suite.score(_degrade(clip), clip)["clip_i"]
    assert -1 <= other < 1
    # No preprocessor_config.json: CLIP's own preprocessing at the model's input size.
    assert suite.clip.processor.crop_size["height"] == 32 and suite.clip.processor.size["shortest_edge"] == 32
    assert suite.clip.processor.image_mean == pytest.approx([0.48145466, 0.4578275, 0.40821073])


def test_clip_i_reads_the_model_folders_preprocessing(tmp_path, empty_hub):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8
    )
    CLIPVisionModelWithProjection(config).save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(tmp_path / "clip")
    suite = metrics.MetricSuite.build(clip_model=str(tmp_path / "clip"))
    assert list(suite.clip.processor.image_mean) == [0.5] * 3
    pixels = suite.clip.processor(images=[torch.ones(3, 24, 32)], do_rescale=False, return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 16, 16) and torch.allclose(pixels, torch.ones_like(pixels))
    clip = _clip()
    assert suite.score(clip, clip)["clip_i"] == pytest.approx(1.0, abs=1e-6)


def test_missing_scene_config_is_one_sentence(tmp_path, capsys):
    assert ev.run(["scene", "--load-config", str(tmp_path / "config.yml")]) == 2
    assert f"The config file {tmp_path / 'config.yml'} does not exist." in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_scene_eval_scores_every_eval_view(tmp_path_factory, tmp_path, empty_hub, capsys):
    from test_render import tiny_trained_run

    config = tiny_trained_run(tmp_path_factory.getbasetemp() / "aw_tiny_run")
    out = tmp_path / "scene.json"
    assert ev.run(["scene", "--load-config", str(config), "--out", str(out), "--compare-paper"]) == 0
    report = json.loads(out.read_text())
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    eval_dataset = pipeline.datamanager.eval_dataset
    assert report["count"] == len(eval_dataset) == len(report["per_view"]) > 0
    assert 5 < report["mean"]["psnr"] < 60 and 0 < report["mean"]["ssim"] <= 1
    assert report["mean"]["lpips"] is None and "lpips" in report["unavailable"]
    # One view recomputed by hand: render, then PSNR against its image.
    with torch.no_grad():
        rgb = pipeline.model.get_outputs_for_camera(eval_dataset.cameras[0:1])["rgb"].clamp(0, 1)
    gt = eval_dataset.get_image_float32(0)[..., :3]
    mse = float(((rgb - gt) ** 2).mean())
    first = next(iter(report["per_view"].values()))
    assert first["psnr"] == pytest.approx(-10 * math.log10(mse), rel=1e-4)
    table = out.with_suffix(".md").read_text()
    assert "| ArtifactWorld, paper Table 1, DL3DV 10% views | 27.14 | 0.8722 | 0.1498 |" in table


# ---------------------------------------------------------------------- per artifact type (labels.jsonl)

LABELLED_TYPES = {"a": ["Floaters"], "b": ["Floaters", "Cracks"], "c": ["Color", "Crack"]}  # "d" has no record


def _labelled_set(tmp_path):
    """bench/gt + bench/labels.jsonl (as aw-simulate writes them) and a folder of restored clips, each degraded
    by a different amount so the per-type means differ from the overall mean."""
    from artifactworld_ns.restorer import LABELS_FILE, ClipLabel, write_labels

    bench, pred = tmp_path / "bench", tmp_path / "restored"
    (bench / "gt").mkdir(parents=True), pred.mkdir()
    for seed, name in enumerate("abcd"):
        clean = _clip(seed=seed)
        write_video(bench / "gt" / f"{name}.mp4", clean, 10)
        g = torch.Generator().manual_seed(10 + seed)
        noisy = (clean + (0.02 + 0.05 * seed) * torch.randn(clean.shape, generator=g)).clamp(0, 1)
        write_video(pred / f"{name}.mp4", noisy, 10)
    labels = [
        ClipLabel(
            name=name,
            types=types,
            source="simulated",
            recipe="sparse-checkpoint",
            params={"frame_step": 8},
            metrics={"psnr": 18.0 + i, "ssim": 0.5 + 0.1 * i, "lpips": None},
        )
        for i, (name, types) in enumerate(LABELLED_TYPES.items())
    ]
    write_labels(bench / LABELS_FILE, labels)
    return pred, bench / "gt"


def _psnr_ssim(pred_path, gt_path) -> tuple[float, float]:
    """Per-clip PSNR (mean of per-frame) and SSIM with torchmetrics called directly."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    pred, _ = read_video(pred_path)
    gt, _ = read_video(gt_path)
    p, g = pred.permute(0, 3, 1, 2).double(), gt.permute(0, 3, 1, 2).double()
    psnr = torch.stack([peak_signal_noise_ratio(p[i : i + 1], g[i : i + 1], data_range=1.0) for i in range(len(p))])
    return float(psnr.mean()), float(structural_similarity_index_measure(p.float(), g.float(), data_range=1.0))


def test_per_type_rows_are_the_means_over_each_types_clips(tmp_path, empty_hub, capsys):
    pred_dir, gt_dir = _labelled_set(tmp_path)
    out = tmp_path / "eval.json"
    args = ["video", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(out), "--clip-model", "none"]
    assert ev.run(args) == 0
    report = json.loads(out.read_text())
    assert report["labels"] == str(gt_dir.parent / "labels.jsonl") and report["unlabelled"] == ["d.mp4"]
    # Canonical names, the paper's order; a clip with several types counts in each of them.
    assert list(report["per_type"]) == ["Floaters", "Cracks", "Color Outliers"]
    clips = {"Floaters": ["a", "b"], "Cracks": ["b", "c"], "Color Outliers": ["c"]}
    truth = {n: _psnr_ssim(pred_dir / f"{n}.mp4", gt_dir / f"{n}.mp4") for n in "abcd"}
    table = out.with_suffix(".md").read_text()
    for artifact_type, names in clips.items():
        row = report["per_type"][artifact_type]
        assert row["count"] == len(names) and row["clips"] == [f"{n}.mp4" for n in names]
        psnr = sum(truth[n][0] for n in names) / len(names)
        ssim = sum(truth[n][1] for n in names) / len(names)
        assert row["mean"]["psnr"] == pytest.approx(psnr, rel=1e-6)
        assert row["mean"]["ssim"] == pytest.approx(ssim, rel=1e-5)
        assert row["mean"]["lpips"] is None and row["mean"]["fvd"] is None
        # The labels' own artifact-vs-GT metrics over the same clips: the input the restorer started from.
        index = {"a": 0, "b": 1, "c": 2}
        assert row["input"]["psnr"] == pytest.approx(sum(18.0 + index[n] for n in names) / len(names))
        assert row["input"]["lpips"] is None
        count = f"{len(names)} clip{'s' if len(names) > 1 else ''}"
        assert f"| {artifact_type} ({count}) | {psnr:.2f} | {ssim:.4f} | n/a | n/a | n/a |" in table
    # The overall mean still covers every scored clip, the unlabelled one included.
    assert report["mean"]["psnr"] == pytest.approx(sum(v[0] for v in truth.values()) / 4, rel=1e-6)
    err = " ".join(capsys.readouterr().err.split())
    assert "1 scored clip(s) have no record in" in err and "overall mean only: d.mp4." in err


def test_per_type_fvd_is_over_the_types_clips(tmp_path, empty_hub):
    detector = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(_TinyDetector()).save(str(detector))
    pred_dir, gt_dir = _labelled_set(tmp_path)
    suite = metrics.MetricSuite.build(clip_model=None, fvd_model=detector)
    report = ev.evaluate_videos(pred_dir, gt_dir, suite)

    def features(folder, names):
        return torch.cat([suite.i3d(read_video(folder / f"{n}.mp4")[0]) for n in names])

    expected = metrics.frechet_distance(features(pred_dir, "bc"), features(gt_dir, "bc"))
    assert report["per_type"]["Cracks"]["mean"]["fvd"] == pytest.approx(expected, rel=1e-6)
    assert report["per_type"]["Cracks"]["mean"]["fvd"] != pytest.approx(report["mean"]["fvd"])
    assert report["per_type"]["Color Outliers"]["mean"]["fvd"] is None  # one clip: no distribution


def test_without_labels_there_are_no_per_type_rows(folders, empty_hub):
    pred_dir, gt_dir = folders
    report = ev.evaluate_videos(pred_dir, gt_dir, metrics.MetricSuite.build(clip_model=None))
    assert report["labels"] is None and report["per_type"] == {} and report["unlabelled"] == []
    rows = [line for line in ev.markdown_table(report).splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and rows[1].startswith("| this run (2 clips) |")  # the header and the mean row only


def test_a_bad_labels_file_is_one_sentence_naming_file_and_line(tmp_path, capsys):
    pred_dir, gt_dir = _labelled_set(tmp_path)
    labels = gt_dir.parent / "labels.jsonl"
    labels.write_text(labels.read_text() + '{"name": "d", "types": ["Smudges"], "source": "s", "recipe": "r"}\n')
    assert ev.run(["video", "--pred", str(pred_dir), "--gt", str(gt_dir), "--clip-model", "none"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{labels} line 4:" in err and "Traceback" not in err


def test_out_in_a_read_only_folder_is_one_sentence_before_scoring(folders, tmp_path, capsys, monkeypatch):
    import os
    from pathlib import Path

    pred_dir, gt_dir = folders
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access  # CI runs as root, whom permission bits do not stop
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode))

    def no_scoring(*args, **kwargs):
        raise AssertionError("nothing may be scored before --out is checked")

    monkeypatch.setattr(ev, "evaluate_videos", no_scoring)
    command = ["video", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(locked / "eval.json")]
    assert ev.run(command) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"The folder {locked} is not writable" in err and "choose a writable --out." in err
    assert "Traceback" not in err
    assert ev.run(["video", "--pred", str(pred_dir), "--gt", str(gt_dir), "--out", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err


def test_an_unavailable_metric_is_written_as_null_not_nan(tmp_path):
    report = {"kind": "video", "count": 1, "per_clip": {"a.mp4": {"psnr": 30.0, "lpips": math.nan}}}
    report["mean"] = {"psnr": 30.0, "ssim": None, "lpips": math.nan, "clip_i": None, "fvd": None}
    ev.write_report(report, tmp_path / "eval.json", compare_paper=False)
    text = (tmp_path / "eval.json").read_text()
    assert "NaN" not in text
    written = json.loads(text)  # strict parsers accept it
    assert written["mean"]["lpips"] is None and written["per_clip"]["a.mp4"] == {"psnr": 30.0, "lpips": None}


def test_ns_eval_gets_null_for_an_unavailable_metric_and_training_logs_leave_it_out(monkeypatch):
    from nerfstudio.pipelines.base_pipeline import VanillaPipeline

    from artifactworld_ns.pipeline import ArtifactWorldPipeline

    averages = {"psnr": 21.5, "psnr_std": 0.5, "lpips": math.nan, "lpips_std": math.nan}
    monkeypatch.setattr(VanillaPipeline, "get_average_eval_image_metrics", lambda self, *a, **k: dict(averages))
    pipeline = object.__new__(ArtifactWorldPipeline)
    for_ns_eval = pipeline.get_average_eval_image_metrics(output_path=None, get_std=True)
    assert json.dumps(for_ns_eval) == '{"psnr": 21.5, "psnr_std": 0.5, "lpips": null, "lpips_std": null}'
    assert pipeline.get_average_eval_image_metrics(step=100) == {"psnr": 21.5, "psnr_std": 0.5}


def test_ssim_is_scored_in_chunks_with_the_whole_clip_values():
    """A clip longer than one SSIM chunk gets the per-frame values torchmetrics gives for the whole clip at once
    (chunks bound the memory: a whole 89-frame 960x544 clip needs over 19 GB)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    from artifactworld_ns.metrics import SSIM_CHUNK_FRAMES, nchw, ssim_per_frame

    generator = torch.Generator().manual_seed(0)
    gt = torch.rand(2 * SSIM_CHUNK_FRAMES + 3, 24, 32, 3, generator=generator)
    pred = (gt + 0.1 * torch.randn(gt.shape, generator=generator)).clamp(0, 1)
    whole = structural_similarity_index_measure(nchw(pred), nchw(gt), data_range=1.0, reduction="none")
    chunked = ssim_per_frame(pred, gt)
    assert chunked.shape == (gt.shape[0],)
    assert torch.allclose(chunked, whole.double(), atol=1e-6)
    assert chunked.std() > 0  # the frames differ, so a chunk mix-up would show
