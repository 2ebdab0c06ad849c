"""Photograph a report as headless Chromium shows it: docs/report.png from the demo's output.

    .venv/bin/python scripts/screenshot_report.py [demo-output/output/report.html] [docs/report.png] [--height 2600]
"""

from __future__ import annotations

import argparse
import time

from avcurate.report.browser import open_chromium, page_url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", default="demo-output/output/report.html")
    parser.add_argument("png", nargs="?", default="docs/report.png")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=0, help="pixels from the top (default: the whole page)")
    args = parser.parse_args()
    driver = open_chromium(args.width)
    try:
        driver.get(page_url(args.report))
        deadline = time.monotonic() + 20  # the videos' first frames, so the picture shows them
        while time.monotonic() < deadline and not driver.execute_script(
            "return [...document.querySelectorAll('video')].every(v => v.readyState >= 2)"
        ):
            time.sleep(0.2)
        height = args.height or driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(args.width, height)
        time.sleep(0.5)
        driver.save_screenshot(args.png)
    finally:
        driver.quit()
    print(args.png)


if __name__ == "__main__":
    main()
