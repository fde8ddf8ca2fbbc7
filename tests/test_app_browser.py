"""The app in a real headless browser: Debian's chromium driven by Playwright.

``.ci/run`` installs chromium with apt and sets ``CI=true``: there a missing browser is a
failure, this being the test of what a visitor sees. On a developer's machine without
chromium (``CI`` unset) the test skips with a line naming the install command, so the
README's set-up plus ``pytest`` pass on a fresh machine. The README's screenshot is made
by ``tools/screenshot_app.py``, whose steps the second test runs on the tests' model.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.app_server import REPO, running_app
from tools.screenshot_app import (
    CHROMIUM,
    VIEWPORT,
    file_names_shown,
    launch_chromium,
    screenshot,
    top_class,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        message = (f"{CHROMIUM} not found: the browser test needs Debian's chromium "
                   "(sudo apt-get install chromium)")
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI is set, so this cannot be skipped")
        pytest.skip(message)
    with sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def test_upload_adapt_classify_in_the_browser(browser, trained_workdir, support_and_queries,
                                              tmp_path):
    support_dir, queries, truth = support_and_queries
    folders = sorted(support_dir.iterdir())
    with running_app("--workdir", trained_workdir) as url:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("#adapt-button")
        for i, folder in enumerate(folders, start=1):
            page.locator(f"#class-name-{i} textarea, #class-name-{i} input").first.fill(
                folder.name)
            # names as long as a phone's, wider than the class's column
            uploads = tmp_path / "uploads" / folder.name
            uploads.mkdir(parents=True)
            files = [shutil.copy(p, uploads / f"{folder.name}__{p.name}")
                     for p in sorted(folder.iterdir())]
            page.locator(f"#class-files-{i} input[type=file]").set_input_files(files)
            # the thumbnails of what was uploaded
            expect(page.locator(f"#class-gallery-{i} img")).to_have_count(5, timeout=60_000)
            # and every file name readable in full in the class's list (not ".pn")
            shown = file_names_shown(page, f"class-files-{i}")
            assert [f["name"] for f in shown] == [Path(p).name for p in files]
            assert all(f["text"] == "".join(f["name"].split()) and not f["clipped"]
                       for f in shown), shown
        expect(page.locator("#class-files-1")).to_contain_text(f"{folders[0].name}__")
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
            labels.append(top_class(row.get_by_role("gridcell").nth(1).inner_text()).strip())
        assert set(labels) <= {f.name for f in folders}
        assert sum(a == b for a, b in zip(labels, truth, strict=True)) >= 0.6 * len(truth)

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


def test_the_readme_screenshot_shows_the_example_adapted_and_classified(browser,
                                                                         trained_workdir,
                                                                         tmp_path):
    typed = os.path.relpath(trained_workdir, REPO)  # relative, as a user would type it
    shot = tmp_path / "app.png"
    shown = screenshot(typed, shot, browser)
    assert f"({typed} ({typed}/best/ckpt-" in shown["model"]  # the workdir as typed
    assert len(shown["names"]) == 5 and len(shown["rows"]) == 10  # 2 drawings per class
    labels = [top_class(row[1]) for row in shown["rows"]]
    assert set(labels) <= set(shown["names"])
    assert sum(a == b for a, b in zip(labels, shown["truth"], strict=True)) >= 6
    assert shown["clipped"] == []
    with Image.open(shot) as image:
        width, height = image.size
    assert width == VIEWPORT["width"] and height > VIEWPORT["height"]  # the full page
