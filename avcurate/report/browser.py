"""Headless Chromium through Selenium, to check and photograph a report as a browser shows it.

Needs the `dev` extra (selenium) and Debian's `chromium` and `chromium-driver` (scripts/setup.sh --prism installs
them). The driver is named explicitly, so Selenium Manager never looks for one on the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_available() -> bool:
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


def open_chromium(width: int = 1400, height: int = 1000) -> Any:
    """A headless Chromium WebDriver that keeps the page's console messages (`get_log("browser")`)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={width},{height}", "--hide-scrollbars", "--mute-audio"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def page_url(path: str | Path) -> str:
    return Path(path).resolve().as_uri()
