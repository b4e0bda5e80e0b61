"""The browser the console and cross-site tests drive, found the way Playwright users expect.

Playwright's own Chromium when ``python -m playwright install chromium`` has put it in place, else a system
Chromium (Debian's ``chromium``, Ubuntu's ``chromium-browser``, Google Chrome). With neither, the browser tests
fail with the one line that says how to install one: a missing browser is a broken setup, never a skip.

``python -m tests.browser`` prints the browser that will be used (exit 0) or that line (exit 1); ``make test``
runs it first and, when it fails, tries Playwright's install.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SYSTEM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MISSING = ("no browser for the browser tests: run `python -m playwright install chromium` "
           "(or, on Debian/Ubuntu, `apt-get install chromium`)")


class NoBrowser(RuntimeError):
    """Neither Playwright's Chromium nor a system one is installed."""


def playwright_chromium(playwright: Any) -> str | None:
    """Playwright's own Chromium, if it was installed."""
    try:
        path = str(playwright.chromium.executable_path)
    except Exception:  # noqa: BLE001 - Playwright raises its own error types for an unknown browser layout
        return None
    return path if Path(path).is_file() else None


def system_chromium() -> str | None:
    return next((path for name in SYSTEM_NAMES if (path := shutil.which(name))), None)


@contextmanager
def launched() -> Iterator[Any]:
    """A running Chromium; NoBrowser (its message names the install command) when there is none."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        own = playwright_chromium(p)
        executable = own or system_chromium()
        if executable is None:
            raise NoBrowser(MISSING)
        # The sandbox needs user namespaces, which containers and root (CI) lack; the pages are our own.
        browser = p.chromium.launch(executable_path=None if own else executable,
                                    args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


def main() -> int:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        found = playwright_chromium(p) or system_chromium()
    print(found or MISSING, file=sys.stdout if found else sys.stderr)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
