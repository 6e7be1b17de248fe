"""aw-gate: the Q-Align labeler's output (official format, written by hand from tools/infer_q_align.py's schema)
and the model-free metric gate; bad labeler files get one sentence each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import wave_clip

from artifactworld_ns.restorer import ClipLabel, write_labels
from artifactworld_ns.restorer.flywheel import cli_gate
from artifactworld_ns.restorer.flywheel.gate import MetricBands, clip_measures, judge_metrics
from artifactworld_ns.restorer.flywheel.qalign import QAlignError, match_clips, read_qalign_labels
from artifactworld_ns.restorer.video_io import write_video

LABELER_NAMES = ("Aliasing", "Blurring", "Color", "Crack", "Dilation", "Floater", "Ghosting", "Needles", "Popping")


def entry(video: str, yes: dict[str, float]) -> dict:
    """One entry as tools/infer_q_align.py's entry_from_result writes it (all nine types asked)."""
    return {
        "video": video,
        "artifacts": {
            name: {
                "prediction": "Yes" if yes.get(name, 0.1) > 0.5 else "No",
                "prob_yes": yes.get(name, 0.1),
                "prob_no": 1 - yes.get(name, 0.1),
            }
            for name in LABELER_NAMES
        },
    }


def clean(phase: float = 0.0) -> torch.Tensor:
    return wave_clip(9, 32, 32, phases=(phase, phase, phase))


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """Three generated clips: a mild degradation, an untouched copy, and a mild one with one black frame."""
    root = tmp_path / "generated"
    g = torch.Generator().manual_seed(0)
    base = clean()
    mild = (base + 0.06 * torch.randn(base.shape, generator=g)).clamp(0, 1)
    broken = mild.clone()
    broken[5] = 0.0
    clips = {"mild": mild, "same": base, "broken": broken}
    for name, artifact in clips.items():
        write_video(root / "gt" / f"{name}.mp4", base, 24, crf=0)
        write_video(root / "artifact" / f"{name}.mp4", artifact, 24, crf=0)
    types = {"mild": ["Floaters", "Cracks"], "same": ["Color Outliers"], "broken": ["Blurring"]}
    write_labels(root / "labels.jsonl", [ClipLabel(n, t, "generated", "world-model", {}) for n, t in types.items()])
    return root


def gate_records(root: Path) -> dict[str, dict]:
    return {r["name"]: r for r in map(json.loads, (root / "gate.jsonl").read_text().splitlines())}


def test_metric_gate_keeps_the_degraded_clip_and_says_why_it_drops_the_others(out, capsys):
    assert cli_gate.main([str(out)]) == 0
    records = gate_records(out)
    assert records["mild"]["kept"] and records["mild"]["judge"] == "metrics"
    assert not records["same"]["kept"] and "too weak" in records["same"]["reason"]
    assert not records["broken"]["kept"] and "temporal breakdown" in records["broken"]["reason"]
    assert "frame 5" in records["broken"]["reason"]
    assert "kept 1 of 3 clips" in " ".join(capsys.readouterr().out.split())


def test_metric_bands_both_sides():
    base = clean()
    still = torch.randn(base.shape[1:], generator=torch.Generator().manual_seed(1))  # the same noise in every frame
    noisy = (base + 0.5 * still).clamp(0, 1)
    measures = clip_measures(noisy, base, lpips=False)
    record = judge_metrics("x", [], measures, MetricBands())
    assert not record.kept and "destructive" in record.reason and measures["psnr"] < 15
    assert judge_metrics("x", [], measures, MetricBands(psnr=(5, 40), ssim=(0.0, 1.0))).kept


def test_qalign_gate_reads_the_merged_file_and_thresholds_every_requested_type(out, tmp_path):
    labels = {
        "total_videos": 3,
        "successful": 3,
        "results": [
            entry("/gpu/box/generated/artifact/mild.mp4", {"Floater": 0.9, "Crack": 0.8}),  # both confirmed
            entry("/gpu/box/generated/artifact/same.mp4", {"Color": 0.3}),  # No
            entry("/gpu/box/generated/gt/broken.mp4", {"Blurring": 0.99}),  # the GT video: never taken for the clip
            entry("/gpu/box/generated/artifact/broken.mp4", {"Blurring": 0.7}),
        ],
    }
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels, indent=2))
    assert cli_gate.main([str(out), "--labels-json", str(path)]) == 0
    records = gate_records(out)
    assert records["mild"]["kept"] and records["mild"]["judge"] == "q-align"
    assert not records["same"]["kept"] and "Color Outliers (prob_yes 0.30)" in records["same"]["reason"]
    assert records["broken"]["kept"]
    assert cli_gate.main([str(out), "--labels-json", str(path), "--threshold", "0.75"]) == 0
    assert not gate_records(out)["broken"]["kept"]  # 0.7 < 0.75


def test_single_video_and_shard_shapes_read_alike(tmp_path):
    one = entry("a/artifact/x.mp4", {"Needles": 0.9})
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "shard_gpu0.json").write_text(json.dumps([one]))
    a, b = read_qalign_labels(tmp_path / "one.json"), read_qalign_labels(tmp_path / "shard_gpu0.json")
    assert a == b and a[0].types["Needles"].prediction and a[0].types["Color Outliers"].prob_yes == pytest.approx(0.1)
    matched, stray = match_clips(a, ["x", "y"])
    assert set(matched) == {"x"} and stray == []


def one_sentence(text: str) -> str:
    line = " ".join(text.split())
    assert line.startswith("error:") and line.count(". ") == 0 and "Traceback" not in text, text
    return line


def test_bad_labeler_files_get_one_sentence_each(out, tmp_path, capsys):
    bad_name = [entry("g/artifact/mild.mp4", {})]
    bad_name[0]["artifacts"]["Sparkles"] = {"prediction": "Yes", "prob_yes": 0.9, "prob_no": 0.1}
    bad_prob = [entry("g/artifact/mild.mp4", {"Floater": 1.7})]
    bad_prob[0]["artifacts"]["Floater"]["prob_no"] = -0.7
    for case, data, needle in (
        ("name", bad_name, "unknown artifact type 'Sparkles'"),
        ("prob", bad_prob, "prob_yes of Floater for g/artifact/mild.mp4 is 1.7, not a probability between 0 and 1"),
    ):
        path = tmp_path / f"{case}.json"
        path.write_text(json.dumps(data))
        capsys.readouterr()
        assert cli_gate.main([str(out), "--labels-json", str(path)]) == 2
        assert needle in one_sentence(capsys.readouterr().err)
        assert not (out / "gate.jsonl").exists()  # refused before judging anything
    with pytest.raises(QAlignError, match="names no video"):
        (tmp_path / "novideo.json").write_text(json.dumps([{"artifacts": {}}]))
        read_qalign_labels(tmp_path / "novideo.json")

    # a clip the labeler never saw: judged as dropped, named at the end in one sentence, exit status 2
    missing = tmp_path / "missing.json"
    missing.write_text(
        json.dumps(
            [entry("g/artifact/mild.mp4", {"Floater": 0.9, "Crack": 0.9}), entry("g/artifact/same.mp4", {"Color": 0.9})]
        )
    )
    capsys.readouterr()
    assert cli_gate.main([str(out), "--labels-json", str(missing)]) == 2
    said = " ".join(capsys.readouterr().out.split())
    assert f"broken.mp4: the labeler file {missing} has no entry for artifact/broken.mp4" in said
    records = gate_records(out)
    assert records["mild"]["kept"] and records["same"]["kept"] and not records["broken"]["kept"]
