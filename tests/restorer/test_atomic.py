"""restorer.atomic: a file or folder appears under its final name complete or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from artifactworld_ns.restorer.atomic import atomic_folder, atomic_path


def test_atomic_path_replaces_on_success_and_removes_the_temporary_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.mp4"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".") and tmp.suffix == ".mp4"
        tmp.write_bytes(b"old")
    assert target.read_bytes() == b"old"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and [p.name for p in target.parent.iterdir()] == ["x.mp4"]


def test_atomic_folder_replaces_an_older_folder_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "scene"
    for content in ("first", "second"):
        with atomic_folder(target) as staging:
            assert staging.parent == tmp_path and staging.name.startswith(".") and not any(staging.iterdir())
            (staging / content).write_text(content)
    assert [p.name for p in target.iterdir()] == ["second"]
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as staging:
            (staging / "partial").write_text("")
            raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["scene"] and [p.name for p in target.iterdir()] == ["second"]
