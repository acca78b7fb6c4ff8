"""A real headless Chromium driven by selenium: Debian's ``chromium`` and ``chromium-driver``.

Selenium Manager never runs (the driver and the browser are given by path), so nothing is
downloaded. Without the two binaries the browser tests skip, unless ``CI`` is set: then a
missing browser is a failure (``scripts/test`` installs both).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest

CHROMIUM: Final = "/usr/bin/chromium"
CHROMEDRIVER: Final = "/usr/bin/chromedriver"
ARGUMENTS: Final = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--window-size=1280,900",
)

T = TypeVar("T")


def _binary(path: str, name: str) -> str | None:
    return path if os.access(path, os.X_OK) else shutil.which(name)


def browser_paths() -> tuple[str, str]:
    """Chromium and chromedriver, or a skip (a failure when ``CI`` is set) naming what lacks."""
    chromium = _binary(CHROMIUM, "chromium")
    driver = _binary(CHROMEDRIVER, "chromedriver")
    missing = [
        name for name, found in (("chromium", chromium), ("chromedriver", driver)) if found is None
    ]
    if missing:
        reason = (
            f"{' and '.join(missing)} not installed"
            " (Debian: apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    assert chromium is not None and driver is not None
    return chromium, driver


def start_chromium(profile: Path, *, dark: bool = False) -> Any:
    """A headless Chromium with a fresh profile in ``profile``, logging the console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={profile}")
    if dark:
        options.add_argument("--force-dark-mode")
        options.add_argument("--blink-settings=preferredColorScheme=0")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def chromium_session(profile: Path, **kwargs: Any) -> Iterator[Any]:
    """``start_chromium`` for a fixture: quits the browser at the end."""
    browser = start_chromium(profile, **kwargs)
    try:
        yield browser
    finally:
        browser.quit()


@contextmanager
def own_tab(browser: Any) -> Iterator[None]:
    """A new tab for the block (its own sessionStorage), closed at the end."""
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        yield
    finally:
        browser.close()
        browser.switch_to.window(first)


def console_errors(browser: Any) -> list[dict[str, Any]]:
    """The console entries of level SEVERE since the last call."""
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``check`` until it returns something other than None or False; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def click_point(browser: Any, chart: str, k: int) -> None:
    """Click point ``k`` of chart ``chart`` itself, even where a neighbour drawn over it
    would take a mouse click at its centre (live points can lie a fraction of a second apart)."""
    point = browser.find_element("css selector", f'#{chart} circle[data-k="{k}"]')
    browser.execute_script(
        "arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", point
    )
