"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (never a downloaded
browser), and the pages' accessibility tree as Chromium computes it.

Without ``chromium`` on PATH (or without Playwright) the tests are skipped with the reason, unless
``FACEXPLAIN_REQUIRE_BROWSER`` is set (``make test-browser`` sets it): then they fail, naming what
to install.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

#: Chromium's flags on a machine without a GPU or the internet (../shared/docs/service-stack.md §1.3).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
#: Roles of the controls that must have an accessible name.
CONTROL_ROLES = {"button", "checkbox", "combobox", "listbox", "radio", "searchbox", "slider", "spinbutton",
                 "switch", "textbox", "link", "tab", "menuitem", "option"}


def _missing(what: str) -> None:
    message = (f"{what} is missing: install Debian's chromium as root (apt-get install -y chromium, or "
               "make test-browser, which does it) and the test extra (playwright)")
    if os.environ.get("FACEXPLAIN_REQUIRE_BROWSER"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright")
    executable = shutil.which("chromium")
    if executable is None:
        _missing("the chromium browser")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def unnamed_controls(page: Any) -> list[str]:
    """Controls on ``page`` (by role) that Chromium's accessibility tree gives no name: what a
    screen reader could not announce. Each as ``role (backend node id)``."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    out = []
    for node in nodes:
        role = (node.get("role") or {}).get("value")
        if node.get("ignored") or role not in CONTROL_ROLES:
            continue
        if not str((node.get("name") or {}).get("value") or "").strip():
            out.append(f"{role} ({node.get('backendDOMNodeId')})")
    return out
