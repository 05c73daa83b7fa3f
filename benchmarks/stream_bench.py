"""Replay -> store throughput against the Scorer's raw throughput on the same posts.

``python -m benchmarks.stream_bench --model models/X [--n 3000] [--repeat K] [--rounds 3] [--update]``: takes the
first N tweets of the SemEval-2017 test file that match the default dashboard topics (2,108 of them), writes them
to a SemEval TSV (``--repeat K``: K times over, the k-th copy's ids raised by k, so that a longer run measures the
steady state rather than the pipeline's fill and drain), and alternates (a) ``Scorer.score`` over all texts in batches of 64 and (b) a full
``Pipeline`` run (replay, tracker, micro-batches of 64, SQLite store in WAL mode) into a fresh
database. Reports posts/s of both and their ratio (target: pipeline >= 80% of raw).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from runtime import Scorer
from stream.formats import semeval_test_file
from stream.pipeline import Pipeline
from stream.replay import ReplaySource
from stream.store import Store
from stream.tracker import DEFAULT_TOPICS, Topic, Tracker

from .report import append_benchmarks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stream_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.environ.get("SPARSEPULSE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=1, help="replay the matched posts K times (distinct ids): a longer run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--update", action="store_true", help="append the result to BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    tracker = Tracker([Topic.parse(k, v) for k, v in DEFAULT_TOPICS.items()])
    src_file = semeval_test_file(args.data)
    # a line with a non-numeric id is left out (the replay would skip it; --repeat could not raise it)
    lines = [l for l in src_file.read_text(encoding="utf-8").splitlines() if len(l.split("\t")) >= 3 and l.partition("\t")[0].isdigit() and tracker.match(" ".join(l.split("\t")[2:]))][: args.n]
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as work:  # the TSV and one database per round, removed after
        return _run(args, argv, tracker, lines, Path(work))


def _run(args, argv, tracker: Tracker, lines: list[str], tmp: Path) -> int:
    tsv = tmp / "matched.tsv"
    # the k-th copy's ids raised by k: the snowflake's sequence bits, the same creation time, distinct ids
    rows = [l.partition("\t") for l in lines]
    copies = [f"{int(pid) + k}\t{rest}" for k in range(args.repeat) for pid, _, rest in rows]
    tsv.write_text("\n".join(copies) + "\n", encoding="utf-8")
    texts = [p.text for _, p in ReplaySource(tsv).items()]
    scorer = Scorer(args.model, threads=args.threads)
    from stream.language import LanguageDetector

    LanguageDetector().warm_up()  # both sides start warm: the Scorer's model and the language model loaded (once per process)
    raw, pipe = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for s in range(0, len(texts), 64):
            scorer.score(texts[s : s + 64])
        raw.append(len(texts) / (time.perf_counter() - t0))
        store = Store(tmp / f"db{r}.sqlite")
        for t in tracker.topics:
            store.save_topic(t)
        t0 = time.perf_counter()
        st = Pipeline(ReplaySource(tsv), scorer, store, model_name=Path(args.model).name, batch_size=64).run()
        pipe.append(st.stored / (time.perf_counter() - t0))
        assert st.stored == len(texts), (st.stored, len(texts))
        print(f"round {r + 1}: raw {raw[-1]:.0f} posts/s, pipeline {pipe[-1]:.0f} posts/s", file=sys.stderr)
    from stream.language import LanguageDetector

    det = LanguageDetector()
    det.detect("warm up the model, please")
    t0 = time.perf_counter()
    for t in texts:
        det.detect(t)
    lid_rate = len(texts) / (time.perf_counter() - t0)
    r_raw, r_pipe = statistics.median(raw), statistics.median(pipe)
    line = f"| {Path(args.model).name} | {len(texts)} | {r_raw:.0f} | {r_pipe:.0f} | {100 * r_pipe / r_raw:.0f}% | {lid_rate:,.0f} |"
    table = "| model | posts | Scorer raw posts/s | replay -> store posts/s | ratio | language identification texts/s (one thread) |\n| --- | --- | --- | --- | --- | --- |\n" + line
    print(table)
    if args.update:
        cmd = "python -m benchmarks.stream_bench " + " ".join(argv if argv is not None else sys.argv[1:])
        append_benchmarks("Stream pipeline", cmd, f"Medians of {args.rounds} alternating rounds, {args.threads} threads.\n\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
