"""The viewer as a user sees it: a real headless Chromium presses the ArtifactWorld restore button while
training, and shows the bank's frustums of a finished run under ``ns-viewer --load-config``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"  # Debian's build, installed by scripts/setup-browser.sh (make test)
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def page_is_served(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def bank_views(bank_file: Path) -> int:
    try:
        return len(json.loads(bank_file.read_text())["views"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture
def viewer_run(small_demo_scene, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "ARTIFACTWORLD_CACHE": str(tmp_path / "cache"),
    }
    command = [
        str(Path(sys.executable).parent / "ns-train"),
        "artifactworld-tiny",
        "--data",
        str(small_demo_scene),
        "--machine.device-type",
        "cpu",
        "--pipeline.datamanager.train-view-ratio",
        "0.34",
        "--pipeline.restore-steps",
        "99990",
        "--max-num-iterations",
        "100000",
        "--vis",
        "viewer",
        "--viewer.websocket-host",
        "127.0.0.1",
        "--viewer.websocket-port",
        str(port),
        "--output-dir",
        str(tmp_path / "out"),
        "--experiment-name",
        "viewer",
        "--timestamp",
        "run",
    ]
    log = open(tmp_path / "ns-train.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield (
            f"http://127.0.0.1:{port}",
            tmp_path / "out" / "viewer" / "artifactworld-tiny" / "run" / "bank" / "bank.json",
            tmp_path,
        )
    finally:
        stop_process(process)
        log.close()


def test_restore_button_grows_the_bank(viewer_run):
    from playwright.sync_api import sync_playwright

    url, bank_file, folder = viewer_run
    wait_until(lambda: page_is_served(url), 240, f"the viewer at {url}")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            button = page.get_by_role("button", name="ArtifactWorld: run restoration round")
            button.wait_for(timeout=120_000)
            assert page.get_by_text("ArtifactWorld: generated-view loss weight (lambda)").count() >= 1
            assert page.get_by_text("ArtifactWorld: show bank cameras").count() >= 1
            assert bank_views(bank_file) == 0
            button.click()
            views = wait_until(lambda: bank_views(bank_file), 300, "the restoration round to fill the bank")
            assert views == 2 * 15  # two clips of 17 frames, the inner 15 of each
            page.get_by_text("ArtifactWorld: show bank cameras").click()
            page.wait_for_timeout(3000)
            page.screenshot(path=str(folder / "viewer.png"))
        finally:
            browser.close()
    assert (folder / "viewer.png").stat().st_size > 10_000


def settled_view(page, unlike=None, timeout: float = 120):
    """The 3D view (the viewer's scene canvas) as an ``[H, W, 3]`` int array, once two shots 2 s apart agree
    (the viewer renders at a low resolution first, then refines) and, if ``unlike`` is given, once it
    differs from that view in more than 500 pixels."""
    import io

    import numpy as np
    from PIL import Image

    canvas = page.locator("canvas").last  # the scene; the first canvas is the page's background

    def shot():
        return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)

    def changed(a, b) -> int:
        return int((np.abs(a - b).sum(-1) > 30).sum()) if a.shape == b.shape else a.size

    previous = shot()

    def settled():
        nonlocal previous
        page.wait_for_timeout(2000)
        current = shot()
        done = changed(current, previous) < 50 and (unlike is None or changed(current, unlike) > 500)
        previous = current
        return (current,) if done else None  # a tuple: wait_until tests truth, and an array has none

    what = "the viewer's render to settle" + (" with a change" if unlike is not None else "")
    return wait_until(settled, timeout, what)[0]


@pytest.fixture
def finished_run_viewer(small_demo_scene, tmp_path, monkeypatch):
    """A finished run with one restoration round, opened with ``ns-viewer --load-config``."""
    import conftest

    monkeypatch.setenv("ARTIFACTWORLD_CACHE", str(tmp_path / "cache"))
    trainer = conftest.tiny_trainer(
        small_demo_scene, tmp_path / "out", steps=10, restore_steps=(5,), train_view_ratio=0.34
    )
    trainer.train()
    assert len(trainer.pipeline.datamanager.bank) == 30
    port = free_port()
    command = [
        str(Path(sys.executable).parent / "ns-viewer"),
        "--load-config",
        str(trainer.base_dir / "config.yml"),
        "--viewer.websocket-host",
        "127.0.0.1",
        "--viewer.websocket-port",
        str(port),
    ]
    log_file = tmp_path / "ns-viewer.log"
    log = open(log_file, "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        yield f"http://127.0.0.1:{port}", log_file, tmp_path
    finally:
        stop_process(process)
        log.close()


def test_viewer_after_training_shows_the_bank_and_says_rounds_need_training(finished_run_viewer):
    from playwright.sync_api import sync_playwright

    url, log_file, folder = finished_run_viewer
    wait_until(lambda: page_is_served(url), 240, f"the viewer at {url}")
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            checkbox = page.get_by_text("ArtifactWorld: show bank cameras")
            checkbox.wait_for(timeout=120_000)
            before = settled_view(page)
            checkbox.click()
            wait_until(lambda: "views of the pseudo-view bank" in log_file.read_text(), 60, "the bank to load")
            after = settled_view(page, unlike=before)  # times out if nothing is drawn
            page.screenshot(path=str(folder / "viewer-bank.png"))

            page.get_by_role("button", name="ArtifactWorld: run restoration round").click()
            note = page.get_by_text("Restoration rounds run only during training")
            note.first.wait_for(timeout=30_000)
        finally:
            browser.close()
    assert "showing the 30 views of the pseudo-view bank in" in " ".join(log_file.read_text().split())
    # what appeared (a strip of 30 small frustums with thumbnails) is drawn in the bank's orange
    changed = abs(after - before).sum(-1) > 30
    warmth = [(view[..., 0] - view[..., 2])[changed].mean() for view in (before, after)]  # red minus blue
    assert warmth[1] > warmth[0] + 15, warmth
