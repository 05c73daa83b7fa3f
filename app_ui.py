"""UI helpers of the SparsePulse dashboard (``app.py`` stays thin). Reads the store, edits topics,
controls the pipeline worker process; never scores inside a rerun."""
from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from runtime.format import LABELS
from stream.alerts import detect_shifts, rolling_mean, series_by_topic
from stream.formats import semeval_test_file
from stream.store import Store
from stream.validate import EARLIEST, FUTURE_SLACK
from stream.tracker import DEFAULT_TOPICS, Topic, TopicError
from stream.worker import Worker

__all__ = [
    "db_path",
    "default_replay_file",
    "list_models",
    "ensure_defaults",
    "sidebar",
    "onboarding",
    "dashboard",
    "csv_bytes",
]

REPO = Path(__file__).resolve().parent
def db_path() -> Path:
    """The store the dashboard reads: $SPARSEPULSE_DB or data/sparsepulse.db."""
    return Path(os.environ.get("SPARSEPULSE_DB", REPO / "data" / "sparsepulse.db"))

BUCKETS = {"15 min": 900_000, "1 hour": 3_600_000, "6 hours": 21_600_000, "1 day": 86_400_000}
COLORS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}
CHART_WIDTH = 330  # per-topic charts sit two per row


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


def ensure_defaults(store: Store) -> None:
    """First start: default topics (only when the store has none)."""
    if not store.topics():
        for name, spec in DEFAULT_TOPICS.items():
            store.save_topic(Topic.parse(name, spec))


def _model_label(d: Path) -> str:
    r = model_test_recall(d)
    return d.name if r is None else f"{d.name} (2017 test macro recall {100 * r:.1f})"


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------------------------- sidebar
def sidebar(store: Store, worker: Worker) -> dict:
    """Source, replay control, topics editor, model, view settings. Returns the view settings."""
    sb = st.sidebar
    sb.header("Source")
    models = list_models()
    model = sb.selectbox("Model", models, format_func=_model_label, key="model") if models else None
    kinds = ["Recorded file (path)", "Upload a file", "Bluesky (live)", "X (live)"]
    kind = sb.radio("Source", kinds, key="source_kind")
    speed = sb.select_slider("Replay speed (x real time)", options=[0, 60, 360, 1440, 4320, 10080], value=1440, key="speed", help="0 = as fast as possible; 1440 = a day per minute")
    args: list[str] | None = None
    worker_env: dict[str, str] = {}
    if kind == kinds[0]:
        default = default_replay_file()
        path = sb.text_input("File path", value=str(default) if default else "", key="path")
        if path:
            args = ["replay", path, "--speed", str(speed)]
    elif kind == kinds[1]:
        up = sb.file_uploader("twarc2 / v2 / v1.1 JSONL, CSV, SemEval TSV (.gz ok)", key="upload")
        if up is not None:
            dest = db_path().parent / "uploads" / Path(up.name).name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(up.getvalue())
            args = ["replay", str(dest), "--speed", str(speed)]
    elif kind == kinds[2]:
        args = ["bluesky"]
    else:
        token = sb.text_input("X bearer token", type="password", key="x_token", help="kept in memory only; never shown, logged or stored") or _secret_token()
        if token:
            worker_env = {"X_BEARER_TOKEN": token}  # the worker process's environment only
            args = ["x"]
    status = worker.status() or {}
    running = worker.running
    c1, c2, c3 = sb.columns(3)
    if c1.button("Start" if not running else "Restart", disabled=args is None or model is None, key="start"):
        worker.start(args, model=str(model) if model else None, env=worker_env)
        running = True
    if c2.button("Resume" if status.get("paused") else "Pause", disabled=not running, key="pause"):
        (worker.resume() if status.get("paused") else worker.pause())
    if c3.button("Stop", disabled=not running, key="stop"):
        worker.stop()
    if model is None:
        sb.warning("No model in models/: run `make run` (it prepares one) or export one.")

    sb.header("Topics")
    topics_editor(store)

    sb.header("View")
    bucket = sb.selectbox("Time bucket", list(BUCKETS), index=1, key="bucket")
    smooth = sb.slider("Smoothing window (buckets)", 1, 24, 3, key="smooth")
    z = sb.slider("Alert threshold (z-score)", 1.5, 6.0, 3.0, 0.5, key="alert_z")
    window = sb.slider("Alert baseline window (buckets)", 4, 48, 12, key="alert_window")
    return {"bucket_ms": BUCKETS[bucket], "smooth": smooth, "z": z, "window": window}


def _secret_token() -> str | None:
    try:
        return st.secrets.get("X_BEARER_TOKEN")  # type: ignore[no-any-return]
    except FileNotFoundError:  # no secrets file configured (StreamlitSecretNotFoundError is one)
        return os.environ.get("X_BEARER_TOKEN")


def topics_editor(store: Store) -> None:
    sb = st.sidebar
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


def runtime_panel(store: Store, worker: Worker) -> None:
    s = worker.status() or {}
    size = _fmt_bytes(s["model_bytes"]) if s.get("model_bytes") else None
    # the model's full name on its own line (a metric tile would cut it)
    st.caption("Model: " + " · ".join(str(x) for x in (s.get("model", "-"), size, s.get("kernel") and f"C kernel {s['kernel']}") if x))
    cols = st.columns(5)
    cols[0].metric("Posts/s", f"{s.get('posts_per_s', 0):.0f}")
    lat = s.get("p50_batch_latency_ms")
    cols[1].metric("p50 batch latency", f"{lat:.0f} ms" if lat is not None else "-")
    cols[2].metric("Queue depth", s.get("queue_depth", 0))
    skipped = store.skip_counts()
    cols[3].metric("Malformed / skipped", sum(skipped.values()))
    state = "paused" if s.get("paused") else ("running" if s.get("running") else ("finished" if s.get("finished") else "stopped"))
    cols[4].metric("Pipeline", state)
    if skipped:
        st.caption("Skipped by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())))
    if s.get("error"):
        st.error(s["error"])
    for msg in s.get("source_errors") or []:  # e.g. X rejected a filtered-stream rule
        st.warning(msg)


def _frame(rows: list[dict], smooth: int) -> pd.DataFrame:
    out = []
    for topic, series in series_by_topic(rows).items():
        sm = rolling_mean([r["polarity"] for r in series], smooth)
        for r, m in zip(series, sm):
            out.append({**r, "time": pd.to_datetime(r["bucket_ms"], unit="ms", utc=True), "smoothed": m, **{f"share_{k}": r[k] / r["volume"] for k in LABELS}})
    return pd.DataFrame(out)


def topic_chart(df: pd.DataFrame, alerts: list, topic: str) -> alt.Chart:
    d = df[df.topic == topic]
    base = alt.Chart(d).encode(x=alt.X("time:T", title=None))
    pol = base.mark_line(opacity=0.35).encode(y=alt.Y("polarity:Q", title="net polarity", scale=alt.Scale(domain=[-1, 1])))
    sm = base.mark_line(strokeWidth=2.5).encode(y="smoothed:Q", tooltip=["time:T", "volume:Q", alt.Tooltip("smoothed:Q", format=".2f")])
    layers = [pol, sm]
    a = [x for x in alerts if x.topic == topic]
    if a:
        ad = pd.DataFrame({"time": [pd.to_datetime(x.bucket_ms, unit="ms", utc=True) for x in a], "smoothed": [x.polarity for x in a], "z": [round(x.z, 1) for x in a]})
        layers.append(alt.Chart(ad).mark_point(shape="triangle", size=140, color="#ff7f0e", filled=True).encode(x="time:T", y="smoothed:Q", tooltip=["time:T", "z:Q"]))
    top = alt.layer(*layers).properties(height=180, width=CHART_WIDTH)
    shares = d.melt(id_vars=["time"], value_vars=[f"share_{k}" for k in LABELS], var_name="class", value_name="share")
    shares["class"] = shares["class"].str.replace("share_", "")
    area = alt.Chart(shares).mark_area().encode(x=alt.X("time:T", title=None), y=alt.Y("share:Q", stack="normalize", title="class shares"), color=alt.Color("class:N", scale=alt.Scale(domain=list(COLORS), range=list(COLORS.values())), legend=None)).properties(height=90, width=CHART_WIDTH)
    vol = base.mark_bar().encode(y=alt.Y("volume:Q", title="posts")).properties(height=70, width=CHART_WIDTH)
    return alt.vconcat(top, area, vol).properties(title=topic)


def _posts_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["created_ms", "topics", "label", "polarity", "p_neg", "p_neu", "p_pos", "author", "text", "id"])
    if df.empty:
        return df
    df.insert(0, "time", pd.to_datetime(df.pop("created_ms"), unit="ms", utc=True))
    df["sentiment"] = df.pop("label").map(dict(enumerate(LABELS)))
    return df


#: a spreadsheet runs a cell that starts with one of these as a formula (CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV for spreadsheets: text cells that a spreadsheet would run as a formula are prefixed
    with an apostrophe (OWASP's advice), so ``=HYPERLINK(...)`` in a post stays text."""
    safe = df.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v) if not df.empty else df
    return safe.to_csv(index=False).encode()


def _style(df: pd.DataFrame):
    if df.empty:
        return df
    return df.style.apply(lambda r: [f"background-color: {COLORS[r['sentiment']]}22"] * len(r), axis=1).format({"polarity": "{:+.2f}", "p_neg": "{:.2f}", "p_neu": "{:.2f}", "p_pos": "{:.2f}"})


def dashboard(store: Store, worker: Worker, view: dict) -> None:
    topics = [t.name for t in store.topics()]
    runtime_panel(store, worker)
    if not topics:
        st.info("No topics: add one in the sidebar.")
        return
    rng = store.time_range(topics)
    if rng is None:
        st.info("Waiting for the first matching posts…")
        return
    # the store's times are validated (stream.validate); a store written before that may still hold
    # implausible ones, which the time slider cannot represent: keep the range within the valid window
    now = dt.datetime.now(dt.timezone.utc)
    lo, hi = (min(max(pd.to_datetime(x, unit="ms", utc=True).to_pydatetime(), EARLIEST), now + FUTURE_SLACK) for x in rng)
    known = st.session_state.get("topics_known")
    if known is None or "topics_shown" not in st.session_state:
        st.session_state.topics_shown = list(topics)
    else:  # new topics join the selection, removed ones leave it
        st.session_state.topics_shown = [t for t in st.session_state.topics_shown if t in topics] + [t for t in topics if t not in known]
    st.session_state.topics_known = list(topics)
    chosen = st.multiselect("Topics", topics, key="topics_shown")
    if hi > lo:
        start, end = st.slider("Time range", min_value=lo, max_value=hi, value=(lo, hi), format="YYYY-MM-DD HH:mm", key="time_range")
    else:
        start, end = lo, hi
    s_ms, e_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000) + 1
    rows = store.aggregates(chosen, view["bucket_ms"], s_ms, e_ms)
    df = _frame(rows, view["smooth"])
    alerts = detect_shifts(rows, smooth=view["smooth"], window=view["window"], z=view["z"])
    tab_topics, tab_compare, tab_posts, tab_alerts, tab_export = st.tabs(["Per topic", "Compare", "Posts", f"Alerts ({len(alerts)})", "Export"])
    with tab_topics:
        cols = st.columns(2)
        for i, t in enumerate(chosen):
            if not df.empty and (df.topic == t).any():
                cols[i % 2].altair_chart(topic_chart(df, alerts, t), width="content")
    with tab_compare:
        if not df.empty:
            st.altair_chart(alt.Chart(df).mark_line().encode(x=alt.X("time:T", title=None), y=alt.Y("smoothed:Q", title="smoothed net polarity"), color="topic:N").properties(height=320), width="stretch")
            summary = df.groupby("topic").agg(posts=("volume", "sum"), mean_polarity=("polarity", "mean")).reset_index()
            st.dataframe(summary, hide_index=True)
    with tab_posts:
        st.subheader("Latest posts")
        latest = _posts_table(store.posts(chosen, s_ms, e_ms, "recent", 30))
        st.dataframe(_style(latest), hide_index=True, key="feed")
        c1, c2 = st.columns(2)
        c1.subheader("Most positive")
        c1.dataframe(_posts_table(store.posts(chosen, s_ms, e_ms, "positive", 10))[["polarity", "text"]] if rows else pd.DataFrame(), hide_index=True)
        c2.subheader("Most negative")
        c2.dataframe(_posts_table(store.posts(chosen, s_ms, e_ms, "negative", 10))[["polarity", "text"]] if rows else pd.DataFrame(), hide_index=True)
    with tab_alerts:
        if alerts:
            st.dataframe(pd.DataFrame([{"time": pd.to_datetime(a.bucket_ms, unit="ms", utc=True), "topic": a.topic, "direction": a.direction, "smoothed polarity": round(a.polarity, 3), "baseline": round(a.baseline, 3), "z": round(a.z, 1)} for a in alerts]), hide_index=True)
        else:
            st.write("No significant shift in the selected window.")
    with tab_export:
        posts = _posts_table(store.posts(chosen, s_ms, e_ms, "recent", 100_000))
        agg = df.drop(columns=[c for c in ("time",) if c in df.columns]) if not df.empty else df
        st.download_button("Posts (CSV)", csv_bytes(posts), "sparsepulse_posts.csv", "text/csv", key="dl_posts_csv")
        st.download_button("Aggregates (CSV)", csv_bytes(agg), "sparsepulse_aggregates.csv", "text/csv", key="dl_agg_csv")
        try:
            buf = io.BytesIO()
            posts.to_parquet(buf, index=False)
            st.download_button("Posts (Parquet)", buf.getvalue(), "sparsepulse_posts.parquet", key="dl_posts_parquet")
        except ImportError:
            st.caption("Install pyarrow for Parquet export.")
