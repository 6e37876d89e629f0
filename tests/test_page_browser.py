"""The live page in a real headless browser: Debian's chromium driven by playwright (no
browser download: executable_path). .ci/run installs chromium; under CI=true a missing browser
or playwright fails the test instead of skipping it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support.mixer import MixerProcess, scenario_yaml

CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
FANOUT_GEAR = """\
  - name: audit
    type: log
    config: {level: debug}
"""


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} (.ci/run installs Debian's chromium and the dev extra's playwright)")
    pytest.skip(what)


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _missing("Debian's chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_page_draws_every_gear_and_counters_move_without_reload(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], browser: Any  # noqa: F811
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "hello.yaml"
    text = scenario_yaml(out, rate=50, extra_gear=FANOUT_GEAR)
    text += "  - {from: stamp.out, to: audit.in, transport: memory}\n"
    path.write_text(text)
    mixer = start_mixer("-s", str(path))
    status = mixer.wait_ready()
    gears = sorted(status["gears"])
    assert gears == ["audit", "keep", "sink", "source", "stamp"]

    page = browser.new_page(viewport={"width": 1400, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(mixer.url + "/")
    page.wait_for_selector("g.gear", timeout=30000)
    drawn = sorted(page.locator("g.gear").evaluate_all("nodes => nodes.map(n => n.dataset.gear)"))
    assert drawn == gears, "every gear of the running scenario is drawn"
    assert page.locator("g.wire").count() == len(status["wires"])
    assert page.locator("g.wire.memory").count() == len(status["wires"])  # drawn dashed

    counter = page.locator('g.gear[data-gear="sink"] [data-field="counts"]')
    page.wait_for_function("() => document.querySelector('g.gear[data-gear=\"sink\"] [data-field=\"counts\"]').textContent !== ''",
                           timeout=30000)
    before = counter.text_content()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    # The counter changes within a few seconds, pushed over /events: no reload of the page.
    page.wait_for_function(
        "(before) => document.querySelector('g.gear[data-gear=\"sink\"] [data-field=\"counts\"]').textContent !== before",
        arg=before, timeout=30000,
    )
    assert counter.text_content() != before and not navigations
    assert page.locator("#ready").text_content() == "ready"
    assert page.locator("#reload").is_hidden(), "read-only without a token"
    assert page.locator("#journal li").count() >= 1  # the startup activation

    # Pausing shows on the page (pushed, no reload).
    assert mixer.post("/pause")[0] == 200
    page.wait_for_selector("#paused", state="visible", timeout=30000)
    page.wait_for_selector('g.gear.paused[data-gear="source"]', timeout=30000)

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert_not_blank(shot)
    assert all(url.startswith(mixer.url) or url.startswith("data:") for url in requests), "no request leaves the mixer"
    assert not errors, errors


def test_reload_button_only_with_a_configured_and_supplied_token(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], browser: Any  # noqa: F811
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(out, rate=20))
    mixer = start_mixer("-s", str(path), token="s3cret")
    mixer.wait_ready()
    page = browser.new_page()
    page.goto(mixer.url + "/")
    page.wait_for_selector("g.gear", timeout=30000)
    assert page.locator("#reload").is_hidden()
    page.goto(mixer.url + "/#token=s3cret")
    page.reload()
    page.wait_for_selector("#reload", state="visible", timeout=30000)
    page.click("#reload")
    page.wait_for_function("() => [...document.querySelectorAll('#events li')].some(li => li.textContent.includes('reload: unchanged'))",
                           timeout=30000)
    assert mixer.journal()[0]["outcome"] == "unchanged"


def assert_not_blank(png: Path) -> None:
    """Decode the PNG (stdlib only) and check it has many distinct colours, not one flat fill."""
    import struct
    import zlib

    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            bpp = {2: 3, 6: 4}[colour] * depth // 8
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp + 1
    colours = set()
    for row in range(0, height, 7):  # unfiltered bytes are enough to tell flat from drawn
        line = raw[row * stride + 1:(row + 1) * stride]
        colours.update(line[i:i + 3] for i in range(0, len(line), bpp * 5))
    assert width > 100 and height > 100
    assert len(colours) > 20, f"the screenshot looks blank ({len(colours)} distinct colours)"


def test_an_idle_page_draws_a_scenario_activated_later(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], browser: Any  # noqa: F811
) -> None:
    mixer = start_mixer("--scenario-dir", str(tmp_path))  # idle: nothing to resume; API may activate files here
    mixer.wait_ready()
    page = browser.new_page()
    page.goto(mixer.url + "/")
    page.wait_for_selector("#empty", state="visible", timeout=30000)
    assert page.locator("g.gear").count() == 0
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(tmp_path / "out.jsonl", rate=20))
    status, entry = mixer.post("/activate", {"ref": str(path)})
    assert status == 200, entry
    page.wait_for_function("() => document.querySelectorAll('g.gear').length === 4", timeout=30000)
    assert page.locator("#empty").is_hidden()
    page.wait_for_function("() => [...document.querySelectorAll('#journal li')].some(li => li.textContent.startsWith('activated'))",
                           timeout=30000)


def test_global_state_shows_on_the_page_and_follows_changes_without_reload(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], browser: Any  # noqa: F811
) -> None:
    out = tmp_path / "out.jsonl"
    path = tmp_path / "hello.yaml"
    path.write_text(scenario_yaml(out, rate=20).replace("gears:\n", "globals:\n  threshold: {initial: 5}\ngears:\n", 1))
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(mixer.url + "/")
    page.wait_for_selector('#globals tr[data-key="threshold"]', timeout=30000)
    assert page.locator('#globals tr[data-key="threshold"] td').nth(1).text_content() == "5"
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    assert mixer.request("PUT", "/state/threshold", 8, token=mixer.auth_token())[0] == 200
    assert mixer.request("PUT", "/state/note", "<b>not html</b>", token=mixer.auth_token())[0] == 200
    page.wait_for_function(
        "() => document.querySelector('#globals tr[data-key=\"threshold\"] td:nth-child(2)').textContent === '8'",
        timeout=30000)
    page.wait_for_selector('#globals tr[data-key="note"]', timeout=30000)
    assert page.locator('#globals tr[data-key="note"] td').nth(1).text_content() == '"<b>not html</b>"'
    assert page.locator("#globals b").count() == 0  # shown as text, never as markup
    assert not navigations and not errors, errors


def test_expectations_show_on_the_page_and_change_state_without_reload(
    tmp_path: Path, start_mixer: Callable[..., MixerProcess], browser: Any  # noqa: F811
) -> None:
    path = tmp_path / "hello.yaml"
    expect = "sink.handled >= 40 within 60s"
    path.write_text(scenario_yaml(tmp_path / "out.jsonl", rate=20) + f"expect:\n  - {expect}\n")
    mixer = start_mixer("-s", str(path))
    mixer.wait_ready()
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(mixer.url + "/")
    row = f'#expectations tr[data-expect="{expect}"]'
    page.wait_for_selector(row, timeout=30000)
    assert page.locator(f"{row} td").nth(1).text_content() == expect
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.wait_for_selector(f"#expectations tr.expect-passing[data-expect=\"{expect}\"]", timeout=60000)
    assert page.locator(f"{row} td").nth(0).text_content() == "passing"
    assert not navigations and not errors, errors
