"""Remake the README's screenshot, ``docs/app.png``: the app as a visitor sees it after
*Load an example*, *Adapt* and *Classify*.

    python tools/screenshot_app.py [--workdir runs/omniglot_metagna] [--output docs/app.png]

Run it from the repository root once the README's main job has trained
``runs/omniglot_metagna``. It starts ``python -m serving.app --workdir WORKDIR`` there,
so the page names the workdir as it was typed, drives Debian's chromium
(``apt-get install chromium``) through Playwright, and prints each example drawing's
top class and how many are right. ``tests/test_app_browser.py`` runs the same steps
(``example_adapt_classify``) on the tests' model, so this script keeps working.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.app_server import running_app  # noqa: E402 - starts the app as a user would

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1300}


def launch_chromium(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)


def class_names(page) -> list[str]:
    count = int(page.locator("#class-count input").first.input_value())
    return [page.locator(f"#class-name-{i} textarea, #class-name-{i} input").first.input_value()
            for i in range(1, count + 1)]


def file_names_shown(page, elem_id: str) -> list[dict]:
    """The file list of ``#elem_id`` as displayed: each file's name, the text the page shows
    for it and whether any of that text is cut off (clipped by its cell)."""
    return page.evaluate("""id => [...document.querySelectorAll(`#${id} td.filename`)].map(
        cell => ({name: cell.getAttribute("aria-label"), text: cell.innerText.replace(/\\s+/g, ""),
                  clipped: [cell, ...cell.querySelectorAll("span")].some(
                      e => e.scrollWidth > e.clientWidth + 1)}))""", elem_id)


def prediction_rows(page) -> list[list[str]]:
    """The cells of the table *Top classes per image*, one list per image."""
    rows = []
    for row in page.locator("#predictions").get_by_role("row").all():
        cells = [c.strip() for c in row.get_by_role("gridcell").all_inner_texts()]
        if cells and cells not in rows:  # the header has no grid cells; skip a sticky copy
            rows.append(cells)
    return rows


def example_adapt_classify(page, url: str) -> tuple[list[str], list[list[str]]]:
    """Open the app, press *Load an example*, *Adapt* and *Classify*, as a visitor would.

    Returns the class names and the predictions table's rows; the page is left showing them.
    """
    from playwright.sync_api import expect

    page.goto(url)
    page.click("#example-button")
    expect(page.locator("#class-gallery-1 img").first).to_be_visible(timeout=60_000)
    names = class_names(page)
    for i in range(1, len(names) + 1):  # every class's thumbnails have arrived
        expect(page.locator(f"#class-gallery-{i} img").first).to_be_visible(timeout=60_000)
    queries = page.locator("#query-files td.filename")
    expect(queries.first).to_be_visible(timeout=60_000)
    page.click("#adapt-button")
    expect(page.locator("#adapt-summary")).to_contain_text(
        f"Adapted to {len(names)} classes", timeout=180_000)
    page.click("#classify-button")
    last = queries.last.get_attribute("aria-label")
    expect(page.locator("#predictions")).to_contain_text(last, timeout=120_000)
    expect(page.locator("#query-gallery img").last).to_be_visible(timeout=60_000)
    page.wait_for_timeout(1000)  # the plots' and thumbnails' last paint
    return names, prediction_rows(page)


def top_class(cell: str) -> str:
    """``"Greek character02 (98.7%)"`` -> ``"Greek character02"``."""
    return cell.rsplit(" (", 1)[0]


def example_truth(names: list[str], rows: list) -> list[str]:
    """The example's true classes: its drawings come class by class, as many per class."""
    per_class = len(rows) // len(names)
    return [name for name in names for _ in range(per_class)]


def screenshot(workdir: str, output: Path, browser) -> dict:
    """Start the app on ``workdir`` (from REPO, as typed), go through the example and write the
    full page to ``output``. -> what the page showed: the model line, the class names, the
    predictions table's rows, the true classes and the class files whose names were cut off."""
    with running_app("--workdir", workdir) as url:
        page = browser.new_page(viewport=VIEWPORT)
        names, rows = example_adapt_classify(page, url)
        model = page.locator("#model-description").inner_text()
        clipped = [f["name"] for i in range(1, len(names) + 1)
                   for f in file_names_shown(page, f"class-files-{i}") if f["clipped"]]
        page.screenshot(path=str(output), full_page=True)
        page.close()
    return {"model": model, "names": names, "rows": rows, "truth": example_truth(names, rows),
            "clipped": clipped}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="runs/omniglot_metagna",
                   help="the trained workdir, as a user would type it from the repository root")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "app.png")
    args = p.parse_args(argv)
    if not (REPO / args.workdir / "config.json").is_file():
        sys.exit(f"error: {REPO / args.workdir}: no trained workdir; train it first with the "
                 "README's main job (python -m metagna_tf.train ... --workdir "
                 "runs/omniglot_metagna)")
    if not Path(CHROMIUM).is_file():
        sys.exit(f"error: {CHROMIUM} not found: install Debian's chromium "
                 "(sudo apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        shown = screenshot(args.workdir, args.output, browser)
        browser.close()
    print(shown["model"])
    for row, true in zip(shown["rows"], shown["truth"], strict=True):
        print(f"{row[0]}: {row[1]}" + ("" if top_class(row[1]) == true else f"  (is {true})"))
    right = sum(top_class(row[1]) == true
                for row, true in zip(shown["rows"], shown["truth"], strict=True))
    print(f"{right} of {len(shown['rows'])} example drawings classified right; wrote "
          f"{args.output}")
    if shown["clipped"]:
        print(f"warning: file names cut off on the page: {shown['clipped']}", file=sys.stderr)


if __name__ == "__main__":
    main()
