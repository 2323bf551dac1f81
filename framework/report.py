"""The static report of a run: `<run>/report.html`, one page a browser opens straight from the folder.

    python -m framework.report outputs/dreamfusion-toy/a_red_cube@20261201-160000   # (re)write a run's report

framework/runner.py writes it at the end of every run (train, and the test / validate / export modes);
launch.py writes it too when a run failed or stopped after it began. It shows what the run folder holds,
each part only when its files are there:

- the metrics (`metrics.json`) and, for a failed or stopped run, its status and error;
- the exported GLB in Google's `<model-viewer>`, to turn and zoom, and the turntable video;
- the validation images of the last validation step (the earlier steps folded below);
- the loss curves of `csv_logs/metrics.csv` as inline SVG (framework/report_plot.py);
- the overrides and the resolved config (`configs/parsed.yaml`), links to the run's files.

Everything is relative to the run folder, which may be moved, and nothing is fetched from the network.
model-viewer's UMD bundle (three.js inside) is shipped in framework/report_assets/ (version and licence in
its README.md) and copied to `<run>/report_assets/`. A browser refuses module scripts and fetches on
file:// pages, so both come through classic scripts: the UMD bundle defines `<model-viewer>`, and the
GLB's bytes come as base64 (`report_assets/model.glb.js`), handed to model-viewer as a Blob URL. Served
over http the page works the same.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import sys
import time
from html import escape
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

import yaml

from framework.report_plot import CURVE_CSS, curve_svg, loss_names, read_series
from framework.run_directory import folder_argument, read_json, read_status

REPORT_FILE = "report.html"
ASSETS_DIR = "report_assets"
PACKAGE_ASSETS = Path(__file__).resolve().parent / "report_assets"
VIEWER_SCRIPT = "model-viewer-umd.min.js"  # @google/model-viewer's dist file, as published (report_assets/README.md)
VIEWER_LICENSE = "LICENSE-model-viewer"
MODEL_SCRIPT = "model.glb.js"  # the GLB as base64 in a classic script (written beside the report)

VALIDATION_IMAGE = re.compile(r"it(\d+)-val-(\d+)\.png$")
TEST_VIDEO = re.compile(r"it(\d+)-test\.mp4$")
TIMINGS = {"train_seconds", "total_seconds"}


def write_report(run_dir: str | os.PathLike, status: Optional[dict[str, Any]] = None) -> Optional[Path]:
    """Write `<run_dir>/report.html` (and its assets) and return its path; None when the run produced
    nothing to show. `status` is the run's ending as status.json records it ({"status": "failed",
    "error": ...}); None means the run has just finished. It never raises: a report that cannot be
    written is a note on stderr, not a failed run."""
    run_dir = Path(run_dir)
    try:
        if not produced_outputs(run_dir):
            return None
        page = render(run_dir, status or {"status": "done"})
        path = run_dir / REPORT_FILE
        tmp = run_dir / f".{REPORT_FILE}.{os.getpid()}"
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)
        return path
    except Exception as error:  # noqa: BLE001 - the run's own result matters more than its report
        print(f"note: no {REPORT_FILE} written in {run_dir} ({type(error).__name__}: {error})", file=sys.stderr, flush=True)
        return None


def produced_outputs(run_dir: Path) -> bool:
    """True when the run wrote anything a report shows (metrics, images, logs, a mesh)."""
    return (run_dir / "metrics.json").is_file() or (run_dir / "save").is_dir() or (run_dir / "csv_logs" / "metrics.csv").is_file()


# ---------------------------------------------------------------------------------------------- finding

def latest_config_dir(run_dir: Path) -> Path:
    """`configs/`, or the last `configs/resume-<k>/` of a run continued in its own folder."""
    resumed = [p for p in (run_dir / "configs").glob("resume-*") if p.name.split("-")[-1].isdigit()]
    return max(resumed, key=lambda p: int(p.name.split("-")[-1])) if resumed else run_dir / "configs"


def validation_images(save_dir: Path) -> dict[int, list[Path]]:
    """{step: [it<step>-val-<view>.png, ... by view]} of the validation images in `save_dir`."""
    found: dict[int, list[tuple[int, Path]]] = {}
    for path in save_dir.glob("it*-val-*.png"):
        match = VALIDATION_IMAGE.match(path.name)
        if match:
            found.setdefault(int(match[1]), []).append((int(match[2]), path))
    return {step: [p for _, p in sorted(views)] for step, views in sorted(found.items())}


def turntable(save_dir: Path) -> Optional[Path]:
    """The last test step's turntable video, it<step>-test.mp4, or None."""
    videos = [(int(m[1]), p) for p in save_dir.glob("it*-test.mp4") if (m := TEST_VIDEO.match(p.name))]
    return max(videos)[1] if videos else None


def thumbnail(run_dir: Path) -> Optional[Path]:
    """A picture of the run's result: the turntable's first frame, else the last validation image (both
    are RGB | normal | opacity panels side by side), or None."""
    save = run_dir / "save"
    video = turntable(save)
    if video is not None and (video.with_suffix("") / "0000.png").is_file():
        return video.with_suffix("") / "0000.png"
    images = validation_images(save)
    return images[max(images)][0] if images else None


def read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


# ---------------------------------------------------------------------------------------------- the page

def render(run_dir: Path, status: dict[str, Any]) -> str:
    """The whole page as text (the model-viewer assets are written to `<run_dir>/report_assets/`)."""
    configs = latest_config_dir(run_dir)
    config = read_yaml(configs / "parsed.yaml")
    config = config if isinstance(config, dict) else {}
    overrides = read_yaml(configs / "overrides.yaml")
    metrics = read_json(run_dir / "metrics.json") or {}
    save = run_dir / "save"
    glb = save / "export" / "model.glb"
    sections = [
        status_section(status),
        '<div class="row">' + model_section(run_dir, glb) + metrics_section(metrics) + "</div>",
        video_section(run_dir, turntable(save)),
        validation_section(run_dir, validation_images(save)),
        curves_section(run_dir / "csv_logs" / "metrics.csv"),
        config_section(run_dir, configs, overrides if isinstance(overrides, list) else []),
        files_section(run_dir),
    ]
    title = run_title(config, run_dir)
    subtitle = " · ".join(escape(str(x)) for x in (config.get("name"), config.get("mode"), run_dir.name) if x)
    head = f"<h1>{escape(title)}</h1><p>{subtitle} · report written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>"
    scripts = viewer_scripts(run_dir, glb) if glb.is_file() else ""
    return page(title, head, "".join(sections), scripts)


def run_title(config: dict[str, Any], run_dir: Path) -> str:
    """The prompt (text-to-3D) or the picture's name (image-to-3D), else the run folder's name."""
    system, data = config.get("system") or {}, config.get("data") or {}
    if isinstance(system, dict) and system.get("prompt"):
        return str(system["prompt"])
    if isinstance(data, dict) and data.get("image_path"):
        return Path(str(data["image_path"])).name
    return run_dir.name


def rel(path: Path, run_dir: Path) -> str:
    """A link from the report to `path`, relative so the folder can move (URL-escaped, forward slashes)."""
    return quote(Path(os.path.relpath(path, run_dir)).as_posix())


def status_section(status: dict[str, Any]) -> str:
    """Nothing for a finished run; a banner with the status, exit code and error for the others."""
    if status.get("status") == "done":
        return ""
    facts = [f"exit code {status['exit_code']}" if status.get("exit_code") is not None else "",
             f"at step {status['step']}" if status.get("step") is not None else ""]
    detail = ", ".join(f for f in facts if f)
    error = f"<pre>{escape(str(status.get('error')))}</pre>" if status.get("error") else ""
    resume = f"<p>to continue: <code>{escape(str(status['resume']))}</code></p>" if status.get("resume") else ""
    name = escape(str(status.get("status")))
    heading = f"Run {name} ({escape(detail)})" if detail else f"Run {name}"
    return f'<section class="status {name}"><h2>{heading}</h2>{error}{resume}</section>'


def value_text(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key in TIMINGS:
            return f"{value:.1f} s"
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def metrics_section(metrics: dict[str, Any]) -> str:
    if not metrics:
        return '<section class="metrics"><h2>Metrics</h2><p class="missing">no metrics.json: the run ended before it exported</p></section>'
    ordered = [k for k in metrics if k not in TIMINGS] + [k for k in metrics if k in TIMINGS]  # the scores first
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(value_text(k, metrics[k]))}</td></tr>" for k in ordered)
    return f'<section class="metrics"><h2>Metrics</h2><table>{rows}</table></section>'


def model_section(run_dir: Path, glb: Path) -> str:
    if not glb.is_file():
        return '<section class="model"><h2>Mesh</h2><p class="missing">no exported mesh (save/export/model.glb)</p></section>'
    return (
        '<section class="model"><h2>Mesh</h2>'
        '<model-viewer id="model" camera-controls auto-rotate loading="eager" reveal="auto" shadow-intensity="0.6" '
        'exposure="1.0" alt="the exported mesh"><div slot="progress-bar" class="loading">loading the mesh…</div></model-viewer>'
        f'<p class="caption">save/export/model.glb (glTF, +y up) · drag to turn, scroll to zoom · '
        f'<a href="{rel(glb, run_dir)}">download the GLB</a></p></section>'
    )


def video_section(run_dir: Path, video: Optional[Path]) -> str:
    if video is None:
        return ""
    link = rel(video, run_dir)
    return (
        f'<section><h2>Turntable</h2><video id="turntable" src="{link}" controls loop muted autoplay playsinline></video>'
        f'<p class="caption">{escape(video.name)}: RGB | normal | opacity · <a href="{link}">the mp4</a></p></section>'
    )


def image_row(run_dir: Path, images: list[Path], lazy: bool) -> str:
    attrs = ' loading="lazy"' if lazy else ""
    return "".join(
        f'<a href="{rel(p, run_dir)}"><img src="{rel(p, run_dir)}" alt="{escape(p.name)}" title="{escape(p.name)}"{attrs}></a>'
        for p in images
    )


def validation_section(run_dir: Path, images: dict[int, list[Path]]) -> str:
    if not images:
        return ""
    last = max(images)
    earlier = [s for s in images if s != last]
    history = ""
    if earlier:
        rows = "".join(f'<div class="step"><span>step {s}</span>{image_row(run_dir, images[s], lazy=True)}</div>' for s in reversed(earlier))
        history = f"<details><summary>earlier validation steps ({len(earlier)})</summary>{rows}</details>"
    return (
        f'<section><h2>Validation views at step {last}</h2><div class="views">{image_row(run_dir, images[last], lazy=False)}</div>'
        f'<p class="caption">each view: RGB | normal | opacity</p>{history}</section>'
    )


def curves_section(csv_path: Path) -> str:
    series = read_series(csv_path)
    names = loss_names(series)
    if not names:
        return ""
    others = [k for k in series if k.startswith("train/") and k not in names and len({v for _, v in series[k]}) > 1]
    charts = "".join(curve_svg(k.removeprefix("train/"), series[k]) for k in names)
    more = ""
    if others:
        more = f'<details><summary>other logged values ({len(others)})</summary><div class="curves">' \
               + "".join(curve_svg(k.removeprefix("train/"), series[k]) for k in others) + "</div></details>"
    return f'<section><h2>Losses</h2><div class="curves">{charts}</div>{more}</section>'


def config_section(run_dir: Path, configs: Path, overrides: list[Any]) -> str:
    parsed = configs / "parsed.yaml"
    given = "".join(f"<code>{escape(str(o))}</code> " for o in overrides) or "none"
    try:
        text = f'<pre class="config">{escape(parsed.read_text())}</pre>'
    except OSError:
        text = '<p class="missing">no configs/parsed.yaml</p>'
    return (
        f'<section><h2>Config</h2><p>command-line overrides: {given}</p>'
        f'<details open><summary><a href="{rel(parsed, run_dir)}">{escape(os.path.relpath(parsed, run_dir))}</a> '
        f"(resolved)</summary>{text}</details></section>"
    )


def files_section(run_dir: Path) -> str:
    wanted = [*sorted((run_dir / "save" / "export").glob("*")), run_dir / "ckpts" / "last.ckpt",
              run_dir / "metrics.json", run_dir / "status.json", run_dir / "csv_logs" / "metrics.csv"]
    links = "".join(f'<li><a href="{rel(p, run_dir)}">{escape(os.path.relpath(p, run_dir))}</a></li>' for p in wanted if p.is_file())
    return f'<section><h2>Files</h2><ul class="files">{links}</ul></section>' if links else ""


# ---------------------------------------------------------------------------------------------- model-viewer

def viewer_scripts(run_dir: Path, glb: Path) -> str:
    """model-viewer and the GLB for the page, as classic scripts in `<run_dir>/report_assets/` (they load from
    file:// too), then the lines that give the viewer the model's bytes."""
    assets = run_dir / ASSETS_DIR
    assets.mkdir(exist_ok=True)
    for name in (VIEWER_SCRIPT, VIEWER_LICENSE):
        shutil.copyfile(PACKAGE_ASSETS / name, assets / name)
    (assets / MODEL_SCRIPT).write_text(
        "window.toy3dModel = \"" + base64.b64encode(glb.read_bytes()).decode("ascii") + "\";\n", encoding="ascii"
    )
    return (
        f'<script src="{ASSETS_DIR}/{VIEWER_SCRIPT}"></script><script src="{ASSETS_DIR}/{MODEL_SCRIPT}"></script>'
        "<script>" + START_VIEWER + "</script>"
    )


# The GLB's bytes become a Blob URL for model-viewer's src (a file:// page may not fetch model.glb itself).
START_VIEWER = """
(function () {
  const viewer = document.getElementById('model');
  const bytes = Uint8Array.from(atob(window.toy3dModel), function (c) { return c.charCodeAt(0); });
  viewer.addEventListener('load', function () { viewer.querySelector('.loading').hidden = true; });
  viewer.src = URL.createObjectURL(new Blob([bytes], {type: 'model/gltf-binary'}));
})();
"""


# ---------------------------------------------------------------------------------------------- layout

PAGE_CSS = """
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f3f5f8; }
header { background: #1d2330; color: #f3f5f8; padding: 14px 28px; }
header h1 { margin: 0; font-size: 22px; font-weight: 600; }
header p { margin: 2px 0 0; color: #aeb6c4; font-size: 13px; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 28px 32px; }
section { background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 12px 18px 16px; margin: 16px 0; }
h2 { font-size: 15px; margin: 2px 0 10px; }
.row { display: grid; grid-template-columns: minmax(0, 3fr) minmax(0, 2fr); gap: 16px; }
.row > section { margin: 16px 0 0; }
model-viewer .loading { position: absolute; left: 12px; top: 10px; color: #6b7280; font-size: 12px; }
model-viewer { display: block; width: 100%; height: 440px; background: radial-gradient(#ffffff, #e6e9ef); border-radius: 6px; }
video { display: block; width: 100%; max-width: 1080px; max-height: 360px; background: #fff; }
.views img, .step img { height: 160px; image-rendering: pixelated; border: 1px solid #e3e6eb; margin: 0 8px 8px 0; }
.step img { height: 72px; }
.step span { display: inline-block; width: 88px; color: #6b7280; vertical-align: top; }
.curves { display: flex; flex-wrap: wrap; gap: 10px; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: 4px 14px 4px 0; border-bottom: 1px solid #eef0f3; vertical-align: top; }
.metrics th { font-weight: 500; color: #4b5563; }
.metrics td { font-variant-numeric: tabular-nums; }
pre { background: #f6f7f9; border: 1px solid #e3e6eb; border-radius: 6px; padding: 10px; overflow: auto; font-size: 12px; }
pre.config { max-height: 520px; }
code { background: #eef0f3; border-radius: 4px; padding: 1px 4px; font-size: 12px; }
.caption, .missing { color: #6b7280; font-size: 12px; margin: 6px 0 0; }
details summary { cursor: pointer; margin: 8px 0; color: #374151; }
.status.failed { border-color: #e8a1a1; background: #fdf3f3; }
.status.stopped, .status.stopping { border-color: #e8cf8f; background: #fdf9ee; }
ul.files { columns: 2; margin: 0; }
a { color: #1f4fbf; }
"""


def page(title: str, head: str, body: str, scripts: str = "", css: str = "") -> str:
    """A whole HTML page: the header, the body's sections, then the scripts (the sweep page uses it too)."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{PAGE_CSS}{CURVE_CSS}{css}</style></head>"
        f"<body><header>{head}</header><main>{body}</main>{scripts}</body></html>\n"
    )


def main(argv: list[str]) -> int:
    run_dir = folder_argument(argv, "python -m framework.report <run directory>")
    if run_dir is None:
        return 2
    path = write_report(run_dir, read_status(run_dir))
    if path is None:
        print(f"error: {run_dir} holds no run outputs (metrics.json, save/, csv_logs/)", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
