"""The report of a finished run (framework/report.py), opened from its folder (file://) in headless Chromium
with SwiftShader's WebGL (tests/browser_support.py): the mesh is in model-viewer's scene, with the GLB's
triangles and size, it shows on screen, and the video, images and loss curves are there too."""
from __future__ import annotations

import shutil

import pytest

from tests.browser_support import browser_page, image_spread, pixel_difference

# model-viewer keeps its three.js scene under a private symbol; this finds it and counts the model's triangles
# (the shadow's two quads hang under its orthographic camera and are left out).
SCENE_TRIANGLES = """viewer => {
  for (const key of Object.getOwnPropertySymbols(viewer)) {
    const scene = viewer[key];
    if (scene && scene.isScene && typeof scene.traverse === 'function') {
      let triangles = 0;
      scene.traverse(o => { if (o.isMesh && !(o.parent && o.parent.isCamera)) triangles += (o.geometry.index ? o.geometry.index.count : o.geometry.attributes.position.count) / 3; });
      return triangles;
    }
  }
  return null;
}"""

FRAMES = "n => new Promise(done => { const next = k => k ? requestAnimationFrame(() => next(k - 1)) : done(); next(n); })"


def test_the_report_of_a_finished_run_shows_its_mesh(trained_run, tmp_path):
    trimesh = pytest.importorskip("trimesh")
    run_dir, _ = trained_run
    moved = tmp_path / "moved run"  # the folder can move: every link is relative (and a space is escaped)
    shutil.copytree(run_dir, moved)
    glb = trimesh.load(moved / "save/export/model.glb", force="mesh", process=False)  # as written, nothing merged
    with browser_page(1200, 900) as page:
        page.goto((moved / "report.html").as_uri())
        page.wait_for_function("() => document.getElementById('model').loaded === true", timeout=120_000)
        page.wait_for_function("() => document.getElementById('model').modelIsVisible === true", timeout=60_000)
        viewer = page.locator("#model")
        assert page.locator("#model .loading").is_hidden()  # the page's loading note gone once the model is in
        assert viewer.evaluate(SCENE_TRIANGLES) == len(glb.faces)
        size = viewer.evaluate("v => { const d = v.getDimensions(); return [d.x, d.y, d.z]; }")
        assert size == pytest.approx(list(glb.extents), rel=1e-3)
        page.evaluate(FRAMES, 10)
        shown, hidden = tmp_path / "report-model.png", tmp_path / "report-model-hidden.png"
        box = viewer.bounding_box()
        page.screenshot(path=str(shown), clip=box)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        viewer.evaluate("v => { v.style.visibility = 'hidden'; }")
        page.evaluate(FRAMES, 2)
        page.screenshot(path=str(hidden), clip=box)
        assert image_spread(shown) > 5, "the model-viewer screenshot is blank"
        assert pixel_difference(shown, hidden) > 3, "the model does not show"

        video = page.evaluate("() => { const v = document.getElementById('turntable'); return [v.error && v.error.code, v.readyState, v.videoWidth]; }")
        if video[1] < 2:
            page.wait_for_function("() => document.getElementById('turntable').readyState >= 2", timeout=30_000)
            video = page.evaluate("() => { const v = document.getElementById('turntable'); return [v.error && v.error.code, v.readyState, v.videoWidth]; }")
        assert video[0] is None and video[2] > 0, f"the turntable does not play: {video}"
        images = page.eval_on_selector_all(".views img", "els => els.map(e => e.complete && e.naturalWidth > 0)")
        assert images and all(images)
        assert page.locator("svg.curve").count() >= 1 and "loss_sds" in page.locator("svg.curve").first.inner_html() + page.content()
        assert page.console_errors == []
