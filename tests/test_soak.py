"""A short soak: the hostile stream through the real pipeline, with random kill -9 and restarts.

The 30-minute, 1,000,000-record run is `python -m stream soak` (figures in BENCHMARKS.md, RELIABILITY)."""
import sqlite3

from stream.soak import report, run_soak, verify


def test_short_soak_with_kills_is_exact_and_the_dashboard_renders(tmp_path, synthetic_model_dir):
    res = run_soak(tmp_path / "soak", records=30000, minutes=4, hostile=0.08, kill_min=0.8, kill_max=2.0, seed=3, model=synthetic_model_dir, log=lambda *_: None)
    print(report(res))
    assert res["ok"], report(res)
    assert res["kills"] >= 1 and res["lost"] == 0 and res["duplicated"] == 0
    assert res["hostile_share"] >= 0.05 and len(res["expected_skipped"]) >= 10
    from stream.soak import _check_dashboard

    _check_dashboard(tmp_path / "soak" / "soak.db")


def test_verify_catches_a_lost_post_and_a_wrong_count(tmp_path, synthetic_model_dir):
    """The check can fail: remove one stored post, or add one skip, and the verdict is FAIL."""
    res = run_soak(tmp_path / "soak", records=2000, minutes=2, hostile=0.08, kill_min=60, kill_max=60, seed=4, model=synthetic_model_dir, log=lambda *_: None)
    assert res["ok"]
    from stream.soak import generate

    _, exp = generate(tmp_path / "regen", 2000, 0.08, 4)
    db = tmp_path / "soak" / "soak.db"
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM posts WHERE id = (SELECT id FROM posts LIMIT 1)")
    bad = verify(db, exp)
    assert not bad["ok"] and bad["lost"] == 1
    with sqlite3.connect(db) as con:
        con.execute("UPDATE skips SET count = count + 1 WHERE reason = 'bad_time'")
    assert not verify(db, exp)["ok"]
