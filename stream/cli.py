"""``python -m stream``: replay recorded posts into the store, manage topics, retention."""
from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from pathlib import Path

__all__ = ["main", "DEFAULT_DB", "default_model_dir"]

DEFAULT_DB = "data/sparsepulse.db"
_MODELS = Path(__file__).resolve().parents[1] / "models"


def default_model_dir() -> Path:
    """The preferred shipped model that exists (smallest first), else an error."""
    for name in ("sparsepulse-3l-80-4b-int8", "sparsepulse-6l-80-4b-int8", "sparsepulse-6l-dense-int8"):
        if (_MODELS / name / "model.safetensors").is_file():
            return _MODELS / name
    raise FileNotFoundError(f"no shipped model under {_MODELS}; pass --model DIR")


def _parse_topic(spec: str):
    from .tracker import Topic

    if "=" not in spec:
        raise argparse.ArgumentTypeError(f"--topic {spec!r}: expected NAME=term,term,...")
    name, terms = spec.split("=", 1)
    try:
        return Topic.parse(name, terms)
    except ValueError as e:  # argparse would print only "invalid _parse_topic value"
        raise argparse.ArgumentTypeError(str(e)) from None


def _parse_map(spec: str) -> dict[str, str]:
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise argparse.ArgumentTypeError(f"--csv-map {spec!r}: expected field=column,...")
        k, v = part.split("=", 1)
        if k.strip() not in ("id", "text", "time", "author", "lang"):
            raise argparse.ArgumentTypeError(f"--csv-map: unknown field {k!r}")
        out[k.strip()] = v.strip()
    return out


def _run(args, make_source) -> int:
    """Common to all sources: topics, model, pipeline, progress, summary."""
    from runtime import Scorer

    from .pipeline import Pipeline
    from .store import Store

    store = Store(args.db)
    for t in args.topic or []:
        store.save_topic(t)
    if not store.topics():
        print("error: no topics: add some with --topic NAME=term,term (they are kept in the store)", file=sys.stderr)
        return 2
    src = make_source(store)
    model_dir = Path(args.model) if args.model else default_model_dir()
    if getattr(args, "ray", None):
        from .backfill import RayScorer

        scorer = RayScorer(model_dir, args.ray, actors=args.actors, threads=max(1, args.threads))
    else:
        scorer = Scorer(model_dir, threads=args.threads)
    pipe = Pipeline(src, scorer, store, model_name=model_dir.name, batch_size=args.batch_size, max_batch_size=max(args.batch_size, args.max_batch_size), max_wait_s=args.max_wait_ms / 1000)
    signal.signal(signal.SIGTERM, lambda *_: pipe.stop.set())
    pacer = getattr(src, "pacer", None)
    if pacer is not None:  # the dashboard pauses / resumes a replay with SIGUSR1 / SIGUSR2
        signal.signal(signal.SIGUSR1, lambda *_: pacer.pause())
        signal.signal(signal.SIGUSR2, lambda *_: pacer.resume())
    callbacks = []
    if args.status_file:
        callbacks.append(_status_writer(args, src, scorer, pipe, store, model_dir))
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(desc=f"{src.name}", unit=" items", dynamic_ncols=True, mininterval=1.0)

        def on_batch(st):
            bar.n = st.items
            bar.set_postfix(stored=st.stored, skipped=sum(st.skipped.values()), q=st.queue_depth, refresh=False)
            bar.refresh()

        callbacks.append(on_batch)
    pipe.on_batch = (lambda st: [cb(st) for cb in callbacks]) if callbacks else None
    try:
        st = pipe.run()
    except KeyboardInterrupt:
        pipe.stop.set()
        st = pipe.stats
    if bar is not None:
        bar.close()
    if args.status_file:  # the last word: a worker that ends without it died (the dashboard says so)
        callbacks[0](st, force=True, final=True)
    d = st.as_dict()
    print(f"items {d['items']}  posts {d['posts']}  matched {d['matched']}  stored new {d['stored']}  rejected {d['rejected']}  unmatched {d['unmatched']}")
    print("skipped: " + (", ".join(f"{k}={v}" for k, v in sorted(d["skipped"].items())) or "none"))
    if d["rejected"]:
        print("rejected by reason (all time): " + ", ".join(f"{k}={v}" for k, v in sorted(store.reject_counts(src.key).items())))
    for msg in getattr(src, "rule_errors", []) or []:
        print(f"warning: {msg}", file=sys.stderr)
    if d["error"]:
        print(f"error: {d['error']}", file=sys.stderr)
        return 1
    return 0


from runtime.errors import SparsePulseError  # noqa: E402  (light: no native code is loaded)


def _status_writer(args, src, scorer, pipe, store, model_dir):
    """The worker's status (about once a second, also while idle) and its control channel: the
    dashboard asks for another model through the control file; the switch happens between batches,
    the replay keeps its clock, and the store records the switch (the charts mark it)."""
    import time as _time

    from .worker import control_path, read_control, write_status

    pacer = getattr(src, "pacer", None)
    state = {"last": 0.0, "scorer": scorer, "model": model_dir, "skips_reported": 0, "switch_error": None}

    def clock_ms():
        c = pacer.clock() if pacer is not None else None
        return int(c * 1000) if c is not None else None

    def write(st, force=False, final=False):
        if not force and _time.monotonic() - state["last"] < 1.0:
            return
        state["last"] = _time.monotonic()
        want = read_control(control_path(args.db)).get("model")
        if want and Path(want).resolve() != state["model"].resolve():
            from runtime import Scorer

            try:
                new = Scorer(want, threads=args.threads)
            except (OSError, ValueError, SparsePulseError) as e:  # a broken model: keep scoring with the current one
                state["switch_error"] = f"cannot switch to {Path(want).name}: {e}"
            else:
                old = state["model"].name
                state.update(scorer=new, model=Path(want), switch_error=None)
                pipe.scorer, pipe.model_name = new, Path(want).name
                store.add_event("model_switch", f"{old} -> {Path(want).name}", post_ms=clock_ms())
        if pacer is not None:
            for a, b in pacer.skipped[state["skips_reported"]:]:
                store.add_event("skip", f"idle replay gap of {(b - a) / 3600:.1f} h of post time skipped (--max-idle)", post_ms=int(a * 1000), end_post_ms=int(b * 1000))
            state["skips_reported"] = len(pacer.skipped)
        sc = state["scorer"]
        d = st.as_dict()
        run_state = ("stopped" if d["stopped"] else "finished") if d["finished"] else ("paused" if pacer is not None and pacer.paused else ("idle" if (pacer is not None and d["queue_depth"] == 0 and _idle_for(pacer) > 1.0) else "running"))
        write_status(Path(args.status_file), {
            **d, "state": run_state, "source": src.name, "source_errors": list(getattr(src, "rule_errors", []) or []),
            "model": state["model"].name, "model_path": str(state["model"]), "model_bytes": sc.model_bytes, "kernel": sc.kernel_name,
            "paused": bool(pacer and pacer.paused), "scorer": sc.stats(), "switch_error": state["switch_error"],
            "clock_ms": clock_ms(), "speed": pacer.speed if pacer is not None else None, "max_rate": pacer.max_rate if pacer is not None else None,
            "next_post_ms": int(pacer.next_due * 1000) if pacer is not None and pacer.next_due is not None else None,
            "written_wall": _time.time(), "exited": final,
        })

    return write


def _idle_for(pacer) -> float:
    """Seconds the replay has been waiting for its next post (0 when not waiting): pacing of a few
    posts per second (``--max-rate``) is running, a wait of more than a second is idle."""
    import time

    started = pacer.wait_started
    return time.monotonic() - started if started is not None and pacer.next_due is not None else 0.0


def _cmd_replay(args) -> int:
    from .replay import ReplaySource

    return _run(args, lambda store: ReplaySource(args.file, fmt=args.format, csv_map=args.csv_map, speed=args.speed, max_idle=args.max_idle, max_rate=args.max_rate))


def _cmd_backfill(args) -> int:
    from .backfill import backfill, plan
    from .store import Store

    if args.shard_mb <= 0 or args.threads < 0 or args.actors < 0:
        raise ValueError("--shard-mb must be > 0, --threads and --actors >= 0")
    store = Store(args.db)
    for t in args.topic or []:
        store.save_topic(t)
    shards = plan(args.files, int(args.shard_mb * (1 << 20)), fmt=args.format)
    model_dir = Path(args.model) if args.model else default_model_dir()
    d = backfill(shards, args.db, model_dir, ray_address=args.ray, actors=args.actors, threads=args.threads, batch_size=args.batch_size, max_batch_size=max(args.batch_size, args.max_batch_size), progress=not args.quiet)
    rate = d["items"] / d["seconds"] if d["seconds"] else 0.0
    print(f"shards {d['shards']} (re-queued after a lost actor: {d['retried']})  items {d['items']}  posts {d['posts']}  matched {d['matched']}  stored new {d['stored']}  rejected {d['rejected']}  {rate:,.0f} items/s")
    print("skipped: " + (", ".join(f"{k}={v}" for k, v in sorted(d["skipped"].items())) or "none"))
    return 0


def _cmd_bluesky(args) -> int:
    from .bluesky import BlueskySource

    return _run(args, lambda store: BlueskySource(args.url))


def _cmd_x(args) -> int:
    from .x import XSource, token_from_env

    token = token_from_env()
    if not token:
        print("error: set X_BEARER_TOKEN in the environment (it is never stored or logged)", file=sys.stderr)
        return 2
    return _run(args, lambda store: XSource(token, store.topics, max_rule_len=args.rule_length))


def _cmd_topics(args) -> int:
    from .store import Store
    from .tracker import Topic

    store = Store(args.db)
    if args.action == "list":
        for t in store.topics():
            print(f"{t.name}: {t.spec()}")
    elif args.action == "add":
        store.save_topic(Topic.parse(args.name, args.terms))
    elif args.action == "rm":
        if not store.delete_topic(args.name):
            print(f"error: no topic {args.name!r}", file=sys.stderr)
            return 2
    return 0


def _days(value: str) -> float:
    try:
        d = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days {value!r}: not a number") from None
    if not math.isfinite(d) or d <= 0:
        raise argparse.ArgumentTypeError(f"--days {value!r}: must be a finite number of days > 0")
    return d


def _cmd_retain(args) -> int:
    from .store import Store

    n = Store(args.db).retain(args.days)
    print(f"deleted {n} posts older than {args.days} days before the newest; vacuumed")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stream", description="SparsePulse stream: ingest posts, match topics, score, store.")
    ap.add_argument("--db", default=os.environ.get("SPARSEPULSE_DB", DEFAULT_DB), help="the store: an SQLite file (default: %(default)s) or a postgresql:// URL (password better in PGPASSWORD or ~/.pgpass); $SPARSEPULSE_DB")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--topic", action="append", type=_parse_topic, metavar="NAME=TERMS", help='topic to track (saved in the store): NAME=word,"a phrase",#tag,$cash,@user,-exclusion')
        p.add_argument("--model", default=None, help="model directory (default: the smallest shipped model)")
        p.add_argument("--threads", type=int, default=0, help="scoring threads (0 = all cores)")
        p.add_argument("--batch-size", type=int, default=64, help="micro-batch size (default: %(default)s)")
        p.add_argument("--max-batch-size", type=int, default=512, help="when the queue backs up, batches grow up to this size (default: %(default)s)")
        p.add_argument("--max-wait-ms", type=float, default=200.0, help="close a micro-batch after this long (default: %(default)s)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.add_argument("--status-file", default=None, help="write pipeline stats here as JSON about once a second (the dashboard reads it)")
        ray_args(p)

    def ray_args(p):
        p.add_argument("--ray", default=None, metavar="auto|local|ADDRESS", help="score on a Ray cluster: auto = the one `ray start` began on this machine, local = a private one here, or a cluster address (needs sparsepulse[cluster])")
        p.add_argument("--actors", type=int, default=0, help="with --ray: scoring actors (0 = one per CPU of the cluster)")

    r = sub.add_parser("replay", help="replay a recorded file (twarc2, v2, v1.1, CSV, SemEval TSV; .gz ok)", description="Replay a recorded file into the store. Resumes where the last run stopped; re-delivered posts are stored once.")
    r.add_argument("file")
    r.add_argument("--speed", type=float, default=0.0, help="real time x SPEED following the posts' timestamps (0 = as fast as possible; 1440 = a day per minute)")
    r.add_argument("--max-idle", type=float, default=0.0, metavar="SECONDS", help="wait at most this long for the next post: longer gaps in the recording are skipped (and marked on the charts); 0 = never skip (default)")
    r.add_argument("--max-rate", type=float, default=0.0, metavar="POSTS_PER_S", help="release at most this many posts per second: a burst is spread out and the replay clock slows through it; 0 = no cap (default)")
    r.add_argument("--format", default=None, help="override format detection: twarc2, twarc2-flat, v2, v1, csv, semeval")
    r.add_argument("--csv-map", type=_parse_map, default=None, metavar="FIELD=COL,...", help="CSV columns for id, text, time, author, lang")
    common(r)

    b = sub.add_parser("bluesky", help="live Bluesky posts (Jetstream, free, no account); matched client-side", description="Follow Bluesky's Jetstream; posts matching the topics are scored and stored. Resumes from the stored cursor.")
    b.add_argument("--url", default="wss://jetstream2.us-east.bsky.network/subscribe", help="Jetstream endpoint (default: %(default)s)")
    common(b)

    xp = sub.add_parser("x", help="live X posts (filtered stream; needs X_BEARER_TOKEN and an access level with streaming)", description="Follow X's v2 filtered stream with rules built from the topics (tagged sparsepulse:<topic>, re-synced when topics change). The token is read from X_BEARER_TOKEN and never stored.")
    xp.add_argument("--rule-length", type=int, default=512, choices=(512, 1024, 2048), help="maximum rule length of your access level: 1024 (Pro, pay-per-use) or 2048 (Enterprise); 512 is valid everywhere (default)")
    common(xp)

    bf = sub.add_parser("backfill", help="score recorded files as fast as the machine (or a Ray cluster) allows, in shards that each resume on their own",
                        description="Backfill recorded files: large uncompressed line-per-item files are cut into byte-range shards on line starts, each with its own offset in the store, so a shard retried after a crash (or a lost Ray node) resumes where it stopped and every post is stored once.")
    bf.add_argument("files", nargs="+")
    bf.add_argument("--format", default=None, help="override format detection (all files): twarc2, twarc2-flat, v2, v1, csv, semeval")
    bf.add_argument("--shard-mb", type=float, default=64.0, help="split uncompressed line-per-item files into shards of about this many MB (default: %(default)s)")
    bf.add_argument("--topic", action="append", type=_parse_topic, metavar="NAME=TERMS", help="topic to track (saved in the store)")
    bf.add_argument("--model", default=None, help="model directory (default: the smallest shipped model)")
    bf.add_argument("--threads", type=int, default=1, help="scoring threads per actor, or of this process without --ray (default: %(default)s)")
    bf.add_argument("--batch-size", type=int, default=64)
    bf.add_argument("--max-batch-size", type=int, default=512)
    bf.add_argument("--quiet", action="store_true", help="no progress bar")
    ray_args(bf)

    t = sub.add_parser("topics", help="list, add or remove tracked topics")
    tsub = t.add_subparsers(dest="action", required=True)
    tsub.add_parser("list")
    ta = tsub.add_parser("add", help='add or replace: topics add NAME "term, #tag, -exclusion"')
    ta.add_argument("name")
    ta.add_argument("terms")
    tr = tsub.add_parser("rm")
    tr.add_argument("name")

    rt = sub.add_parser("retain", help="delete posts older than N days before the newest, then VACUUM")
    rt.add_argument("--days", type=_days, required=True, help="days to keep before the newest post (> 0)")

    sk = sub.add_parser("soak", help="hostile stream through the real pipeline with random kill -9 and restarts; verifies exactly-once", description="Generate a hostile recorded stream, replay it with random kill -9 and restarts, and check that every valid post is stored exactly once and every hostile record is counted by reason.")
    from .soak import add_run_args

    add_run_args(sk)

    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    from .formats import UnknownFormat
    from .store import StoreError
    from .tracker import TopicError
    from .x import XAccessError
    from runtime.errors import SparsePulseError

    try:
        if args.cmd == "soak":
            from .soak import run_from_args

            return run_from_args(args)
        return {"backfill": _cmd_backfill, "replay": _cmd_replay, "bluesky": _cmd_bluesky, "x": _cmd_x, "topics": _cmd_topics, "retain": _cmd_retain}[args.cmd](args)
    except (UnknownFormat, StoreError, TopicError, SparsePulseError, FileNotFoundError, XAccessError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
