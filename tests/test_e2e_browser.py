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


def _fixture_tweets(path: Path, n=240) -> None:
    """SemEval-format tweets about the default topics, 5 minutes apart (snowflake ids)."""
    base_ms = 1479900000000  # 2016-11-23
    words = ["great", "awful", "ok", "love", "hate", "fine"]
    topics = ["Trump", "Obama", "Clinton", "Thanksgiving", "Putin"]
    lines = []
    for i in range(n):
        ms = base_ms + i * 300_000
        tid = (ms - 1288834974657) << 22
        lines.append(f"{tid}\tneutral\t{topics[i % 5]} is {words[i % 6]} today #{i}")
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
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                out = proc.stdout.read().decode("utf-8", "replace") if proc.poll() is not None else "(still running)"
                proc.kill()
                pytest.fail(f"the dashboard server did not start within 60 s (exit {proc.poll()}): {out[-2000:]}")
            time.sleep(0.3)
    yield f"http://127.0.0.1:{port}", tmp_path
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    from stream.worker import Worker

    Worker(tmp_path / "db.sqlite").stop()


def test_dashboard_in_chromium(server):
    from playwright.sync_api import sync_playwright

    url, tmp = server
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url)
        page.locator("[data-testid='stVegaLiteChart']:visible").first.wait_for(timeout=90_000)  # charts once posts are stored
        page.get_by_role("tab", name="Posts").click()
        page.get_by_text("Latest posts").first.wait_for(timeout=30_000)
        page.locator("[data-testid='stDataFrame']:visible").first.wait_for(timeout=30_000)
        # add a topic through the sidebar form and see it appear
        page.get_by_label("New topic name").fill("Weather")
        page.get_by_label('Terms: word, "a phrase", #tag, $cash, @user, -exclusion').fill("weather, #rain")
        page.get_by_role("button", name="Add topic").click()
        page.get_by_text("Weather", exact=True).first.wait_for(timeout=30_000)
        time.sleep(3)
        page.screenshot(path=str(ARTIFACTS / "dashboard-posts.png"), full_page=True)
        page.get_by_role("tab", name="Per topic").click()
        time.sleep(2)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        browser.close()
    from stream.store import Store

    store = Store(tmp / "db.sqlite")
    assert "Weather" in {t.name for t in store.topics()}
    assert store.count_posts() > 0
