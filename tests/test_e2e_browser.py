"""End to end in a real headless browser: `streamlit run app.py` on 127.0.0.1 replaying a small
fixture, driven by Playwright in Debian's chromium. Saves test-artifacts/dashboard.png."""
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.formats import semeval_test_file

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FOREIGN = ["Le président parle ce soir à la télévision nationale", "Der Präsident spricht heute Abend im Fernsehen zur Nation", "O presidente fala hoje à noite na televisão nacional"]


def _fixture_tweets(path: Path, n=720) -> None:
    """X API v2 tweets (JSON lines, at the demo's default replay path) about the default topics,
    30 seconds apart (about 50 s of replay at the demo pace of at most 15 posts/s), with a 12-hour
    hole after the first half (an empty stretch the charts must show as a gap), some native retweets
    and some posts in other languages."""
    import json

    base = 1479900000  # 2016-11-23
    words = ["great", "awful", "ok", "love", "hate", "fine"]
    topics = ["Trump", "Obama", "Clinton", "Thanksgiving", "Putin"]
    lines = []
    for i in range(n):
        t = base + i * 30 + (12 * 3600 if i >= n // 2 else 0)
        tweet = {"id": str(800000000000000000 + i), "text": f"{topics[i % 5]} is {words[i % 6]} today #{i}", "created_at": t, "author_id": f"u{i % 7}"}
        if i % 10 == 3:
            tweet["text"] = f"RT @someone: {topics[i % 5]} is {words[i % 6]} today #{i}"
            tweet["referenced_tweets"] = [{"type": "retweeted", "id": "1"}]
        if i % 25 == 7:
            tweet["text"] = f"{topics[i % 5]}: {FOREIGN[i % 3]}"
        lines.append(json.dumps(tweet))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def server(tmp_path, synthetic_model_dir):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    data = tmp_path / "data"
    _fixture_tweets(semeval_test_file(str(data)))
    models = tmp_path / "models"
    shutil.copytree(synthetic_model_dir, models / "synthetic-int8")
    port = _free_port()
    env = {**os.environ, "SPARSEPULSE_DB": str(tmp_path / "db.sqlite"), "SPARSEPULSE_DATA": str(data), "SPARSEPULSE_MODELS": str(models), "PYTHONPATH": str(REPO)}
    log = open(tmp_path / "server.log", "wb")  # a file, not a pipe nobody reads: a full pipe would block the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                out = (tmp_path / "server.log").read_text(errors="replace") if proc.poll() is not None else "(still running)"
                proc.kill()
                pytest.fail(f"the dashboard server did not start within 60 s (exit {proc.poll()}): {out[-2000:]}")
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy2(tmp_path / "server.log", ARTIFACTS / "dashboard-server.log")  # kept for a failure's post-mortem
    from stream.worker import Worker

    Worker(tmp_path / "db.sqlite").stop()


def _state(page) -> str:
    return page.locator("[data-testid='stSidebar']").get_by_text("Pipeline:").first.inner_text().split(":", 1)[1].strip()


def _wait_state(page, want: set, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = _state(page)
        if st in want:
            return st
        time.sleep(0.5)
    raise AssertionError(f"pipeline state stayed {_state(page)!r}, expected one of {want}")


def _button(page, name):
    return page.locator("[data-testid='stSidebar']").get_by_role("button", name=name, exact=True)


def test_dashboard_in_chromium(server):
    """The newcomer's page in Chromium: controls follow the worker's real state (running, paused,
    finished); a view chosen during live updates stays chosen; every topic's chart has the same time
    domain; the 12-hour hole is a gap in the line; retweet and other-language counts are shown."""
    from playwright.sync_api import sync_playwright

    url, tmp = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("[data-testid='stVegaLiteChart']:visible").first.wait_for(timeout=90_000)  # charts once posts are stored
        # control states while running
        assert _wait_state(page, {"running", "idle"}) in {"running", "idle"}
        assert _button(page, "Restart").is_enabled() and _button(page, "Pause").is_enabled() and _button(page, "Stop").is_enabled()
        _button(page, "Pause").click()
        _wait_state(page, {"paused"}, 30)
        assert _button(page, "Resume").is_enabled()
        page.screenshot(path=str(ARTIFACTS / "dashboard-paused.png"), full_page=True)
        _button(page, "Resume").click()
        _wait_state(page, {"running", "idle", "finished"}, 30)
        # a view chosen during live updates stays chosen (the fragment reruns every 2 s)
        page.get_by_role("radio", name="Posts", exact=True).click()
        page.get_by_text("Search text").first.wait_for(timeout=30_000)
        time.sleep(7)
        page.screenshot(path=str(ARTIFACTS / "dashboard-posts-view.png"), full_page=True)  # what the assert saw
        assert page.get_by_text("Search text").first.is_visible()
        assert page.get_by_role("radio", name="Posts", exact=True).get_attribute("aria-checked") == "true"
        page.locator("[data-testid='stDataFrame']:visible").first.wait_for(timeout=30_000)
        # add a topic through the sidebar form and see it appear
        page.get_by_label("New topic name").fill("Weather")
        page.get_by_label('Terms: word, "a phrase", #tag, $cash, @user, -exclusion').fill("weather, #rain")
        page.get_by_role("button", name="Add topic").click()
        page.get_by_text("Weather", exact=True).first.wait_for(timeout=30_000)
        time.sleep(2)
        page.screenshot(path=str(ARTIFACTS / "dashboard-posts.png"), full_page=True)
        # finished: Start is offered again, Pause and Stop are not
        _wait_state(page, {"finished"}, 180)
        assert _button(page, "Start").is_enabled() and not _button(page, "Pause").is_enabled() and not _button(page, "Stop").is_enabled()
        # retweets and other languages are counted, and said to be kept out of sentiment
        caption = page.get_by_text("matched posts").first.inner_text()
        n_rt = int(caption.split(" retweets")[0].rsplit("·", 1)[1].strip().replace(",", ""))
        n_fo = int(caption.split(" in other languages")[0].rsplit("·", 1)[1].strip().replace(",", ""))
        assert n_rt > 0 and n_fo > 0 and "not as opinions" in caption and "kept out of sentiment" in caption, caption
        # one time axis for every topic, and the empty 12 hours drawn as a gap
        page.get_by_role("radio", name="Per topic", exact=True).click()
        time.sleep(4)
        axes = [a for a in page.locator("[data-testid='stVegaLiteChart'] [aria-label^='X-axis']").evaluate_all("els => els.map(e => e.getAttribute('aria-label'))")]
        polarity_axes = axes[0::3]  # polarity, shares, volume per topic: compare like with like
        assert len(polarity_axes) >= 5 and len(set(polarity_axes)) == 1, axes
        smoothed = page.locator("[data-testid='stVegaLiteChart'] g.mark-line path").evaluate_all("els => els.map(e => (e.getAttribute('d') || '').split('M').length - 1)")
        assert max(smoothed) >= 2, smoothed  # a line broken into several pieces: the hole is not bridged
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    from stream.store import Store

    store = Store(tmp / "db.sqlite")
    assert "Weather" in {t.name for t in store.topics()}
    assert store.count_posts() > 0
