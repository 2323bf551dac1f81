"""framework/sweep_page.py: a sweep folder of job folders written by hand, its summary.html read as text
and in Chromium (tests/browser_support.py)."""
from __future__ import annotations

import json
from pathlib import Path

from framework import report, sweep_summary
from tests.browser_support import browser_page, image_spread
from tests.framework.test_report import fake_finished_run, parsed


def fake_sweep(folder: Path) -> Path:
    """Job 0 and 2 done (with reports), job 1 failed before it began (status.json only)."""
    for job, prompt in ((0, "a red cube"), (2, "a blue torus")):
        run = fake_finished_run(folder / f"{prompt.replace(' ', '_')}@1", prompt=prompt)
        (run / "configs" / "overrides.yaml").write_text(f"- seed=0\n- system.prompt={prompt}\n")
        (run / "status.json").write_text(json.dumps({"status": "done", "exit_code": 0, "job": job, "seconds": 12.5,
                                                     "overrides": ["seed=0", f"system.prompt={prompt}"]}))
        report.write_report(run)
    bad = folder / "a_pink_elephant@1"
    (bad / "configs").mkdir(parents=True)
    (bad / "status.json").write_text(json.dumps({"status": "failed", "exit_code": 2, "job": 1, "seconds": 1.0,
                                                 "error": "the toy world does not understand the prompt 'a pink elephant'",
                                                 "overrides": ["seed=0", "system.prompt=a pink elephant"]}))
    sweep_summary.write(folder, sweep_summary.collect(folder))
    return folder / "summary.html"


def test_summary_html_has_a_card_per_job_in_order_with_the_failed_one_marked(tmp_path):
    page = fake_sweep(tmp_path / "sweep")
    text = page.read_text()
    assert text.count('<div class="card ') == 3
    cards = text.split('<div class="card ')[1:]
    assert [c.split('"')[0] for c in cards] == ["done", "failed", "done"]
    assert "job 0: system.prompt=a red cube" in cards[0] and "job 1: system.prompt=a pink elephant" in cards[1]
    assert "exit 2" in cards[1] and "does not understand the prompt" in cards[1] and "report.html" not in cards[1]
    assert "a_red_cube%401/report.html" in cards[0] and "it4-test/0000.png" in cards[0]
    assert "<th>iou</th><td>0.93</td>" in cards[0] and "seed=0" in text.split('<div class="cards">')[0]  # said once, above
    for link in parsed(page).links:
        from urllib.parse import unquote

        assert (page.parent / unquote(link)).exists(), link


def test_summary_html_in_a_browser_shows_every_picture(tmp_path):
    page_file = fake_sweep(tmp_path / "sweep")
    with browser_page(1100, 800) as page:
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        pictures = page.eval_on_selector_all(".card img", "els => els.map(e => [e.complete, e.naturalWidth])")
        assert pictures == [[True, 96], [True, 96]]  # the two done jobs; the failed one has a placeholder
        assert page.locator(".card.failed .nothumb").inner_text().strip() == "failed"
        boxes = [page.locator(".card").nth(i).bounding_box() for i in range(3)]
        assert boxes[0]["y"] == boxes[1]["y"] == boxes[2]["y"] and boxes[0]["x"] < boxes[1]["x"] < boxes[2]["x"]  # side by side
        shot = tmp_path / "summary.png"
        page.screenshot(path=str(shot), full_page=True)
        assert image_spread(shot) > 10
        assert page.console_errors == []
