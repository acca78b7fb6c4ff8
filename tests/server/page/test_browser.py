"""The live page in a real headless Chromium against a real `tally serve`.

Half an hour before the page opens, a few runs, messages and loop iterations are appended
with `tally emit`; the server starts on that log, the browser opens `/`, and the tests check
what a user sees against the server's own answers and the log (`tally tail`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import (
    chromium_session,
    click_point,
    console_errors,
    own_tab,
    wait_for,
)
from tests.support.serverproc import TallyServer, tail, tally, tally_server

REPO = Path(__file__).resolve().parents[3]
SCREENSHOT = REPO / "docs" / "images" / "page.png"
PAST_S = 1800.0  # the seeded events happened this long before the page opened


def past_events(ts: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for n, (agent, status) in enumerate([("claude", "completed"), ("codex", "failed")]):
        run = {"run_id": f"past-{n}", "project": "web", "agent": agent, "ts": ts}
        events.append({"type": "run_queued", **run})
        events.append({"type": "run_started", **run})
        events.append(
            {"type": "run_finished", **run, "status": status, "duration_s": 12.0 + 40 * n}
        )
    for n in range(3):
        events.append(
            {"type": "bus_message", "project": "web", "msg_type": "FACT", "ts": ts + 3 + n}
        )
    events.append({"type": "loop_started", "loop_id": "l1", "ts": ts})
    for n in range(1, 4):
        events.append(
            {
                "type": "iteration_completed",
                "loop_id": "l1",
                "iteration": n,
                "duration_s": 2.0 * n,
                "success": n != 2,
                "made_progress": n == 3,
                "progress_score": 0.5 if n == 3 else None,
                "ts": ts + 10 + n,
            }
        )
    events.append({"type": "context_usage", "loop_id": "l1", "percent": 42.0, "ts": ts + 20})
    events.append(
        {"type": "tests_reported", "loop_id": "l1", "passed": 9, "failed": 1, "total": 10}
        | {"ts": ts + 21}
    )
    # The log's clock ends here, so history has step boundaries after everything above.
    events.append({"type": "bus_message", "project": "ops", "msg_type": "FACT", "ts": ts + 120})
    return events


@dataclass
class Page:
    server: TallyServer
    browser: Any
    opened_at: float  # wall clock when the page was opened
    seeded_at: float  # ts of the first seeded event

    def figures(self) -> dict[tuple[str, str | None], float | None]:
        """Every figure the page shows as a plain sum of one family: (metric, loop) -> value."""
        script = """return [...document.querySelectorAll('output[data-metric]')].map(o =>
            [o.dataset.metric, o.dataset.loop ?? null, o.dataset.value ?? null])"""
        return {
            (metric, loop): None if value is None else float(value)
            for metric, loop, value in self.browser.execute_script(script)
        }

    def figure(self, label: str) -> str:
        script = """return [...document.querySelectorAll('.fig')]
            .filter(f => f.querySelector('span').textContent === arguments[0])
            .map(f => f.querySelector('output').textContent)"""
        found: list[str] = self.browser.execute_script(script, label)
        assert len(found) == 1, f"figure {label!r}: {found}"
        return found[0]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One Chromium for the module; a test that leaves the page opens a tab of its own."""
    yield from chromium_session(tmp_path_factory.mktemp("chromium") / "profile")


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Page]:
    data_dir = tmp_path_factory.mktemp("page") / "tally-data"
    seeded_at = time.time() - PAST_S
    jsonl = "".join(json.dumps(event) + "\n" for event in past_events(seeded_at))
    tally(data_dir, "emit", "-", stdin=jsonl.encode())
    with tally_server(data_dir) as server, own_tab(browser):
        opened_at = time.time()
        browser.get(f"http://127.0.0.1:{server.port}/")
        wait_live(browser)
        yield Page(server, browser, opened_at, seeded_at)


def wait_live(browser: Any, timeout: float = 15) -> None:
    wait_for(
        lambda: (
            browser.execute_script("return document.getElementById('conn').className") == "live"
        ),
        timeout,
        "the page streaming",
    )


def test_the_page_loads_without_console_errors(page: Page) -> None:
    assert page.browser.title == "tally — live"
    errors = console_errors(page.browser)
    assert errors == [], errors


def family_sums(server: TallyServer) -> dict[tuple[str, str | None], float]:
    doc = server.get("/api/v1/metrics?format=json").json()
    sums: dict[tuple[str, str | None], float] = {}
    for family in doc["families"]:
        for series in family["series"]:
            if "value" not in series:
                continue
            for loop in {None, series["labels"].get("loop")}:
                key = (family["name"], loop)
                sums[key] = sums.get(key, 0.0) + float(series["value"])
    return sums


def test_the_figures_equal_the_api(page: Page) -> None:
    shown = page.figures()
    assert ("conductor_completed_runs_total", None) in shown
    assert ("ralph_loop_iterations_total", "l1") in shown
    sums = family_sums(page.server)
    for key, value in shown.items():
        assert value == pytest.approx(sums.get(key)), key
    assert shown[("conductor_failed_runs_total", None)] == 1.0
    assert shown[("ralph_loop_iterations_total", "l1")] == 3.0
    assert page.figure("success ratio") == "66.7%"
    assert page.figure("test pass") == "90.0%"


def histogram_quantile(q: float, buckets: dict[str, int]) -> float | None:
    """Prometheus' histogram_quantile over one cumulative bucket map, the reference here."""
    bounds = sorted((float(le), n) for le, n in buckets.items())
    total = bounds[-1][1]
    if total == 0:
        return None
    rank, lower, below = q * total, 0.0, 0
    for bound, cumulative in bounds:
        if cumulative >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def test_quantiles_are_histogram_quantile_of_the_buckets(page: Page) -> None:
    doc = page.server.get("/api/v1/metrics?format=json").json()
    families = {f["name"]: f for f in doc["families"]}
    runs: dict[str, int] = {}
    for series in families["conductor_run_duration_seconds"]["series"]:
        for le, n in series["buckets"].items():
            runs[le] = runs.get(le, 0) + n
    (loop,) = families["ralph_loop_iteration_duration_seconds"]["series"]
    derived = page.browser.execute_script(
        """const out = {};
        for (const o of document.querySelectorAll('output:not([data-metric])')) {
            const label = o.parentElement.querySelector('span').textContent;
            const scope = o.closest('.loop') ? o.closest('.loop').id + ' ' : '';
            out[scope + label] = o.dataset.value === undefined ? null : Number(o.dataset.value);
        }
        return out"""
    )
    assert derived["duration p50"] == pytest.approx(histogram_quantile(0.5, runs))
    assert derived["p90"] == pytest.approx(histogram_quantile(0.9, runs))
    assert derived["p99"] == pytest.approx(histogram_quantile(0.99, runs))
    assert derived["loop-l1 duration p50"] == pytest.approx(
        histogram_quantile(0.5, loop["buckets"])
    )
    assert derived["duration p50"] == pytest.approx(15.0)  # 12 s and 52 s: rank 1 in (5, 15]


def test_the_agent_filter_selects_series(page: Page) -> None:
    from selenium.webdriver.support.ui import Select

    agent = Select(page.browser.find_element("id", "f-agent"))
    assert {o.text for o in agent.options} >= {"any", "claude", "codex"}
    assert page.figure("finished runs") == "2"
    agent.select_by_value("claude")
    wait_for(lambda: page.figure("finished runs") == "1", 2, "filtered figure")
    agent.select_by_value("")
    wait_for(lambda: page.figure("finished runs") == "2", 2, "unfiltered figure")


def test_an_event_changes_the_page_within_2_s(page: Page) -> None:
    before = page.figures()[("conductor_messagebus_appends_total", None)]
    assert before is not None
    page.server.post_events({"type": "bus_message", "project": "web", "msg_type": "FACT"})
    wait_for(
        lambda: page.figures()[("conductor_messagebus_appends_total", None)] == before + 1,
        2.0,
        "the new message on the page",
    )


def chart_points(page: Page, chart: str) -> list[dict[str, Any]]:
    script = """return [...document.querySelectorAll('#' + arguments[0] + ' circle.pt')].map(c =>
        ({k: Number(c.dataset.k), t: Number(c.dataset.t), line: c.dataset.line}))"""
    points: list[dict[str, Any]] = page.browser.execute_script(script, chart)
    return points


def test_the_history_chart_has_points_from_before_the_page_opened(page: Page) -> None:
    points = chart_points(page, "runs-duration")
    past = [p for p in points if p["t"] < page.opened_at - PAST_S / 2]
    assert past, points[-5:]
    # The first point with a duration is the first step boundary after the seeded runs.
    first = min(p["t"] for p in points)
    assert page.seeded_at <= first <= page.seeded_at + 30 + 2
    assert {p["line"] for p in past} == {"p50", "p90", "p99"}


def drill_query(browser: Any) -> dict[str, str]:
    """The query of the drill-down once its events are listed."""
    wait_for(
        lambda: browser.execute_script(
            "return document.getElementById('drill-list').dataset.loaded"
        ),
        5,
        "the drill-down",
    )
    assert browser.find_element("id", "drill").is_displayed()
    query = browser.execute_script("return document.getElementById('drill-list').dataset.query")
    return dict(pair.split("=") for pair in query.split("&"))


def test_a_click_on_a_point_lists_the_events_behind_it(page: Page) -> None:
    browser = page.browser
    points = chart_points(page, "runs-duration")
    k = min(p["k"] for p in points)  # the point whose step holds the seeded runs
    click_point(browser, "runs-duration", k)
    params = drill_query(browser)
    listed = browser.execute_script(
        "return [...document.querySelectorAll('#drill-list li[data-position]')]"
        ".map(li => Number(li.dataset.position))"
    )
    start, stop = int(params["from"]), int(params["to"])
    assert listed == [
        e["offset"] for e in tail(page.server.data_dir) if start <= e["offset"] < stop
    ]
    types = browser.execute_script(
        "return [...document.querySelectorAll('#drill-list li b')].map(b => b.textContent)"
    )
    assert types.count("run_finished") == 2  # both seeded runs finished in that step
    browser.find_element("id", "drill-close").click()
    assert not browser.find_element("id", "drill").is_displayed()


def test_the_project_and_loop_filters_narrow_the_drill_down(page: Page) -> None:
    browser = page.browser
    project = browser.find_element("id", "f-project")
    project.send_keys("ops")
    try:
        # The first live point: the seeded message of project ops came after the last step
        # boundary of the history, which ends at the newest event.
        k = min(p["k"] for p in chart_points(page, "bus-appends") if p["t"] >= page.opened_at)
        click_point(browser, "bus-appends", k)
        params = drill_query(browser)
        assert params["match"] == "project%3Aops"
        listed = browser.execute_script(
            "return [...document.querySelectorAll('#drill-list li[data-position]')]"
            ".map(li => Number(li.dataset.position))"
        )
        start, stop = int(params.get("from", 0)), int(params["to"])
        log = tail(page.server.data_dir)
        ops = [e["offset"] for e in log if start <= e["offset"] < stop and e["project"] == "ops"]
        assert listed == ops
        assert len(ops) == 1
        browser.find_element("id", "drill-close").click()
    finally:
        project.clear()
        browser.execute_script(
            "document.getElementById('f-project').dispatchEvent(new Event('input'))"
        )
    loop_points = chart_points(page, "loop-l1-iterations")
    k = min(p["k"] for p in loop_points)
    click_point(browser, "loop-l1-iterations", k)
    params = drill_query(browser)
    assert params["match"] == "loop_id%3Al1"
    types = browser.execute_script(
        "return [...document.querySelectorAll('#drill-list li b')].map(b => b.textContent)"
    )
    assert "iteration_completed" in types
    assert "run_finished" not in types
    browser.find_element("id", "drill-close").click()


def test_an_exemplar_opens_the_event_at_its_offset(page: Page) -> None:
    doc = page.server.get("/api/v1/metrics?format=json").json()
    (durations,) = [f for f in doc["families"] if f["name"] == "conductor_run_duration_seconds"]
    exemplars = [e for s in durations["series"] for e in s.get("exemplars", {}).values()]
    if not exemplars:
        pytest.skip("this build's /api/v1/metrics JSON carries no exemplars")
    browser = page.browser
    buttons = browser.find_elements("css selector", "#runs-duration .exemplars button")
    assert sorted(b.text.split()[0] for b in buttons) == sorted(
        e["labels"]["run_id"] for e in exemplars
    )
    buttons[0].click()
    params = drill_query(browser)
    listed = browser.execute_script(
        "return [...document.querySelectorAll('#drill-list li[data-position]')]"
        ".map(li => [Number(li.dataset.position), li.querySelector('b').textContent])"
    )
    assert listed == [[int(params["from"]), "run_finished"]]
    browser.find_element("id", "drill-close").click()


def test_the_keyboard_steps_through_points_and_opens_one(page: Page) -> None:
    from selenium.webdriver.common.keys import Keys

    browser = page.browser
    svg = browser.find_element("css selector", "#runs-active svg")
    svg.send_keys(Keys.HOME, Keys.ARROW_RIGHT)
    tip = browser.find_element("id", "tip")
    assert tip.is_displayed()
    assert "active" in tip.text
    svg.send_keys(Keys.ENTER)
    params = drill_query(browser)
    assert int(params["from"]) <= int(params["to"])
    browser.switch_to.active_element.send_keys(Keys.ESCAPE)
    wait_for(lambda: not browser.find_element("id", "drill").is_displayed(), 2, "drill closed")


def test_keys_focus_the_filter_and_switch_the_theme(page: Page) -> None:
    browser = page.browser
    body = browser.find_element("tag name", "body")
    body.send_keys("/")
    assert browser.switch_to.active_element.get_attribute("id") == "f-project"
    browser.execute_script("document.activeElement.blur()")
    body.send_keys("t")
    theme = browser.execute_script("return document.documentElement.dataset.theme")
    assert theme in ("light", "dark")
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    body.send_keys("t")
    assert browser.execute_script("return document.documentElement.dataset.theme") != theme
    assert browser.execute_script("return getComputedStyle(document.body).backgroundColor") != (
        background
    )
    body.send_keys("t")  # back to auto
    assert browser.execute_script("return document.documentElement.dataset.theme") is None
    dark = {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", dark)
    try:
        auto_dark = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert auto_dark == "rgb(15, 18, 23)"  # the system's dark, followed while on auto
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def test_a_screenshot_of_a_busy_page(tmp_path: Path, browser: Any) -> None:
    """`tally serve --demo` with an hour of history; TALLY_WRITE_SCREENSHOT=1 updates the
    README's picture, docs/images/page.png."""
    with tally_server(tmp_path / "tally-data", "--demo") as server, own_tab(browser):
        console_errors(browser)  # what earlier tests left
        viewport = {"width": 1280, "height": 1500, "deviceScaleFactor": 1, "mobile": False}
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", viewport)
        browser.get(f"http://127.0.0.1:{server.port}/")
        wait_for(
            lambda: browser.execute_script("return document.querySelectorAll('.loop').length") >= 2,
            15,
            "the demo's loops on the page",
        )
        wait_live(browser)
        if os.environ.get("TALLY_WRITE_SCREENSHOT") == "1":
            time.sleep(3)  # a few live points after the hour of history
        shot = tmp_path / "page.png"
        assert browser.save_screenshot(str(shot))
        assert shot.read_bytes().startswith(b"\x89PNG")
        assert console_errors(browser) == []
        if os.environ.get("TALLY_WRITE_SCREENSHOT") == "1":  # the README's picture
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)


def test_with_protected_reads_the_page_takes_the_token_from_its_address(
    tmp_path: Path, browser: Any
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("browser-token")
    args = ("--token-file", str(token_file), "--protect-reads")
    with tally_server(tmp_path / "tally-data", *args, token="browser-token") as server:
        with own_tab(browser):
            url = f"http://127.0.0.1:{server.port}/"
            browser.get(url)
            form = browser.find_element("id", "token-form")
            wait_for(form.is_displayed, 5, "the page asks for the token")
            browser.get("about:blank")
            browser.get(url + "#token=browser-token")
            wait_live(browser)
            assert browser.current_url == url  # the token left the address bar
            assert not browser.find_element("id", "token-form").is_displayed()
        console_errors(browser)  # the 401s of the first visit
