"""Soak test: a hostile stream through the real pipeline, with random ``kill -9`` and restarts.

``python -m stream soak --records N --minutes M`` writes two recorded files into a work folder, a
JSON-lines file (X API v2 tweets) and a CSV file, mixing valid posts with every kind of hostile
record the hostile-streams issue lists (implausible times, lone surrogates and NUL, non-string
ids, missing / empty / oversized text, broken and absurdly nested JSON, bad UTF-8, lines past the
line cap, oversized CSV fields, unterminated CSV quotes, rows of the wrong width) and *poison*
posts that the scorer refuses (a fault-injecting wrapper around the real Scorer: the pipeline
must quarantine exactly those). It then replays both files with ``python -m stream.soak child``
(the real Pipeline, Store and Scorer), kills the child with SIGKILL at random moments and
restarts it until every file is consumed or the time is up, and finally checks the store against
what the generator knows:

- every valid post that matches a topic is stored exactly once (none lost, none duplicated),
  nothing else is stored;
- every poison post is in ``rejects``, once;
- the skip counts by reason equal the hostile records generated, reason by reason.

It prints a table of records in / stored / rejected / skipped by reason and exits 1 on any
mismatch. ``--check-dashboard`` also renders the dashboard (Streamlit AppTest) on the final store.
"""
from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["generate", "verify", "run_soak", "main", "POISON"]

#: the fault-injecting scorer refuses any text holding this marker
POISON = "\u2620POISON\u2620"
TOPICS = {"apple": "apple", "banana": "banana"}
_WORDS = "good bad fine great awful okay love hate meh weather train coffee music".split()
_T0 = 1_600_000_000  # 2020-09-13: valid posts' times start here


@dataclasses.dataclass
class Expected:
    """What the generator wrote: the ids that must be stored / rejected, skips by reason."""

    stored: set = dataclasses.field(default_factory=set)
    rejected: set = dataclasses.field(default_factory=set)
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    records: int = 0
    hostile: int = 0
    unmatched: int = 0

    def merge(self, other: "Expected") -> None:
        self.stored |= other.stored
        self.rejected |= other.rejected
        self.skipped.update(other.skipped)
        self.records += other.records
        self.hostile += other.hostile
        self.unmatched += other.unmatched


def _text(rng: random.Random, matched: bool) -> str:
    words = rng.choices(_WORDS, k=rng.randint(3, 12))
    if matched:
        words.insert(rng.randrange(len(words) + 1), rng.choice(list(TOPICS)))
    return " ".join(words)


def _jsonl_hostile(rng: random.Random, i: int, created: str, exp: Expected) -> bytes:
    """One hostile JSON line (or a valid-but-nasty one); records its expected outcome."""
    pid = str(10**12 + i)
    kind = rng.randrange(16)

    def post(text, **over):
        return json.dumps({"id": pid, "text": text, "created_at": created, **over}).encode()

    if kind == 0:
        exp.skipped["bad_time"] += 1
        return post("apple far future", created_at="9999-12-31T23:59:59Z")
    if kind == 1:
        exp.skipped["bad_time"] += 1
        return post("apple ancient", created_at=rng.choice(["1600-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "2006-01-01T00:00:00Z"]))
    if kind == 2:  # lone surrogate: cleaned and stored
        exp.stored.add("x:" + pid)
        return post("apple \ud800 lone surrogate \udfff")
    if kind == 3:  # NUL and control characters: cleaned and stored
        exp.stored.add("x:" + pid)
        return post("apple \x00 nul \x07 bell")
    if kind == 4:
        exp.skipped["bad_id"] += 1
        return json.dumps({"id": rng.choice([{"x": 1}, True, 1.5, [1]]), "text": "apple odd id", "created_at": created}).encode()
    if kind == 5:
        exp.skipped["missing_text"] += 1
        return json.dumps({"id": pid, "created_at": created, "text": rng.choice([None, 5, ["apple"]])}).encode()
    if kind == 6:
        exp.skipped["empty_text"] += 1
        return post(" \t ")
    if kind == 7:
        exp.skipped["text_too_long"] += 1
        return post("apple " + "x" * 30_000)
    if kind == 8:
        exp.skipped["malformed_json"] += 1
        return post("apple cut")[: rng.randint(1, 30)]
    if kind == 9:
        exp.skipped["malformed_json"] += 1
        return b"[" * 200_000 + b"]" * 200_000
    if kind == 10:
        exp.skipped["bad_utf8"] += 1
        return post("apple bytes").replace(b"bytes", b"by\xff\xfetes")
    if kind == 11:
        exp.skipped["malformed_record"] += 1
        return b"[1, 2, 3]"
    if kind == 12:  # a poison post: matched, then refused by the scorer -> quarantined
        exp.rejected.add("x:" + pid)
        return post(f"apple {POISON} {i}")
    if kind == 13:  # markup and spreadsheet formulas: stored verbatim
        exp.stored.add("x:" + pid)
        return post(rng.choice(['apple =HYPERLINK("http://evil","x")', "apple <script>alert(1)</script>", "apple [x](javascript:alert(1))"]))
    if kind == 14:
        exp.skipped["missing_id"] += 1
        return json.dumps({"text": "apple no id", "created_at": created}).encode()
    exp.skipped["bad_time"] += 1
    return post("apple bad time", created_at="not a time at all")


def generate(folder: Path, records: int, hostile: float, seed: int, huge_lines: int = 3) -> tuple[list[Path], Expected]:
    """Write ``soak.jsonl`` (90% of the records) and ``soak.csv`` (10%) into ``folder``."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    exp = Expected()
    n_json = records - records // 10
    huge_at = set(rng.sample(range(100, max(101, n_json)), min(huge_lines, max(0, n_json - 100))))
    jpath = folder / "soak.jsonl"
    with open(jpath, "wb") as f:
        for i in range(n_json):
            created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(_T0 + i))
            exp.records += 1
            if i in huge_at:  # past the 8 MiB line cap: skipped while it streams by
                f.write(b'{"id": "1", "text": "apple ' + b"y" * (9 << 20) + b'"}\n')
                exp.skipped["line_too_long"] += 1
                exp.hostile += 1
                continue
            if i >= 20 and rng.random() < hostile:  # the first lines stay valid: format detection
                f.write(_jsonl_hostile(rng, i, created, exp) + b"\n")
                exp.hostile += 1
            else:
                matched = rng.random() < 0.3
                pid = str(10**12 + i)
                f.write(json.dumps({"id": pid, "text": _text(rng, matched), "created_at": created, "lang": "en"}).encode() + b"\n")
                if matched:
                    exp.stored.add("x:" + pid)
                else:
                    exp.unmatched += 1
            if rng.random() < 0.01:
                f.write(b"\n\n  \r\n")  # blank lines: not records
    cpath = folder / "soak.csv"
    cexp = _write_csv(cpath, records // 10, hostile, rng, n_json)
    exp.merge(cexp)
    return [jpath, cpath], exp


def _write_csv(path: Path, n: int, hostile: float, rng: random.Random, base: int) -> Expected:
    """CSV rows; hostile ones at least CSV_LOOKAHEAD_LINES + 10 rows apart (an unterminated quote
    looks ahead that far before it gives up, so the outcome of each stays exact)."""
    from .replay import CSV_LOOKAHEAD_LINES

    exp = Expected()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tweet_id", "text", "tweet_created", "name"])
    gap = CSV_LOOKAHEAD_LINES + 10
    last_hostile = -gap
    for j in range(n):
        i = base + j
        pid = str(10**12 + i)
        created = time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(_T0 + i))
        exp.records += 1
        if j - last_hostile >= gap and rng.random() < hostile * gap:
            last_hostile = j
            exp.hostile += 1
            kind = rng.randrange(5)
            if kind == 0:
                buf.write(f'{pid},"apple {"z" * 140_000}",{created},x\n')
                exp.skipped["field_too_long"] += 1
            elif kind == 1:
                buf.write(f'{pid},"apple never closed,{created},x\n')
                exp.skipped["bad_quote"] += 1
            elif kind == 2:
                buf.write(f"{pid},apple,too,many,fields\n")
                exp.skipped["wrong_field_count"] += 1
            elif kind == 3:
                buf.write(f"{pid},apple {POISON} csv,{created},x\n")
                exp.rejected.add("x:" + pid)
            else:
                buf.write(f"{pid},apple 2 lines,{created},x\n".replace("2 lines", "bad \udcff utf8"))
                exp.skipped["bad_utf8"] += 1
            continue
        matched = rng.random() < 0.3
        w.writerow([pid, _text(rng, matched), created, "someone"])
        (exp.stored.add("x:" + pid) if matched else None)
        exp.unmatched += 0 if matched else 1
    path.write_bytes(buf.getvalue().encode("utf-8", "surrogateescape"))
    return exp


# ------------------------------------------------------------------ the child: the real pipeline
class _FaultScorer:
    """The real Scorer, refusing any batch that holds a poison post (fault injection)."""

    def __init__(self, inner):
        self.inner = inner

    def score(self, texts):
        if any(POISON in t for t in texts):
            raise ValueError("fault injection: poison post")
        return self.inner.score(texts)


def _child(args) -> int:
    from runtime import Scorer

    from .pipeline import Pipeline
    from .replay import ReplaySource
    from .store import Store

    store = Store(args.db)
    scorer = _FaultScorer(Scorer(args.model, threads=1))
    for f in args.files:
        src = ReplaySource(f)
        st = Pipeline(src, scorer, store, model_name=Path(args.model).name, batch_size=64, max_wait_s=0.05).run()
        if st.error:
            print(f"error: {st.error}", file=sys.stderr)
            return 1
    return 0


# ------------------------------------------------------------------ driver and verification
def verify(db: Path, exp: Expected) -> dict:
    """Compare the store with the generator's expectations; returns the figures and mismatches."""
    from .store import Store

    store = Store(db, readonly=True)
    stored = {r[0] for r in store.con.execute("SELECT id FROM posts")}
    n_rows = store.con.execute("SELECT COUNT(*) FROM posts").fetchone()[0]
    n_scores = store.con.execute("SELECT COUNT(*) FROM scores").fetchone()[0]
    rejected = [r[0] for r in store.con.execute("SELECT post_id FROM rejects")]
    skipped = collections.Counter(store.skip_counts())
    out = {
        "records": exp.records,
        "hostile": exp.hostile,
        "hostile_share": exp.hostile / max(exp.records, 1),
        "expected_stored": len(exp.stored),
        "stored": len(stored),
        "lost": len(exp.stored - stored),
        "unexpected": len(stored - exp.stored),
        "duplicated": n_rows - len(stored),
        "scores": n_scores,
        "expected_rejected": len(exp.rejected),
        "rejected": len(rejected),
        "rejected_twice": len(rejected) - len(set(rejected)),
        "reject_mismatch": len(set(rejected) ^ exp.rejected),
        "skipped": dict(sorted(skipped.items())),
        "expected_skipped": dict(sorted(exp.skipped.items())),
        "unmatched": exp.unmatched,
    }
    out["ok"] = (
        out["lost"] == 0 and out["unexpected"] == 0 and out["duplicated"] == 0 and n_scores == len(stored)
        and out["rejected_twice"] == 0 and out["reject_mismatch"] == 0 and skipped == exp.skipped
    )
    store.close()
    return out


def run_soak(work: Path, records: int, minutes: float, hostile: float, kill_min: float, kill_max: float, seed: int, model: Path, log=print) -> dict:
    """Generate, replay with random kill -9 until done or out of time, verify. Returns the figures."""
    work.mkdir(parents=True, exist_ok=True)
    db = work / "soak.db"
    for p in (db, Path(str(db) + "-wal"), Path(str(db) + "-shm")):
        p.unlink(missing_ok=True)
    t0 = time.monotonic()
    files, exp = generate(work, records, hostile, seed)
    gen_s = time.monotonic() - t0
    log(f"generated {exp.records} records ({exp.hostile} hostile, {exp.hostile / exp.records:.1%}) in {gen_s:.0f} s")
    from .store import Store
    from .tracker import Topic

    store = Store(db)
    for name, spec in TOPICS.items():
        store.save_topic(Topic.parse(name, spec))
    store.close()
    rng = random.Random(seed + 1)
    cmd = [sys.executable, "-m", "stream.soak", "child", "--db", str(db), "--model", str(model), *map(str, files)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    kills = restarts = 0
    deadline = t0 + minutes * 60
    finished = False
    t_run = time.monotonic()
    while time.monotonic() < deadline:
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        restarts += 1
        wait = rng.uniform(kill_min, kill_max)
        try:
            rc = p.wait(timeout=max(0.1, min(wait, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stderr.close()
            kills += 1
            continue
        err = p.stderr.read().decode("utf-8", "replace")
        p.stderr.close()
        if rc != 0:
            raise RuntimeError(f"soak child exited {rc}: {err[-2000:]}")
        finished = True
        break
    run_s = time.monotonic() - t_run
    res = verify(db, exp)
    res.update(kills=kills, starts=restarts, finished=finished, generate_s=gen_s, replay_s=run_s, records_per_s=exp.records / max(run_s, 1e-9))
    res["ok"] = res["ok"] and finished
    return res


def report(res: dict) -> str:
    lines = [
        "| figure | value |",
        "| --- | --- |",
        f"| records in | {res['records']:,} ({res['hostile']:,} hostile, {100 * res['hostile_share']:.1f}%) |",
        f"| kill -9 / starts | {res['kills']} / {res['starts']} |",
        f"| replay wall time | {res['replay_s'] / 60:.1f} min ({res['records_per_s']:,.0f} records/s with restarts) |",
        f"| valid matched posts expected / stored | {res['expected_stored']:,} / {res['stored']:,} |",
        f"| lost / duplicated / unexpected | {res['lost']} / {res['duplicated']} / {res['unexpected']} |",
        f"| poison posts expected / rejected (twice) | {res['expected_rejected']} / {res['rejected']} ({res['rejected_twice']}) |",
        f"| valid unmatched (not stored) | {res['unmatched']:,} |",
        "| skipped by reason (store / generator) | " + ", ".join(f"{k} {res['skipped'].get(k, 0):,}/{v:,}" for k, v in res["expected_skipped"].items()) + " |",
        f"| verdict | {'PASS' if res['ok'] else 'FAIL'} |",
    ]
    return "\n".join(lines)


def _check_dashboard(db: Path) -> None:
    """Render the dashboard (Streamlit AppTest) on ``db``; the environment is restored afterwards."""
    from streamlit.testing.v1 import AppTest

    saved = {k: os.environ.get(k) for k in ("SPARSEPULSE_DB", "SPARSEPULSE_DATA")}
    os.environ["SPARSEPULSE_DB"] = str(db)
    os.environ["SPARSEPULSE_DATA"] = str(db.parent / "no-data")
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
        at.run()
        if at.exception:
            raise RuntimeError(f"the dashboard failed on the soak store: {at.exception}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stream.soak", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="generate, replay with random kill -9, verify")
    add_run_args(r)
    c = sub.add_parser("child", help="(internal) replay the files into the store with the fault-injecting scorer")
    c.add_argument("--db", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("files", nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "child":
        return _child(args)
    return run_from_args(args)


def add_run_args(r: argparse.ArgumentParser) -> None:
    r.add_argument("--records", type=int, default=100_000)
    r.add_argument("--minutes", type=float, default=10.0, help="stop replaying after this long (the verdict then fails unless every file was consumed)")
    r.add_argument("--hostile", type=float, default=0.06, help="share of hostile JSON lines (default %(default)s)")
    r.add_argument("--kill-every", default="5:40", help="seconds between kill -9, MIN:MAX (default %(default)s)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--work", default="data/soak", help="folder for the generated files and the store (default %(default)s)")
    r.add_argument("--model", default=None, help="model directory (default: the preferred shipped model)")
    r.add_argument("--check-dashboard", action="store_true", help="also render the dashboard on the final store (AppTest)")


def run_from_args(args) -> int:
    from .cli import default_model_dir

    lo, hi = (float(x) for x in args.kill_every.split(":"))
    res = run_soak(Path(args.work), args.records, args.minutes, args.hostile, lo, hi, args.seed, Path(args.model) if args.model else default_model_dir())
    print(report(res))
    if args.check_dashboard:
        _check_dashboard(Path(args.work) / "soak.db")
        print("dashboard: rendered on the final store")
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
