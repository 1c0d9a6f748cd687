"""Fixtures of the dashboard's tests: the app under Streamlit's AppTest with a fake client, and
small images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.dashboard.fakes import FakeClient

APP = Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
#: Seconds one AppTest run may take (a loaded shared machine: generous).
RUN_TIMEOUT_S = 60


def png(rgb: tuple[int, int, int] = (100, 120, 140), size: int = 32) -> bytes:
    """A small valid PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), rgb, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


def open_app(client: object | None, page: str | None = None) -> AppTest:
    """The app with ``client`` given to the session (None: the configured server), switched to
    ``page`` (a file under dashboard/pages; None: the default page), run once."""
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    if client is not None:
        at.session_state["facexplain_client"] = client
    at.run()
    if page is not None:
        at.switch_page(f"pages/{page}").run()
    return at


def explain_until_done(at: AppTest, runs: int = 4) -> None:
    """Click Explain, then rerun the page until a result's metrics show (at most ``runs`` reruns)."""
    at.button(key="submit").click().run()
    for _ in range(runs):
        if at.metric:
            return
        at.run()
