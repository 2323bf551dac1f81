"""A real browser for the page tests: Debian's Chromium driven through Playwright.

Headless Chromium has no GPU here; SwiftShader (ANGLE's CPU Vulkan/GL backend) gives it WebGL,
so three.js / model-viewer / viser pages render for real and a screenshot shows what a user sees.
`.ci/run` installs Chromium when it is missing (`apt-get install chromium`); where it can't be
installed the tests skip and say why. Playwright drives the system browser (`executable_path`),
so no browser download is needed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# WebGL without a GPU: ANGLE on SwiftShader. --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]


def chromium_path() -> str:
    """The Chromium executable ($TOY3D_CHROMIUM, else the first of CHROMIUM_NAMES on PATH), or skip with the reason."""
    explicit = os.environ.get("TOY3D_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine: `apt-get install chromium` (.ci/run does it when it can)")


@contextlib.contextmanager
def browser_page(width: int = 960, height: int = 720) -> Iterator["playwright.sync_api.Page"]:  # noqa: F821
    """A fresh page of headless Chromium (console errors collected in page.console_errors)."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.console_errors = []
            page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
            page.on("pageerror", lambda error: page.console_errors.append(str(error)))
            yield page
        finally:
            browser.close()


def image_spread(png: Path) -> float:
    """Standard deviation of a screenshot's pixel values (0 for a blank, single-colour image)."""
    from PIL import Image

    return float(np.asarray(Image.open(png).convert("RGB"), dtype=np.float32).std())


def pixel_difference(a: Path, b: Path) -> float:
    """Mean absolute difference of two same-size screenshots, in 0..255."""
    from PIL import Image

    first = np.asarray(Image.open(a).convert("RGB"), dtype=np.float32)
    second = np.asarray(Image.open(b).convert("RGB"), dtype=np.float32)
    return float(np.abs(first - second).mean())
