"""framework/report.py and report_plot.py on run folders written by hand (no training, no browser).

The report of a real run, opened in Chromium: tests/systems/test_report_page.py."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from framework import report, report_plot

SVG = "{http://www.w3.org/2000/svg}"


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(",".join(str(v) for v in row) for row in [header, *rows]) + "\n")
    return path


def points_of(svg_text: str) -> list[list[tuple[float, float]]]:
    """The (x, y) points of each polyline of an SVG chart (which must parse as XML)."""
    root = ElementTree.fromstring(svg_text)
    return [[tuple(map(float, p.split(","))) for p in line.get("points").split()] for line in root.iter(f"{SVG}polyline")]


def test_read_series_skips_empty_and_non_finite_cells(tmp_path):
    path = write_csv(tmp_path / "metrics.csv", ["epoch", "step", "train/loss", "train/loss_sds", "val/x"],
                     [[0, 0, 1.5, 1.0, ""], [0, 1, "nan", 0.5, ""], [0, "", 9, 9, 3], [0, 2, 0.75, "inf", ""]])
    series = report_plot.read_series(path)
    assert series == {"train/loss": [(0.0, 1.5), (2.0, 0.75)], "train/loss_sds": [(0.0, 1.0), (1.0, 0.5)]}
    assert report_plot.loss_names({"train/loss_b": [], "train/lambda_b": [], "train/loss": [], "train/loss_a": []}) == [
        "train/loss", "train/loss_a", "train/loss_b"]
    assert report_plot.read_series(tmp_path / "missing.csv") == {}


def test_a_curve_is_drawn_inside_its_frame_falling_where_the_loss_falls():
    points = [(float(s), 10.0 - 0.01 * s) for s in range(0, 500)]
    lines = points_of(report_plot.curve_svg("loss_sds", points))
    assert len(lines) == 2  # the values and their running mean
    raw = lines[0]
    assert len(raw) == len(points)
    xs, ys = [x for x, _ in raw], [y for _, y in raw]
    plot = (report_plot.LEFT, report_plot.WIDTH - report_plot.RIGHT, report_plot.TOP, report_plot.HEIGHT - report_plot.BOTTOM)
    assert min(xs) == pytest.approx(plot[0]) and max(xs) == pytest.approx(plot[1])
    assert min(ys) >= plot[2] - 1e-6 and max(ys) <= plot[3] + 1e-6
    assert ys[0] == pytest.approx(plot[3] - (plot[3] - plot[2])) and ys[-1] == pytest.approx(plot[3])  # top to bottom
    assert all(a < b for a, b in zip(xs, xs[1:]))


def test_curves_thin_long_series_and_take_a_log_axis_across_decades():
    long = [(float(s), 10.0 ** (-s / 2000)) for s in range(10_000)]  # 1 .. 1e-5
    text = report_plot.curve_svg("loss", long)
    raw = points_of(text)[0]
    assert len(raw) <= report_plot.MAX_POINTS + 1 and "log scale" in text
    xs, ys = np.array(raw).T
    fit = np.polyval(np.polyfit(xs, ys, 1), xs)
    assert np.abs(fit - ys).max() < 0.2  # exponential decay is a straight line on a log axis (coordinates to 0.1 px)
    assert ys[-1] - ys[0] > 100  # from top to bottom
    assert "log scale" not in report_plot.curve_svg("loss", [(0.0, 1.0), (1.0, 2.0)])
    assert "log scale" not in report_plot.curve_svg("loss", [(0.0, -1.0), (1.0, 1000.0)])  # not positive


@pytest.mark.parametrize("points", [[], [(3.0, 2.0)], [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)]])
def test_curves_of_empty_single_and_constant_series_are_valid_svg(points):
    text = report_plot.curve_svg("loss", points)
    root = ElementTree.fromstring(text)
    for line in points_of(text):
        assert all(np.isfinite(v) for p in line for v in p)
    if not points:
        assert "no data" in text
    assert root.get("width") == str(report_plot.WIDTH)


class Links(HTMLParser):
    """Every src and href of a page, and the text of its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]


def parsed(page: Path) -> Links:
    links = Links()
    links.feed(page.read_text())
    return links


def fake_finished_run(run: Path, prompt: str = "a red cube") -> Path:
    """A run folder with what a finished run writes (the GLB a real one, made with trimesh)."""
    import trimesh

    save = run / "save"
    (save / "export").mkdir(parents=True)
    (run / "configs").mkdir()
    (run / "configs" / "parsed.yaml").write_text(f"name: dreamfusion-toy\nmode: train\nsystem:\n  prompt: {prompt}\n")
    (run / "configs" / "overrides.yaml").write_text("- trainer.max_steps=4\n")
    (run / "metrics.json").write_text(json.dumps({"iou": 0.93, "chamfer": 0.012, "n_faces": 12.0, "total_seconds": 61.25}))
    write_csv(run / "csv_logs" / "metrics.csv", ["step", "train/loss", "train/loss_sds", "train/lambda_sds"],
              [[s, 2.0 / (s + 1), 1.0 / (s + 1), 1.0] for s in range(4)])
    for step in (2, 4):
        for view in range(2):
            Image.new("RGB", (96, 32), (200, 40 * view, 40)).save(save / f"it{step}-val-{view}.png")
    (save / "it4-test").mkdir()
    Image.new("RGB", (96, 32), (10, 200, 10)).save(save / "it4-test" / "0000.png")
    (save / "it4-test.mp4").write_bytes(b"not really a video")
    trimesh.creation.box().export(save / "export" / "model.glb")
    return run


def test_a_finished_runs_report_shows_each_part_with_links_that_resolve(tmp_path):
    run = fake_finished_run(tmp_path / "run@1")
    page = report.write_report(run)
    assert page == run / "report.html"
    text = page.read_text()
    assert "<h1>a red cube</h1>" in text and "Run done" not in text  # no status banner for a finished run
    assert "<th>iou</th><td>0.93</td>" in text and "<th>total_seconds</th><td>61.2 s</td>" in text and "<td>12</td>" in text
    assert "Validation views at step 4" in text and "earlier validation steps (1)" in text
    assert text.count("<svg") == 2 and "loss_sds" in text  # the total and the one term; the constant weight is not drawn
    assert "trainer.max_steps=4" in text and "prompt: a red cube" in text
    links = parsed(page)
    assert "model-viewer" in links.tags and "video" in links.tags
    for link in links.links:
        target = (run / unquote(link)).resolve()
        assert target.exists() and run.resolve() in [target, *target.parents], link  # relative, inside the run
    # the viewer's assets beside the report: model-viewer as shipped, with its licence, and the GLB as base64
    assert (run / "report_assets" / report.VIEWER_SCRIPT).read_bytes() == (report.PACKAGE_ASSETS / report.VIEWER_SCRIPT).read_bytes()
    assert "Apache License" in (run / "report_assets" / report.VIEWER_LICENSE).read_text()
    model = (run / "report_assets" / report.MODEL_SCRIPT).read_text()
    import base64

    encoded = re.search(r'"([A-Za-z0-9+/=]+)"', model)[1]
    assert base64.b64decode(encoded) == (run / "save/export/model.glb").read_bytes()


def test_a_failed_run_with_only_its_logs_gets_a_report_with_its_error(tmp_path):
    run = tmp_path / "failed"
    write_csv(run / "csv_logs" / "metrics.csv", ["step", "train/loss"], [[0, 1.0], [1, 0.5]])
    page = report.write_report(run, {"status": "failed", "exit_code": 3, "error": "loss_sds non-finite <at> step 2"})
    text = page.read_text()
    assert 'class="status failed"' in text and "exit code 3" in text and "loss_sds non-finite &lt;at&gt; step 2" in text
    assert "no exported mesh" in text and "no metrics.json" in text and "no configs/parsed.yaml" in text
    assert "<model-viewer" not in text and not (run / report.ASSETS_DIR).exists()
    assert text.count("<svg") == 1


def test_no_report_for_a_run_that_produced_nothing_and_none_raises(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "empty"
    (empty / "configs").mkdir(parents=True)
    assert report.write_report(empty) is None and not (empty / "report.html").exists()
    odd = tmp_path / "odd"
    (odd / "save" / "export" / "model.glb").mkdir(parents=True)  # a folder where the GLB should be: no mesh shown
    assert "no exported mesh" in report.write_report(odd).read_text()
    run = fake_finished_run(tmp_path / "run")

    def broken(save_dir):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(report, "validation_images", broken)
    assert report.write_report(run) is None and not (run / "report.html").exists()
    assert "note: no report.html written" in capsys.readouterr().err


def test_text_from_the_run_is_escaped(tmp_path):
    run = fake_finished_run(tmp_path / "run", prompt="'<script>alert(1)</script>'")
    text = report.write_report(run).read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)" in text


def test_the_command_rewrites_a_report_with_the_recorded_status(tmp_path, capsys):
    run = fake_finished_run(tmp_path / "run")
    (run / "status.json").write_text(json.dumps({"status": "stopped", "exit_code": 4, "step": 3, "resume": "python launch.py resume=x"}))
    assert report.main([str(run)]) == 0
    text = (run / "report.html").read_text()
    assert "Run stopped (exit code 4, at step 3)" in text and "python launch.py resume=x" in text
    assert report.main([str(tmp_path / "nowhere")]) == 2


def test_the_vendored_viewer_is_the_file_its_readme_names():
    import hashlib

    readme = (report.PACKAGE_ASSETS / "README.md").read_text()
    digest = hashlib.sha256((report.PACKAGE_ASSETS / report.VIEWER_SCRIPT).read_bytes()).hexdigest()
    assert f"sha256 {digest}" in readme
    head = (report.PACKAGE_ASSETS / report.VIEWER_SCRIPT).read_text()[:400]
    assert "@license" in head  # the licence headers are kept
