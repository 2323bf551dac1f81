"""The sweep's page: `summary.html` beside summary.md, its runs side by side.

framework/sweep_summary.py `write` calls `write_page` with the rows it read. Each run is a card: a
picture of its result (the turntable's first frame, else its last validation image; framework/report.py
`thumbnail`), what this run changed (its own overrides), its status (a failed run is marked, with its exit
code and error), its metrics and wall time, and a link to its report.html. Below the cards the same
table as summary.md. Links are relative, so the sweep folder can move; the page needs no script.
"""
from __future__ import annotations

import time
from html import escape
from pathlib import Path
from typing import Any

from framework.report import REPORT_FILE, page, rel, thumbnail, value_text

HTML_FILE = "summary.html"

CARD_CSS = """
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 14px; margin-top: 16px; }
.card { background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 10px 12px 12px; }
.card.failed, .card.stopped, .card.unknown, .card.running { border-color: #e8a1a1; background: #fdf3f3; }
.card .thumb { display: block; width: 100%; aspect-ratio: 1 / 1; object-fit: cover; object-position: 0 0;
               background: #eef0f3; border-radius: 6px; image-rendering: pixelated; }
.card .nothumb { display: flex; align-items: center; justify-content: center; width: 100%; aspect-ratio: 1 / 1;
                 background: #f6e1e1; color: #9b2c2c; border-radius: 6px; font-weight: 600; }
.card h3 { font-size: 13px; margin: 8px 0 4px; word-break: break-word; }
.card .badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; background: #dcefe2; color: #1e6b3a; }
.card.failed .badge, .card.stopped .badge, .card.unknown .badge, .card.running .badge { background: #f6d3d3; color: #9b2c2c; }
.card .error { color: #9b2c2c; font-size: 12px; margin: 4px 0; word-break: break-word; }
.card table { width: 100%; font-size: 12px; margin-top: 6px; }
.card th { font-weight: 500; color: #4b5563; }
.wide { overflow-x: auto; }
table.summary { font-size: 12px; }
table.summary td.failed { color: #9b2c2c; font-weight: 600; }
"""


def write_page(folder: str | Path, rows: list[dict[str, Any]], metrics: list[str], common: list[str],
               header: list[str], cells: list[list[str]]) -> Path:
    """summary.html in `folder` for sweep_summary's `rows`, its metric names in order, the overrides common to
    every run, and its table (`header`, `cells`); returns the page's path."""
    folder = Path(folder)
    done = sum(r["status"] == "done" for r in rows)
    head = (f"<h1>Sweep {escape(folder.name)}</h1><p>{len(rows)} runs, {done} done, {len(rows) - done} failed or unfinished"
            f" · written {time.strftime('%Y-%m-%d %H:%M:%S')}</p>")
    fixed = f"<p>overrides of every run: {' '.join(f'<code>{escape(o)}</code>' for o in common)}</p>" if common else ""
    cards = '<div class="cards">' + "".join(card(folder, r, metrics, common) for r in rows) + "</div>"
    body = f'{fixed}{cards}<section><h2>Table</h2><div class="wide">{summary_table(header, cells)}</div></section>'
    path = folder / HTML_FILE
    path.write_text(page(f"Sweep {folder.name}", head, body, css=CARD_CSS), encoding="utf-8")
    return path


def card(folder: Path, row: dict[str, Any], metrics: list[str], common: list[str]) -> str:
    """One run: its picture (linked to its report when it has one), overrides, status, metrics, time."""
    run_dir = folder / row["run_dir"]
    report = run_dir / REPORT_FILE
    picture = thumbnail(run_dir)
    status = str(row["status"])
    if picture is not None:
        shown = f'<img class="thumb" src="{rel(picture, folder)}" alt="{escape(row["run_dir"])}">'
    else:
        shown = f'<div class="nothumb">{escape(status)}</div>'
    if report.is_file():
        shown = f'<a href="{rel(report, folder)}">{shown}</a>'
    own = " ".join(o.replace("\\ ", " ") for o in row["overrides"] if o not in common) or "no overrides"  # Hydra's `a\ red` shown as `a red`
    job = f"job {row['job']}: " if row["job"] is not None else ""
    code = f" · exit {row['exit_code']}" if row["exit_code"] not in (None, 0) else ""
    error = f'<p class="error">{escape(row["error"])}</p>' if row["error"] else ""
    values = [(k, row["metrics"][k]) for k in metrics if k in row["metrics"]]
    if row["seconds"] is not None:
        values.append(("total_seconds", float(row["seconds"])))
    table = "".join(f"<tr><th>{escape(k)}</th><td>{escape(value_text(k, v))}</td></tr>" for k, v in values)
    links = [f'<a href="{rel(report, folder)}">report</a>'] if report.is_file() else []
    links.append(f'<a href="{rel(run_dir, folder)}/">folder</a>')
    return (
        f'<div class="card {escape(status)}">{shown}<h3>{escape(job + own)}</h3>'
        f'<span class="badge">{escape(status)}{escape(code)}</span>{error}'
        f'<table>{table}</table><p class="caption">{escape(row["run_dir"])} · {" · ".join(links)}</p></div>'
    )


def summary_table(header: list[str], cells: list[list[str]]) -> str:
    """sweep_summary's table as HTML (the whole-overrides column left out, as in summary.md)."""
    status = header.index("status")
    head = "".join(f"<th>{escape(h)}</th>" for h in header[:-1])
    body = "".join(
        "<tr>" + "".join(
            f'<td class="{"failed" if i == status and c[i] != "done" else ""}">{escape(v)}</td>' for i, v in enumerate(c[:-1])
        ) + "</tr>"
        for c in cells
    )
    return f'<table class="summary"><tr>{head}</tr>{body}</table>'
