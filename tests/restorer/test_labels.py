"""restorer.labels: the data engine's per-clip label records (labels.jsonl)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from artifactworld_ns.restorer import (
    ARTIFACT_TYPES,
    LABELS_FILE,
    ClipLabel,
    LabelError,
    labels_beside,
    parse_artifact_types,
    read_labels,
    write_labels,
)
from artifactworld_ns.restorer import labels as labels_module


def _label(name: str = "garden_0003", **overrides) -> ClipLabel:
    values = dict(
        name=name,
        types=["Needles", "Floaters"],
        source="simulated",
        recipe="sparse-checkpoint",
        params={"frame_step": 8, "checkpoint_step": 7000, "strength": 0.2},
        scene="data/garden",
        frame_indices=[3, 4, 5, 6, 7, 8, 9, 10, 11],
        metrics={"psnr": 21.5, "ssim": 0.71, "lpips": 0.28},
    )
    values.update(overrides)
    return ClipLabel(**values)


def test_the_nine_types_are_the_papers_in_its_order() -> None:
    assert ARTIFACT_TYPES == (
        "Floaters",
        "Dilation",
        "Needles",
        "Cracks",
        "Aliasing",
        "Blurring",
        "Popping",
        "Ghosting",
        "Color Outliers",
    )


def test_write_then_read_round_trips_every_field(tmp_path: Path) -> None:
    labels = [
        _label(),
        _label(
            "fox_0000",
            types=["Color Outliers"],
            source="generated",
            recipe="world-model",
            params={"prompt": "color outliers", "seed": 3, "nested": {"a": [1, 2]}},
            scene=None,
            frame_indices=[],
            metrics={},
        ),
    ]
    path = tmp_path / LABELS_FILE
    write_labels(path, labels)
    assert read_labels(path) == labels
    assert len(path.read_text().splitlines()) == 2
    first = json.loads(path.read_text().splitlines()[0])
    assert list(first) == ["name", "types", "source", "recipe", "params", "scene", "frame_indices", "metrics"]
    assert first["types"] == ["Floaters", "Needles"]  # canonical order, not the given one


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Floater,Crack,Color", ["Floaters", "Cracks", "Color Outliers"]),  # the official labeler's names
        (["color outliers", "FLOATERS", "needles"], ["Floaters", "Needles", "Color Outliers"]),
        ("color-outliers, color_outliers ,Color Outliers", ["Color Outliers"]),
        (["Ghosting,Popping", "Aliasing"], ["Aliasing", "Popping", "Ghosting"]),
    ],
)
def test_parse_artifact_types_canonicalizes_aliases_case_and_order(given, expected) -> None:
    assert parse_artifact_types(given) == expected


def test_official_aliases_are_canonicalized_in_records() -> None:
    assert _label(types=["Crack", "Floater", "Color", "Cracks"]).types == ["Floaters", "Cracks", "Color Outliers"]


@pytest.mark.parametrize("given", ["Floaters,Smudges", ["Needles", "smudges"]])
def test_unknown_type_is_one_sentence_naming_it_and_the_nine(given) -> None:
    with pytest.raises(LabelError) as info:
        parse_artifact_types(given)
    message = str(info.value)
    assert "'Smudges'" in message or "'smudges'" in message
    assert all(name in message for name in ARTIFACT_TYPES)
    assert "\n" not in message and message.endswith(".")


def test_no_type_is_an_error() -> None:
    with pytest.raises(LabelError, match="No artifact type"):
        parse_artifact_types(" , ")


def test_bad_json_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    good = json.dumps(_label().to_dict())
    path.write_text(good + "\n\n" + '{"name": "x", "types": [\n' + good.replace("garden_0003", "other") + "\n")
    with pytest.raises(LabelError) as info:
        read_labels(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "not valid JSON" in message and "\n" not in message


@pytest.mark.parametrize(
    ("record", "fragment"),
    [
        ({"types": ["Floaters"], "source": "simulated", "recipe": "r", "params": {}}, "lacks the field 'name'"),
        ({"name": "a", "types": ["Smudges"], "source": "s", "recipe": "r", "params": {}}, "unknown artifact type"),
        ({"name": "a", "types": "Floaters", "source": "s", "recipe": "r", "params": {}}, "'types' must be a list"),
        ({"name": "a", "types": ["Floaters"], "source": "s", "recipe": "r", "params": {}, "metric": {}}, "'metric'"),
        (
            {"name": "a", "types": ["Floaters"], "source": "s", "recipe": "r", "params": {}, "metrics": {"psnr": "x"}},
            "psnr",
        ),
        ({"name": "a/b", "types": ["Floaters"], "source": "s", "recipe": "r", "params": {}}, "without folders"),
        ({"name": "a", "types": ["Floaters"], "source": "", "recipe": "r", "params": {}}, "source"),
        (
            {"name": "a", "types": ["Floaters"], "source": "s", "recipe": "r", "params": {}, "frame_indices": [-1]},
            "frame",
        ),
    ],
)
def test_bad_record_is_one_sentence_naming_the_file_and_line(tmp_path: Path, record: dict, fragment: str) -> None:
    path = tmp_path / LABELS_FILE
    path.write_text(json.dumps(_label().to_dict()) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(LabelError) as info:
        read_labels(path)
    message = str(info.value)
    assert message.startswith(f"{path} line 2: ") and fragment in message and "\n" not in message


def test_a_clip_given_twice_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    line = json.dumps(_label().to_dict())
    path.write_text(line + "\n" + line + "\n")
    with pytest.raises(LabelError, match="line 2 repeats the clip 'garden_0003' of line 1"):
        read_labels(path)
    with pytest.raises(LabelError, match="two label records"):
        write_labels(tmp_path / "other.jsonl", [_label(), _label()])
    assert not (tmp_path / "other.jsonl").exists()


def test_nan_metrics_and_params_are_written_as_null(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    label = _label(metrics={"psnr": float("nan"), "ssim": np.float32(0.5), "lpips": float("inf")})
    label.params["strength"] = float("nan")
    write_labels(path, [label])
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    assert record["metrics"] == {"psnr": None, "ssim": 0.5, "lpips": None}
    assert record["params"]["strength"] is None
    (back,) = read_labels(path)
    assert back.metrics["psnr"] is None and math.isclose(back.metrics["ssim"], 0.5)


def test_numpy_values_and_paths_are_stored_as_plain_json(tmp_path: Path) -> None:
    params = {"scale": np.float64(0.5), "root": Path("a/b"), "steps": np.array([1500, 12000]), "size": (4, 3)}
    label = _label(frame_indices=list(np.arange(3)), params=params)
    write_labels(tmp_path / LABELS_FILE, [label])
    (back,) = read_labels(tmp_path / LABELS_FILE)
    assert back.frame_indices == [0, 1, 2]
    assert back.params == {"scale": 0.5, "root": "a/b", "steps": [1500, 12000], "size": [4, 3]}


def test_write_is_atomic_an_old_file_survives_a_failed_write(tmp_path: Path) -> None:
    path = tmp_path / LABELS_FILE
    write_labels(path, [_label()])
    before = path.read_bytes()

    def records():
        yield _label("second")
        raise RuntimeError("the writer died")

    with pytest.raises(RuntimeError):
        write_labels(path, records())
    bad = _label("third")
    bad.params["model"] = object()  # not JSON
    with pytest.raises(LabelError, match="params.model"):
        write_labels(path, [_label("second"), bad])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [LABELS_FILE]


def test_write_goes_through_the_atomic_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    used: list[Path] = []
    real = labels_module.atomic_path

    def spy(path):
        used.append(Path(path))
        return real(path)

    monkeypatch.setattr(labels_module, "atomic_path", spy)
    write_labels(tmp_path / LABELS_FILE, [_label()])
    assert used == [tmp_path / LABELS_FILE]


def test_labels_beside_finds_the_file_in_the_folder_or_its_parent(tmp_path: Path) -> None:
    gt = tmp_path / "gt"
    gt.mkdir()
    assert labels_beside(gt) is None
    write_labels(tmp_path / LABELS_FILE, [_label()])
    assert labels_beside(gt) == tmp_path / LABELS_FILE
    assert labels_beside(tmp_path) == tmp_path / LABELS_FILE
    write_labels(gt / LABELS_FILE, [_label()])
    assert labels_beside(gt) == gt / LABELS_FILE


def test_missing_label_file_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(LabelError, match="does not exist"):
        read_labels(tmp_path / LABELS_FILE)
