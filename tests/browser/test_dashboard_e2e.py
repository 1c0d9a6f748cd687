"""The dashboard end to end in a real browser (issue 10): ``facexplain up --dashboard`` on free
loopback ports, headless Chromium (Debian's) driven by Playwright. On the Explain page a real LFW
pair from ../shared is uploaded and explained with CorrRISE (64 masks); the score, threshold and
a decision that agrees with them are shown, with the four map images loaded. On the Audits page
an audit of three LFW pairs (a CSV and its images, Grad-CAM, Deletion/Insertion, maps kept) runs to
its summary and the failure gallery shows kept maps; Evaluation and Models show it and the
server's models. On every page each control has an accessible name (Chromium's accessibility
tree). Screenshots of the four pages go to docs/screenshots/ (shown in the README) and the test's
folder. ``facexplain down`` stops everything; no process of the test is left.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from explainer_service.stack import Stack, read_stack, stop_stack
from tests.browser.conftest import unnamed_controls
from tests.integration.procs import left_after, marked_env

pytestmark = [pytest.mark.browser, pytest.mark.integration, pytest.mark.slow, pytest.mark.shared]

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "screenshots"
#: Waits on a shared, loaded 2-core machine: generous.
LOAD_MS = 60_000
JOB_MS = 150_000
VIEWPORT = {"width": 1280, "height": 900}
MAP_TITLES = ("A: similar regions", "A: dissimilar regions", "B: similar regions", "B: dissimilar regions")


def _cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "explainer_service.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The local stack with the dashboard (in-process engine, one worker), stopped by ``facexplain
    down``; the test's processes are checked gone."""
    state = tmp_path / "stack"
    env, mark = marked_env(HOME=str(tmp_path))
    up = _cli(["up", "--state", str(state), "--grpc-port", "0", "--engine", "local", "--dashboard",
               "--dashboard-port", "0"], env)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        started = read_stack(state)
        assert started is not None
        yield started
        down = _cli(["down", "--state", str(state)], env, timeout=120)
        assert down.returncode == 0 and down.stdout.startswith("stopped dashboard"), down.stdout + down.stderr
    finally:
        stop_stack(state, grace=5)  # whatever a failed test left running
        left = left_after(mark, 15)
    assert left == []


def _lfw_pairs(lfw: Path) -> list[tuple[Path, Path, bool]]:
    """Fold 1's first two matched pairs and first mismatched pair of pairs.txt."""
    lines = [line.split("\t") for line in (lfw / "pairs.txt").read_text().splitlines()]
    folds_of = int(lines[0][1])

    def image(name: str, i: str) -> Path:
        return lfw / "images" / name / f"{name}_{int(i):04d}.jpg"

    (n1, i1, j1), (n2, i2, j2) = lines[1], lines[2]
    m1, k1, m2, k2 = lines[1 + folds_of]
    return [(image(n1, i1), image(n1, j1), True), (image(n2, i2), image(n2, j2), True),
            (image(m1, k1), image(m2, k2), False)]


def _shoot(page: Any, name: str, tmp_path: Path) -> None:
    """A screenshot of the whole page (the app scrolls inside its own pane: the viewport is made
    as tall as the content first) into the test's folder, and a smaller copy into docs/screenshots/."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": max(VIEWPORT["height"], min(int(height), 4000))})
    page.wait_for_timeout(1000)  # let the charts lay themselves out again
    page.screenshot(path=str(tmp_path / name))
    # the committed copy as a 256-colour PNG: about a third of the size, still readable
    from PIL import Image

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with Image.open(tmp_path / name) as shot:
        palette = shot.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette.save(SCREENSHOTS / name, optimize=True)
    page.set_viewport_size(VIEWPORT)


def _metric(page: Any, label: str) -> str:
    from playwright.sync_api import expect

    box = page.get_by_test_id("stMetric").filter(has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    expect(box).to_have_count(1, timeout=LOAD_MS)
    return str(box.get_by_test_id("stMetricValue").inner_text()).strip()


def _loaded_images(page: Any, caption: str) -> int:
    """How many images captioned ``caption`` are on the page and decoded by the browser."""
    return int(page.evaluate(
        """(caption) => Array.from(document.querySelectorAll('[data-testid="stImageContainer"]'))
             .filter(e => { const c = e.querySelector('[data-testid="stImageCaption"]');
                            return c && c.innerText.trim() === caption; })
             .filter(e => { const i = e.querySelector('img'); return i && i.complete && i.naturalWidth > 0; })
             .length""", caption))


def _settled(page: Any) -> None:
    """Wait until the app has finished its rerun (Streamlit's "Running..." widget is gone): a
    rerun redraws widgets and closes an open drop-down."""
    from playwright.sync_api import expect

    page.wait_for_timeout(300)
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=LOAD_MS)


def _choose(page: Any, label: str, option: str, attempts: int = 3) -> None:
    """Add ``option`` to the multiselect ``label`` by typing it (retried: a late rerun may close
    the drop-down under the click)."""
    from playwright.sync_api import expect

    box = page.get_by_role("combobox", name=label)
    chosen = page.get_by_test_id("stMultiSelect").filter(has=box).get_by_text(option, exact=True)
    for _ in range(attempts):
        box.click()
        box.press_sequentially(option)
        box.press("Enter")
        page.keyboard.press("Escape")
        _settled(page)
        if chosen.count():
            break
    expect(chosen).to_have_count(1)


def _assert_labelled(page: Any, where: str) -> None:
    assert unnamed_controls(page) == [], f"{where}: controls without an accessible name"


def test_explain_audit_evaluation_models_in_chromium(browser: Any, stack: Stack, lfw_dir: Path,
                                                     tmp_path: Path) -> None:
    from playwright.sync_api import expect

    dashboard = next(p for p in stack.parts if p.kind == "dashboard")
    pairs = _lfw_pairs(lfw_dir)
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(LOAD_MS)
    expect.set_options(timeout=LOAD_MS)  # expect's own default is 5 s: too short on a loaded machine

    # -- Explain: a real LFW pair, CorrRISE with 64 masks ---------------------------------------
    page.goto(dashboard.address)
    expect(page.get_by_role("heading", name="Explain a pair")).to_be_visible(timeout=LOAD_MS)
    a, b, _ = pairs[0]
    uploaders = page.get_by_test_id("stFileUploader")
    uploaders.filter(has_text="Image A").locator('input[type="file"]').set_input_files(str(a))
    uploaders.filter(has_text="Image B").locator('input[type="file"]').set_input_files(str(b))
    for uploaded in (a, b):  # the uploader shows a shortened name, and a button named by the file
        expect(page.get_by_role("button", name=f"Remove {uploaded.name}")).to_be_visible()
    _settled(page)
    page.get_by_text("Parameters of CorrRISE").click()
    masks = page.get_by_role("spinbutton", name="n_masks", exact=True)
    masks.fill("64")
    masks.press("Enter")
    expect(masks).to_have_value("64")
    _assert_labelled(page, "Explain (form)")
    page.get_by_role("button", name="Explain", exact=True).click()
    expect(page.get_by_text(MAP_TITLES[0], exact=True)).to_be_visible(timeout=JOB_MS)
    score, threshold, decision = (_metric(page, m) for m in ("Score (cosine)", "Threshold", "Decision"))
    assert re.fullmatch(r"-?\d\.\d{4}", score) and re.fullmatch(r"\d\.\d{4}", threshold), (score, threshold)
    assert decision == ("match" if float(score) >= float(threshold) else "non-match")
    for title in MAP_TITLES:
        expect(page.get_by_text(title, exact=True)).to_be_visible()
        assert _loaded_images(page, title) == 1, title
    for face in "AB":  # photos: the caption names the detector that found the face and its confidence
        caption = page.get_by_text(re.compile(rf"^{face} \(aligned; detected by (hog|mtcnn|mmod), confidence "
                                              r"-?\d+\.\d{3}\)$"))  # HOG's is a margin, not a probability
        expect(caption).to_be_visible()
        assert _loaded_images(page, caption.inner_text().strip()) == 1, face
    expect(page.get_by_role("button", name="Download maps.npz")).to_be_visible()
    _assert_labelled(page, "Explain (result)")
    _shoot(page, "explain.png", tmp_path)

    # -- Audits: three LFW pairs from a CSV and their images, Grad-CAM, maps kept ----------------
    images = {p.name: p for pair in pairs for p in pair[:2]}
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("img1,img2,same\n" + "".join(f"{x.name},{y.name},{int(same)}\n" for x, y, same in pairs))
    page.get_by_role("link", name="Audits").click()
    expect(page.get_by_role("heading", name="Audits", exact=True)).to_be_visible()
    page.get_by_text("Submit an audit").click()
    page.get_by_text("A CSV of pairs and its images").click()
    uploaders.filter(has_text="Pairs CSV").locator('input[type="file"]').set_input_files(str(csv_file))
    uploaders.filter(has_text="The images the CSV names").locator('input[type="file"]').set_input_files(
        [str(p) for p in images.values()])
    for uploaded in (csv_file, *images.values()):
        expect(page.get_by_role("button", name=f"Remove {uploaded.name}")).to_be_visible()
    _settled(page)
    _choose(page, "Methods (none: verification only)", "gradcam")
    keep = page.get_by_role("checkbox", name="Keep each pair's maps (shown in the failure gallery)")
    _settled(page)
    page.get_by_text("Keep each pair's maps (shown in the failure gallery)").click()  # the label takes the click
    expect(keep).to_be_checked()
    _assert_labelled(page, "Audits (form)")
    page.get_by_role("button", name="Submit audit").click()
    expect(page.get_by_text(re.compile(r"^Audit [0-9a-f]{12} queued\.$"))).to_be_visible()
    page.get_by_text("Submit an audit").click()  # fold the form away for the screenshot
    expect(page.get_by_role("heading", name="Failure gallery")).to_be_visible(timeout=JOB_MS)
    assert _metric(page, "Pairs") == "3" and _metric(page, "Failed pairs") == "0"
    assert 0.0 <= float(_metric(page, "Accuracy")) <= 1.0
    gallery_maps = page.get_by_text(re.compile(r"^gradcam · A: similar regions$"))
    expect(gallery_maps.first).to_be_visible()
    assert _loaded_images(page, "gradcam · A: similar regions") >= 1
    expect(page.get_by_text("Deletion (lower is better) and Insertion (higher is better), 95 % intervals")).to_be_visible()
    _assert_labelled(page, "Audits (finished)")
    _shoot(page, "audits.png", tmp_path)

    # -- Evaluation and Models ------------------------------------------------------------------
    page.get_by_role("link", name="Evaluation").click()
    expect(page.get_by_role("heading", name="Evaluation", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Download table CSV")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
    _assert_labelled(page, "Evaluation")
    _shoot(page, "evaluation.png", tmp_path)

    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_visible()
    expect(page.get_by_role("heading", name="Methods")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)
    _assert_labelled(page, "Models")
    _shoot(page, "models.png", tmp_path)
    page.close()


def test_the_accessibility_check_names_an_unlabelled_control(browser: Any) -> None:
    page = browser.new_page()
    page.set_content('<label for="n">Masks</label><input id="n" type="number"><input type="text">'
                     '<button aria-label="Close"></button><button></button>')
    try:
        found = unnamed_controls(page)
    finally:
        page.close()
    assert [f.split(" ")[0] for f in found] == ["textbox", "button"]  # the labelled ones are not named
