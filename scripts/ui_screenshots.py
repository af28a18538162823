"""Screenshots of the web UI for the README: the Generate tab after a run, and the Image settings tab reading a PNG.

Needs what musekit does not: playwright (``pip install playwright``, in any environment) and a Chromium
(``apt-get install chromium``; playwright's own browser download is not needed). Start the UI first:

    musekit ui --port 7861 &
    python scripts/ui_screenshots.py --url http://127.0.0.1:7861 --image some-musekit.png --out docs/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7861")
    parser.add_argument("--image", required=True, help="a PNG musekit wrote, for the Image settings tab")
    parser.add_argument("--prompt", default="a small yellow star at the top left on a gray background")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", default="docs/images")
    args = parser.parse_args()
    out = Path(args.out)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 700})
        page.goto(args.url)
        page.wait_for_selector("text=Image settings", timeout=60000)
        page.get_by_label("prompt", exact=True).fill(args.prompt)
        page.get_by_role("button", name="Generate", exact=True).click()
        page.wait_for_function("document.querySelectorAll('.grid-wrap img').length >= 4", timeout=120000)
        page.wait_for_timeout(1000)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(out / "ui-generate.png"))
        page.set_viewport_size({"width": 1280, "height": 520})
        page.get_by_role("tab", name="Image settings").click()
        with page.expect_file_chooser() as chooser:
            page.locator("text=Click to Upload >> visible=true").first.click()
        chooser.value.set_files(args.image)
        script = "[...document.querySelectorAll('textarea')].some(t => t.value.includes('again: musekit'))"
        page.wait_for_function(script, timeout=60000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "ui-settings.png"))
        browser.close()
    print(f"wrote {out / 'ui-generate.png'} and {out / 'ui-settings.png'}")


if __name__ == "__main__":
    main()
