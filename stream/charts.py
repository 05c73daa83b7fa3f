"""Data shaping of the dashboard, without Streamlit: chart frames with gaps and 95% bands, the
Vega-Lite specs of a topic on the shared time axis, the posts table and its safe CSV export."""
from __future__ import annotations

import datetime as dt

import pandas as pd

from runtime.format import LABELS
from stream.alerts import Z95

COLORS = {"negative": "#d62728", "neutral": "#9e9e9e", "positive": "#2ca02c"}


def to_dt(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)


def frame(series: dict[str, list[dict]], smooth: int) -> pd.DataFrame:
    """Rows for the charts: one per topic and bucket, empty buckets with null polarity (gaps); the
    smoothed line is the trailing mean of the last ``smooth`` buckets that have a value. Built by
    columns (a month of 15-minute buckets for five topics is 14,400 rows on every rerun)."""
    rows = [r for rs in series.values() for r in rs]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame({k: [r.get(k) for r in rows] for k in rows[0]})
    pol = pd.to_numeric(df["polarity"], errors="coerce")  # None -> NaN -> null in Arrow: a gap
    se = pd.to_numeric(df["polarity_se"], errors="coerce")
    df["polarity"], df["polarity_se"] = pol, se
    df["smoothed"] = pol.groupby(df["topic"], sort=False).transform(lambda s: s.dropna().rolling(smooth, min_periods=1).mean().reindex(s.index))
    df["lo"] = (pol - Z95 * se).clip(lower=-1.0)
    df["hi"] = (pol + Z95 * se).clip(upper=1.0)
    n = df["n"].where(df["n"] > 0)
    for k in LABELS:
        df[f"share_{k}"] = df[k] / n
    df["time"] = pd.to_datetime(df["bucket_ms"], unit="ms", utc=True)
    return df


def x_axis(domain: list) -> dict:
    return {"field": "time", "type": "temporal", "title": None, "scale": {"domain": domain}}


#: skipped spans closer than this share of the visible range are drawn as one band
SKIP_MERGE = 0.01
#: a "skipped" label only where it starts this share of the visible range away from every other label (no overlaps)
SKIP_LABEL_GAP = 0.12


def skip_bands(events: list[dict], lo: int, hi: int) -> list[dict]:
    """The replay's skipped idle spans inside [lo, hi] as bands (ms): spans that touch or nearly touch
    (SKIP_MERGE of the range) merged into one, their details joined for the tooltip; ``label`` on the widest
    bands first, then on each band that starts far enough from every labelled one (adjacent labels printed over
    each other)."""
    spans = sorted(((max(e["post_ms"], lo), min(e["end_post_ms"] or e["post_ms"], hi), e["detail"]) for e in events if e["kind"] == "skip" and e["post_ms"] is not None), key=lambda t: t[:2])
    near = SKIP_MERGE * max(hi - lo, 1)
    bands: list[dict] = []
    for a, b, what in spans:
        if b < a:  # entirely outside the range
            continue
        if bands and a - bands[-1]["end"] <= near:
            bands[-1]["end"] = max(bands[-1]["end"], b)
            bands[-1]["what"].append(what)
        else:
            bands.append({"start": a, "end": b, "what": [what]})
    gap, placed = SKIP_LABEL_GAP * max(hi - lo, 1), []
    for band in sorted(bands, key=lambda b: b["start"] - b["end"]):  # the widest bands get their labels first
        band["label"] = all(abs(band["start"] - x) >= gap for x in placed)
        if band["label"]:
            placed.append(band["start"])
    for band in bands:
        n = len(band["what"])
        what = [str(w) for w in band["what"]]  # a store's detail column is text, but a damaged one may not be
        band["what"] = what[0] if n == 1 else f"{n} skipped spans: " + "; ".join(what[:3]) + ("; ..." if n > 3 else "")
    return bands


def events_layers(events: list[dict], lo: int, hi: int, domain: list) -> list[dict]:
    """Model switches as dashed rules, skipped idle spans of a replay as grey bands labelled "skipped"."""
    iso = lambda ms: pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()  # noqa: E731
    layers = []
    skips = [{**b, "start": iso(b["start"]), "end": iso(b["end"])} for b in skip_bands(events, lo, hi)]
    if skips:
        xs = {"field": "start", "type": "temporal", "scale": {"domain": domain}}
        layers.append({"data": {"values": skips}, "mark": {"type": "rect", "color": "#bbbbbb", "opacity": 0.25}, "encoding": {"x": xs, "x2": {"field": "end"}, "tooltip": [{"field": "what", "type": "nominal"}]}})
        labelled = [b for b in skips if b["label"]]
        layers.append({"data": {"values": labelled}, "mark": {"type": "text", "align": "left", "baseline": "top", "dx": 3, "dy": 3, "color": "#777", "fontSize": 10, "text": "skipped"}, "encoding": {"x": xs, "y": {"value": 2}}})
    switches = [{"time": iso(e["post_ms"]), "what": f"model switch: {e['detail']}"} for e in events if e["kind"] == "model_switch" and e["post_ms"] is not None]
    if switches:
        layers.append({"data": {"values": switches}, "mark": {"type": "rule", "color": "#7b3fa0", "strokeDash": [4, 3], "strokeWidth": 2}, "encoding": {"x": x_axis(domain), "tooltip": [{"field": "what", "type": "nominal"}]}})
    return layers


GAPS = "break-paths-show-domains"  # null (empty bucket) breaks the line instead of bridging it


def topic_specs(alerts: list, events: list[dict], lo: int, hi: int, topic: str, domain: list) -> list[dict]:
    """Vega-Lite specs of one topic: net polarity with its 95% band, smoothed line, alerts and events;
    class shares; volume -- all on the shared time axis ``domain``; empty buckets are gaps."""
    x = x_axis(domain)
    y = {"field": "lo", "type": "quantitative", "title": "net polarity", "scale": {"domain": [-1, 1]}}
    tip = [{"field": "time", "type": "temporal", "format": "%Y-%m-%d %H:%M"}, {"field": "n", "type": "quantitative", "title": "opinions"}, {"field": "volume", "type": "quantitative"},
           {"field": "polarity", "type": "quantitative", "format": ".2f"}, {"field": "lo", "type": "quantitative", "format": ".2f", "title": "95% low"}, {"field": "hi", "type": "quantitative", "format": ".2f", "title": "95% high"}]
    layers = [
        {"mark": {"type": "area", "opacity": 0.18, "color": "#1f77b4", "invalid": GAPS}, "encoding": {"x": x, "y": y, "y2": {"field": "hi"}}},
        {"mark": {"type": "line", "opacity": 0.45, "point": {"size": 12, "opacity": 0.5}, "invalid": GAPS}, "encoding": {"x": x, "y": {"field": "polarity", "type": "quantitative"}, "tooltip": tip}},
        {"mark": {"type": "line", "strokeWidth": 2.5, "invalid": GAPS}, "encoding": {"x": x, "y": {"field": "smoothed", "type": "quantitative"}}},
        *events_layers(events, lo, hi, domain),
    ]
    a = [{"time": pd.Timestamp(x_.bucket_ms, unit="ms", tz="UTC").isoformat(), "smoothed": x_.polarity, "z": round(x_.z, 1)} for x_ in alerts if x_.topic == topic]
    if a:
        layers.append({"data": {"values": a}, "mark": {"type": "point", "shape": "triangle", "size": 140, "color": "#ff7f0e", "filled": True}, "encoding": {"x": x, "y": {"field": "smoothed", "type": "quantitative"}, "tooltip": [{"field": "time", "type": "temporal"}, {"field": "z", "type": "quantitative"}]}})
    top = {"title": topic, "height": 220, "layer": layers}
    shares = {
        "height": 130,
        "mark": {"type": "bar"},  # one stacked bar per bucket (long-format rows from shares_long): an empty bucket stays empty
        "encoding": {"x": x, "y": {"field": "share", "type": "quantitative", "stack": "normalize", "title": "class shares"},
                     "color": {"field": "class", "type": "nominal", "scale": {"domain": list(COLORS), "range": list(COLORS.values())}, "legend": {"orient": "top", "title": None, "direction": "horizontal"}}},
    }
    vol = {"height": 90, "mark": "bar", "encoding": {"x": x, "y": {"field": "volume", "type": "quantitative", "title": "posts"},
           "tooltip": [{"field": "time", "type": "temporal", "format": "%Y-%m-%d %H:%M"}, {"field": "volume", "type": "quantitative"}, {"field": "retweets", "type": "quantitative"}, {"field": "foreign", "type": "quantitative"}]}}
    return [top, shares, vol]


#: the columns each of a topic's charts reads (polarity, -, volume): only these go to the browser
CHART_COLUMNS = (["time", "lo", "hi", "polarity", "smoothed", "n", "volume"], None, ["time", "volume", "retweets", "foreign"])


def shares_long(d: pd.DataFrame) -> pd.DataFrame:
    """Long-format class shares (topic, time, class, share), empty buckets left out."""
    long = d.melt(id_vars=["topic", "time"], value_vars=[f"share_{k}" for k in LABELS], var_name="class", value_name="share").dropna(subset=["share"])
    long["class"] = long["class"].str.slice(len("share_"))
    return long


def posts_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["created_ms", "topics", "label", "polarity", "author", "text", "quoted_text", "lang", "is_retweet", "model", "id", "p_neg", "p_neu", "p_pos"])
    if df.empty:
        return df
    df.insert(0, "time", pd.to_datetime(df.pop("created_ms"), unit="ms", utc=True).dt.strftime("%Y-%m-%d %H:%M"))
    df.insert(1, "sentiment", df.pop("label").map(dict(enumerate(LABELS))))
    df["link"] = [post_link(i) for i in df["id"]]
    if df["author"].isna().all():
        df = df.drop(columns=["author"])
    if df["quoted_text"].isna().all():
        df = df.drop(columns=["quoted_text"])
    return df


def post_link(pid: str) -> str | None:
    """The original post on x.com or bsky.app."""
    src, _, rest = pid.partition(":")
    if src == "x" and rest.isdigit():
        return f"https://x.com/i/web/status/{rest}"
    if src == "bsky" and rest.startswith("at://"):
        parts = rest[len("at://"):].split("/")
        if len(parts) == 3:
            return f"https://bsky.app/profile/{parts[0]}/post/{parts[2]}"
    return None


#: a spreadsheet runs a cell that starts with one of these as a formula (CSV injection)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_bytes(df: pd.DataFrame) -> bytes:
    """CSV for spreadsheets: text cells that a spreadsheet would run as a formula are prefixed
    with an apostrophe (OWASP's advice), so ``=HYPERLINK(...)`` in a post stays text."""
    safe = df.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(_FORMULA_START) else v) if not df.empty else df
    return safe.to_csv(index=False).encode()
