"""The viewer as a user sees it: a real headless Chromium presses the ArtifactWorld restore button."""

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
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_restore_button_grows_the_bank(viewer_run):
    from playwright.sync_api import sync_playwright

    url, bank_file, folder = viewer_run
    wait_until(lambda: page_is_served(url), 240, f"the viewer at {url}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
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
