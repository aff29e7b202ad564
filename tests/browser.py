"""A headless Chromium driven by Selenium: the web page's tests and ``scripts/bench_web.py``."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def headless_chromium(chrome: str, driver: str, page_load: str = "normal") -> Iterator[Any]:
    """A headless Chromium (``chrome``, driven through ``driver``, chromedriver), quit on leaving.
    ``page_load``: WebDriver's page load strategy (``eager``: ``get`` waits for the document alone, not for
    its images, which a stream that sends nothing never finishes). Its profile
    and its temporary files (the folder of its singleton socket, which it leaves behind in $TMPDIR when the
    driver quits it) live in a folder of their own under /tmp, removed afterwards: a short path, as a
    socket's path may not pass 107 bytes."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="edgeseg-chromium-") as tmp:
        options = webdriver.ChromeOptions()
        options.binary_location = chrome
        options.page_load_strategy = page_load
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                    "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                    f"--user-data-dir={tmp}/profile"):  # fmt: skip
            options.add_argument(arg)
        service = Service(executable_path=driver, env={**os.environ, "TMPDIR": tmp})
        browser = webdriver.Chrome(options=options, service=service)
        try:
            yield browser
        finally:
            browser.quit()
