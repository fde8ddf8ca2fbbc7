"""The app in a real headless browser: Debian's chromium driven by Playwright.

``.ci/run`` installs chromium with apt and sets ``CI=true``: there a missing browser is a
failure, this being the test of what a visitor sees. On a developer's machine without
chromium (``CI`` unset) the test skips with a line naming the install command, so the
README's set-up plus ``pytest`` pass on a fresh machine. Set
``METAGNA_SCREENSHOT=docs/app.png`` to also write the screenshot that the README shows.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.app_server import running_app

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        message = (f"{CHROMIUM} not found: the browser test needs Debian's chromium "
                   "(sudo apt-get install chromium)")
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so this cannot be skipped")
        pytest.skip(message)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def test_upload_adapt_classify_in_the_browser(browser, trained_workdir, support_and_queries,
                                              tmp_path):
    support_dir, queries, truth = support_and_queries
    folders = sorted(support_dir.iterdir())
    with running_app("--workdir", trained_workdir) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(url)
        page.wait_for_selector("#adapt-button")
        for i, folder in enumerate(folders, start=1):
            page.locator(f"#class-name-{i} textarea, #class-name-{i} input").first.fill(
                folder.name)
            page.locator(f"#class-files-{i} input[type=file]").set_input_files(
                [str(p) for p in sorted(folder.iterdir())])
            # the thumbnails of what was uploaded
            expect(page.locator(f"#class-gallery-{i} img")).to_have_count(5, timeout=60_000)
        page.click("#adapt-button")
        summary = page.locator("#adapt-summary")
        expect(summary).to_contain_text("Adapted to 5 classes (25 images)", timeout=180_000)
        expect(summary).to_contain_text("support accuracy")
        page.locator("#query-files input[type=file]").set_input_files([str(q) for q in queries])
        page.wait_for_timeout(500)
        page.click("#classify-button")
        table = page.locator("#predictions")
        expect(table).to_contain_text(queries[-1].name, timeout=120_000)
        labels = []
        for query in queries:  # the grid's rows (the last match: a sticky copy may come first)
            row = table.get_by_role("row").filter(has_text=query.name).last
            cell = row.get_by_role("gridcell").nth(1).inner_text()
            labels.append(cell.rsplit(" (", 1)[0].strip())
        assert set(labels) <= {f.name for f in folders}
        assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 0.6 * len(truth)
        shot = tmp_path / "app.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("METAGNA_SCREENSHOT"):
            shutil.copy(shot, os.environ["METAGNA_SCREENSHOT"])

        # a bad upload shows its message on the page and the session goes on
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(b"\xff\xd8 definitely not a jpeg")
        page.locator("#class-files-5 input[type=file]").set_input_files([str(broken)])
        page.click("#adapt-button")
        expect(page.get_by_text("broken.jpg: not a readable image").first).to_be_visible(
            timeout=60_000)
        page.click("#classify-button")
        expect(table).to_contain_text(queries[0].name, timeout=60_000)
        page.close()
