"""UI of the SparsePulse dashboard (``app.py`` stays thin). Reads the store through one cached
read-only handle, edits topics through a separate writable one, controls the pipeline worker
process; never scores inside a rerun. Data shaping lives in ``stream.charts`` (frames, chart specs,
posts table) and ``stream.alerts`` (gaps, headline windows, alerts)."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path

import pandas as pd
import streamlit as st

from runtime.format import LABELS
from stream import charts
from stream.backend import is_url
from stream.alerts import bucket_grid, detect_shifts, fill_gaps, headline
from stream.formats import semeval_test_file
from stream.store import Store
from stream.tracker import DEFAULT_TOPICS, Topic, TopicError
from stream.validate import EARLIEST, FUTURE_SLACK
from stream.worker import Worker

__all__ = [
    "db_location",
    "default_replay_file",
    "list_models",
    "rw_store",
    "ro_store",
    "sidebar",
    "onboarding",
    "dashboard",
        "DEMO_MAX_IDLE_S",
    "DEMO_MAX_RATE",
    "DEMO_SPEED",
    "demo_replay_args",
]

REPO = Path(__file__).resolve().parent
BUCKETS = {"15 min": 900_000, "1 hour": 3_600_000, "6 hours": 21_600_000, "1 day": 86_400_000}
VIEWS = ("Overview", "Per topic", "Posts", "Alerts", "Export")
RANGES = {"All data": None, "Last day": 86_400_000, "Last 3 days": 3 * 86_400_000, "Custom": -1}
#: The demo replay (the SemEval-2017 test tweets: 12,284 posts over 19 days, most of them in two
#: bursts, with a 7-day hole): a day of post time per minute, gaps cut to 5 s of wall time, bursts
#: spread to at most 15 posts/s; about 15 minutes of steadily arriving posts, not 5 minutes of
#: mostly silence around two floods (`python -m stream replay --speed/--max-idle/--max-rate`).
DEMO_SPEED = 1440
DEMO_MAX_IDLE_S = 5.0
DEMO_MAX_RATE = 15.0


def demo_replay_args(path: Path | str) -> list[str]:
    """The worker arguments of the demo replay (first visit, `make run`)."""
    return ["replay", str(path), "--speed", str(DEMO_SPEED), "--max-idle", str(DEMO_MAX_IDLE_S), "--max-rate", str(DEMO_MAX_RATE)]


def db_location() -> str:
    """The store the dashboard reads: $SPARSEPULSE_DB (an SQLite path or a ``postgresql://`` URL) or
    data/sparsepulse.db."""
    return os.environ.get("SPARSEPULSE_DB") or str(REPO / "data" / "sparsepulse.db")


def default_replay_file() -> Path | None:
    f = semeval_test_file(os.environ.get("SPARSEPULSE_DATA") or str(REPO.parent / "shared" / "data"))
    return f if f.is_file() else None


def model_test_recall(d: Path) -> float | None:
    """The 2017-test macro recall a shipped model's metrics.json reports (None when it has none)."""
    try:
        return float(json.loads((d / "metrics.json").read_text())["test"]["macro_recall"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_models() -> list[Path]:
    """Runtime models (``$SPARSEPULSE_MODELS`` or models/), the teacher's training-format dir excluded;
    shipped models (with a measured metrics.json) first, most accurate on the 2017 test first."""
    root = Path(os.environ.get("SPARSEPULSE_MODELS", REPO / "models"))
    found = sorted(p.parent for p in root.glob("*/model.safetensors") if p.parent.name != "teacher")
    return sorted(found, key=lambda d: (model_test_recall(d) is None, -(model_test_recall(d) or 0.0), d.name))


@st.cache_resource
def rw_store(path: str) -> Store:
    """The writable handle: creates / migrates the database, default topics on first start; then
    used only for topic edits."""
    store = Store(path)
    if not store.topics():
        for name, spec in DEFAULT_TOPICS.items():
            store.save_topic(Topic.parse(name, spec))
    return store


@st.cache_resource
def ro_store(path: str) -> Store:
    """The read-only handle every rerun reads through (one per server, a connection per thread)."""
    rw_store(path)  # the file exists and is migrated
    return Store(path, readonly=True)


def _model_label(d: Path) -> str:
    r = model_test_recall(d)
    return d.name if r is None else f"{d.name} (2017 test macro recall {100 * r:.1f})"


def _fmt_ms(ms: int | None) -> str:
    return "-" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------- sidebar
def sidebar(store: Store, worker: Worker) -> dict:
    """Source, model, controls (live), topics editor, view settings. Returns the view settings."""
    sb = st.sidebar
    sb.header("Source")
    models = list_models()
    status = worker.status() or {}
    running_model = status.get("model_path") if worker.running else None
    index = next((i for i, m in enumerate(models) if running_model and Path(running_model).resolve() == m.resolve()), 0)
    model = sb.selectbox("Model", models, index=index, format_func=_model_label, key="model", help="Switching while the pipeline runs keeps the replay clock: posts from then on are scored by the new model (the charts mark the switch).") if models else None
    if model is not None and worker.running and running_model and Path(running_model).resolve() != model.resolve():
        worker.switch_model(model)  # no restart: the worker swaps models between batches
        sb.caption(f"Switching to {model.name} …")
    kinds = ["Recorded file (path)", "Upload a file", "Bluesky (live)", "X (live)"]
    kind = sb.radio("Source", kinds, key="source_kind")
    speed = sb.select_slider("Replay speed (x real time)", options=[0, 60, 360, 1440, 4320, 10080], value=DEMO_SPEED, key="speed", help="0 = as fast as possible; 360 = six hours per minute; 1440 = a day per minute")
    max_idle = sb.number_input("Longest wait for the next post (s)", 0.0, 3600.0, DEMO_MAX_IDLE_S, 1.0, key="max_idle", help="A recording with a gap of days is not replayed as minutes of silence: longer waits are skipped and marked on the charts. 0 = never skip.")
    max_rate = sb.number_input("Most posts per second (0 = no cap)", 0.0, 10000.0, DEMO_MAX_RATE, 5.0, key="max_rate", help="A burst of thousands of posts in a few minutes is spread out at this rate; the replay clock slows down through it.")
    args: list[str] | None = None
    worker_env: dict[str, str] = {}
    replay = ["--speed", str(speed), "--max-idle", str(max_idle), "--max-rate", str(max_rate)]
    if kind == kinds[0]:
        default = default_replay_file()
        path = sb.text_input("File path", value=str(default) if default else "", key="path")
        if path:
            args = ["replay", path, *replay]
    elif kind == kinds[1]:
        up = sb.file_uploader("twarc2 / v2 / v1.1 JSONL, CSV, SemEval TSV (.gz ok)", key="upload")
        if up is not None:
            dest = (REPO / "data" if is_url(db_location()) else Path(db_location()).parent) / "uploads" / Path(up.name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(up.getvalue())
            args = ["replay", str(dest), *replay]
    elif kind == kinds[2]:
        args = ["bluesky"]
    else:
        token = sb.text_input("X bearer token", type="password", key="x_token", help="kept in this browser session only; passed to the worker process alone, never shown, logged or stored") or _secret_token()
        if token:
            worker_env = {"X_BEARER_TOKEN": token}  # the worker process's environment only
            args = ["x"]
    with sb:
        controls(worker, args, str(model) if model else None, worker_env)
    if model is None:
        sb.warning("No model in models/: run `make run` (it prepares one) or export one.")

    sb.header("Topics")
    topics_editor()

    sb.header("View")
    bucket = sb.selectbox("Time bucket", list(BUCKETS), index=1, key="bucket")
    smooth = sb.slider("Smoothing window (buckets)", 1, 24, 3, key="smooth")
    window = sb.slider("Headline window (buckets)", 1, 48, 6, key="headline_window", help="Net sentiment over the latest N buckets, against the N before")
    retweets = sb.toggle("Count retweets as opinions", False, key="retweets", help="Retweets always count in volume; by default they do not add to sentiment (a retweet repeats an opinion)")
    foreign = sb.toggle("Include other languages", False, key="foreign", help="The model reads English: posts known to be in another language are kept out of sentiment by default (and counted)")
    z = sb.slider("Alert threshold (z-score)", 1.5, 6.0, 3.0, 0.5, key="alert_z")
    alert_window = sb.slider("Alert baseline window (buckets)", 4, 48, 12, key="alert_window")
    return {"bucket_ms": BUCKETS[bucket], "smooth": smooth, "window": window, "retweets": retweets, "foreign": foreign, "z": z, "alert_window": alert_window}


@st.fragment(run_every="2s")
def controls(worker: Worker, args: list[str] | None, model: str | None, env: dict[str, str]) -> None:
    """Start / Restart / Pause / Stop, enabled from the worker's real state at every rerun."""
    status = worker.status() or {}
    running = worker.running
    state = _state(status, running)
    c1, c2, c3 = st.columns(3)
    if c1.button("Restart" if running else "Start", disabled=args is None or model is None, key="start", help="Restart replays the chosen source from where the store stopped"):
        worker.start(args, model=model, env=env)
        st.rerun()
    paused = state == "paused"
    if c2.button("Resume" if paused else "Pause", disabled=not running or state == "finished", key="pause"):
        (worker.resume() if paused else worker.pause())
        time.sleep(1.2)  # the worker writes its status about once a second
        st.rerun()
    if c3.button("Stop", disabled=not running, key="stop"):
        worker.stop()
        st.rerun()
    st.caption(f"Pipeline: **{state}**")


def _state(status: dict, running: bool) -> str:
    if not running:
        # the worker's own last word (stream.cli: "finished" only when its source ended); a crash leaves another
        return "finished" if status.get("state") == "finished" and not status.get("error") else ("stopped" if status else "not started")
    if time.time() - (status.get("written_wall") or 0) > 10:
        return "starting"
    return status.get("state") or "running"


def _secret_token() -> str | None:
    try:
        return st.secrets.get("X_BEARER_TOKEN")  # type: ignore[no-any-return]
    except FileNotFoundError:  # no secrets file configured (StreamlitSecretNotFoundError is one)
        return os.environ.get("X_BEARER_TOKEN")


def topics_editor() -> None:
    sb = st.sidebar
    store = rw_store(db_location())
    for t in store.topics():
        with sb.expander(t.name):
            new_spec = st.text_input("Terms", value=t.spec(), key=f"spec_{t.name}")
            a, b = st.columns(2)
            if a.button("Save", key=f"save_{t.name}"):
                try:
                    store.save_topic(Topic.parse(t.name, new_spec))
                    st.rerun()
                except TopicError as e:
                    st.error(str(e))
            if b.button("Remove", key=f"rm_{t.name}"):
                store.delete_topic(t.name)
                st.rerun()
    with sb.form("add_topic", clear_on_submit=True):
        name = st.text_input("New topic name", key="new_topic_name")
        spec = st.text_input('Terms: word, "a phrase", #tag, $cash, @user, -exclusion', key="new_topic_terms")
        if st.form_submit_button("Add topic"):
            try:
                store.save_topic(Topic.parse(name, spec))
                st.rerun()
            except TopicError as e:
                st.error(str(e))


# ---------------------------------------------------------------------------------- views
def onboarding() -> None:
    st.title("SparsePulse")
    st.markdown(
        "Track how people feel about a topic, live, on your CPU.\n\n"
        "**No data yet.** Pick a source in the sidebar:\n"
        "- **Upload** a recorded file (twarc2 / X API v2 or v1.1 JSON lines, CSV, SemEval TSV; gzip is fine), or\n"
        "- give the **path** of a local recorded file, or\n"
        "- connect a live source: **Bluesky** (free, no account) or **X** (bearer token with filtered-stream access).\n\n"
        "Then add topics and press **Start**."
    )


def liveness(worker: Worker, store: Store) -> dict:
    """One line that says what the pipeline is doing now, and the runtime tiles."""
    s = worker.status() or {}
    state = _state(s, worker.running)
    bits = [f"**{state}**"]
    if s.get("clock_ms") is not None:
        pace = f" at {s['speed']:g}× real time" if s.get("speed") else ("" if s.get("max_rate") else " (as fast as possible)")
        if s.get("max_rate"):
            pace += f", at most {s['max_rate']:g} posts/s"
        bits.append(f"replay clock {_fmt_ms(s['clock_ms'])}{pace}")
    if state == "idle" and s.get("next_post_ms"):
        bits.append(f"next post at {_fmt_ms(s['next_post_ms'])}")
    if s.get("last_batch_wall"):
        bits.append(f"last batch stored {max(0, time.time() - s['last_batch_wall']):.0f} s ago")
    if s.get("source"):
        bits.append(f"source {s['source']}")
    st.markdown(" · ".join(bits))
    size = f"{s['model_bytes'] / 1e6:.1f} MB" if s.get("model_bytes") else None
    st.caption("Model: " + " · ".join(str(x) for x in (s.get("model", "-"), size, s.get("kernel") and f"C kernel {s['kernel']}") if x))
    cols = st.columns(5)
    cols[0].metric("Posts/s", f"{s.get('posts_per_s', 0):.0f}")
    lat = s.get("p50_batch_latency_ms")
    cols[1].metric("p50 batch latency", f"{lat:.0f} ms" if lat is not None else "-")
    cols[2].metric("Queue depth", s.get("queue_depth", 0))
    skipped = store.skip_counts()
    rejected = store.reject_counts()
    cols[3].metric("Skipped / rejected", f"{sum(skipped.values())} / {sum(rejected.values())}")
    cols[4].metric("Stored posts", f"{store.count_posts():,}")
    if skipped or rejected:
        st.caption("Skipped by reason: " + (", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "none") + (" · rejected: " + ", ".join(f"{k} {v}" for k, v in sorted(rejected.items())) if rejected else ""))
    if s.get("error"):
        st.error(s["error"])
    elif (log := worker.died()) is not None:
        st.error(f"The pipeline stopped unexpectedly (a crash, or the process was killed). The end of its log ({worker.log_path}):")
        st.code(log, language=None)
    if s.get("switch_error"):
        st.warning(s["switch_error"])
    for msg in s.get("source_errors") or []:  # e.g. X rejected a filtered-stream rule
        st.warning(msg)
    return s


def _time_window(store: Store, topics: list[str]) -> tuple[int, int] | None:
    rng = store.time_range(topics)
    if rng is None:
        return None
    # the store's times are validated (stream.validate); a store written before that may still hold
    # implausible ones: keep the range inside the valid window
    lo_ok, hi_ok = int(EARLIEST.timestamp() * 1000), int((dt.datetime.now(dt.timezone.utc) + FUTURE_SLACK).timestamp() * 1000)
    lo, hi = (min(max(x, lo_ok), hi_ok) for x in rng)
    choice = st.radio("Range", list(RANGES), horizontal=True, key="range_mode", label_visibility="collapsed")
    span = RANGES[choice]
    if span == -1 and hi > lo:
        a, b = st.slider("Time range", min_value=charts.to_dt(lo), max_value=charts.to_dt(hi), value=(charts.to_dt(lo), charts.to_dt(hi)), format="YYYY-MM-DD HH:mm", key="time_range")
        return int(a.timestamp() * 1000), int(b.timestamp() * 1000) + 1
    if span:
        lo = max(lo, hi - span)
    return lo, hi + 1


def show(df: pd.DataFrame, spec: dict, key: str) -> None:
    """A Vega-Lite spec over ``df`` (sent to the browser as Arrow): no Altair objects, no schema
    validation and no JSON records on the 2-s rerun path (those cost more than the rest of it)."""
    st.vega_lite_chart(df, spec, width="stretch", height=int(spec.get("height", 200)) + (60 if "title" in spec else 40), key=key)


#: the posts table shows each post's class as a coloured label (a pandas Styler colouring whole rows
#: cost ~150 ms per 2-s rerun for 200 rows; labels and number formats are drawn by the browser)
_POST_COLUMNS = {
    "sentiment": st.column_config.MultiselectColumn("sentiment", options=list(LABELS), color=[charts.COLORS[k] for k in LABELS], width="small"),
    "link": st.column_config.LinkColumn("link", display_text="open"),
    "is_retweet": st.column_config.CheckboxColumn("retweet"),
    "polarity": st.column_config.NumberColumn("polarity", format="%+.2f"),
    **{k: st.column_config.NumberColumn(k, format="%.2f") for k in ("p_neg", "p_neu", "p_pos")},
}


def dashboard(store: Store, worker: Worker, view: dict) -> None:
    """The live part (a fragment rerun every 2 s): liveness, headline, the chosen view."""
    status = liveness(worker, store)
    topics = [t.name for t in store.topics()]
    if not topics:
        st.info("No topics: add one in the sidebar.")
        return
    window = _time_window(store, topics)
    if window is None:
        st.info("Waiting for the first matching posts…")
        return
    lo, hi = window
    bucket = view["bucket_ms"]
    grid = bucket_grid(lo, hi, bucket)
    rows = store.aggregates(topics, bucket, grid[0], grid[-1] + bucket, retweets=view["retweets"], foreign=view["foreign"])
    series = fill_gaps(rows, topics, grid)
    totals = store.totals(topics, lo, hi)
    rt_note = "counted as opinions" if view["retweets"] else "counted in volume, not as opinions"
    fo_note = "included in sentiment" if view["foreign"] else "kept out of sentiment"
    st.caption(f"In range: {totals['volume']:,} matched posts across the topics (a post in two topics counts in each) · **{totals['retweets']:,} retweets** ({rt_note}) · **{totals['foreign']:,} in other languages** ({fo_note})")
    # the bucket holding the replay clock (or the range's end) is still filling: alerts skip it
    open_bucket = ((status.get("clock_ms") or hi) // bucket) * bucket
    alerts = detect_shifts(rows, smooth=view["smooth"], window=view["alert_window"], z=view["z"], closed_before_ms=open_bucket)
    chosen = st.segmented_control("View", VIEWS, default=VIEWS[0], key="view_tab", label_visibility="collapsed") or VIEWS[0]
    domain = [pd.to_datetime(grid[0], unit="ms", utc=True).isoformat(), pd.to_datetime(grid[-1] + bucket, unit="ms", utc=True).isoformat()]
    if chosen == "Overview":
        _overview(series, view, domain)
    elif chosen == "Per topic":
        df = charts.frame(series, view["smooth"])
        shares = charts.shares_long(df)
        events = store.events(lo, hi)
        cols = st.columns(2 if len(topics) > 1 else 1)
        for i, t in enumerate(topics):  # every topic has its charts (gaps where it has no posts): stable places
            with cols[i % len(cols)]:
                d = df[df.topic == t]
                for j, spec in enumerate(charts.topic_specs(alerts, events, grid[0], grid[-1] + bucket, t, domain)):
                    show(shares[shares.topic == t][["time", "class", "share"]] if j == 1 else d[charts.CHART_COLUMNS[j]], spec, f"chart_{t}_{j}")
    elif chosen == "Posts":
        _posts_view(store, topics, lo, hi, view)
    elif chosen == "Alerts":
        if alerts:
            st.dataframe(pd.DataFrame([{"time": _fmt_ms(a.bucket_ms), "topic": a.topic, "direction": a.direction, "smoothed polarity": round(a.polarity, 3), "baseline": round(a.baseline, 3), "z": round(a.z, 1)} for a in alerts]), hide_index=True)
        else:
            st.write("No significant shift in the selected window (closed buckets only).")
        st.caption(f"{len(alerts)} alert(s): smoothed net polarity beyond {view['z']}σ of the previous {view['alert_window']} buckets.")
    else:
        _export_view(store, topics, lo, hi, series)


def _overview(series: dict[str, list[dict]], view: dict, domain: list) -> None:
    heads = headline(series, view["window"])
    cols = st.columns(max(1, len(heads)))
    span = f"last {view['window']} bucket(s)"
    for c, h in zip(cols, heads):
        net = "–" if h["net"] is None else f"{h['net']:+.2f}"
        delta = None if h["change"] is None else f"{h['change']:+.2f} vs previous"
        sov = "-" if h["share_of_voice"] is None else f"{100 * h['share_of_voice']:.0f}%"
        c.metric(h["topic"], net, delta, help=f"Net sentiment (mean positive − negative probability) over the {span}, {h['opinions']} opinions; change against the {view['window']} bucket(s) before.")
        c.caption(f"{h['volume']:,} posts · share of voice {sov}" + ("" if h["net"] is not None else " · no opinions in the window"))
    vol = pd.DataFrame([{"bucket_ms": r["bucket_ms"], "topic": t, "volume": r["volume"], "polarity": r["polarity"]} for t, rows in series.items() for r in rows])
    if not vol.empty:
        vol["time"] = pd.to_datetime(vol["bucket_ms"], unit="ms", utc=True)
    if not vol.empty:
        x = charts.x_axis(domain)
        show(vol, {"title": "Share of voice", "height": 170, "mark": "area", "encoding": {"x": x, "y": {"field": "volume", "type": "quantitative", "stack": "normalize", "title": "share of voice"}, "color": {"field": "topic", "type": "nominal"},
                   "tooltip": [{"field": "time", "type": "temporal", "format": "%Y-%m-%d %H:%M"}, {"field": "topic", "type": "nominal"}, {"field": "volume", "type": "quantitative"}]}}, "share_of_voice")
        show(vol, {"title": "Net polarity per bucket", "height": 260, "mark": {"type": "line", "point": {"size": 10}, "invalid": charts.GAPS},
                   "encoding": {"x": x, "y": {"field": "polarity", "type": "quantitative", "title": "net polarity", "scale": {"domain": [-1, 1]}}, "color": {"field": "topic", "type": "nominal"}}}, "compare")


def _posts_view(store: Store, topics: list[str], lo: int, hi: int, view: dict) -> None:
    c1, c2, c3 = st.columns([2, 2, 1])
    labels = c1.multiselect("Sentiment", list(LABELS), default=list(LABELS), key="post_labels")
    search = c2.text_input("Search text", key="post_search")
    order = c3.selectbox("Order", ["recent", "positive", "negative"], key="post_order")
    rows = store.posts(topics, lo, hi, order, 200, labels=[LABELS.index(x) for x in labels], search=search.strip() or None)
    df = charts.posts_table(rows)
    if not df.empty:
        df["sentiment"] = [[x] for x in df["sentiment"]]  # a one-label list: drawn as a coloured pill
        df["is_retweet"] = df["is_retweet"].astype(bool)
    st.dataframe(df, hide_index=True, key="feed", column_config=_POST_COLUMNS)


def _export_view(store: Store, topics: list[str], lo: int, hi: int, series: dict) -> None:
    """Exports are built only when a button is clicked (deferred data), never on a live rerun."""
    st.download_button("Posts (CSV)", lambda: charts.csv_bytes(charts.posts_table(store.posts(topics, lo, hi, "recent", 100_000))), "sparsepulse_posts.csv", "text/csv", key="dl_posts_csv", on_click="ignore")
    st.download_button("Aggregates (CSV)", lambda: charts.csv_bytes(pd.DataFrame([r for rows in series.values() for r in rows])), "sparsepulse_aggregates.csv", "text/csv", key="dl_agg_csv", on_click="ignore")

    def parquet() -> bytes:
        import io

        buf = io.BytesIO()
        charts.posts_table(store.posts(topics, lo, hi, "recent", 100_000)).to_parquet(buf, index=False)
        return buf.getvalue()

    st.download_button("Posts (Parquet)", parquet, "sparsepulse_posts.parquet", key="dl_posts_parquet", on_click="ignore")
    st.caption("Posts of the shown topics in the shown range, up to 100,000; spreadsheet formulas in post texts are neutralised in the CSV.")
