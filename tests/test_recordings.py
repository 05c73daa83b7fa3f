"""Real recordings and real X rules: one test per defect of the issue, on small recordings written
here in the same JSON / CSV shapes as twarc2, twarc-csv, the X API v1.1 and v2 and Jetstream produce
(the tweets themselves are made up)."""
import json
import types

import numpy as np
import pytest

from stream.bluesky import parse_jetstream
from stream.formats import UnknownFormat
from stream.pipeline import Pipeline
from stream.post import Post
from stream.replay import ReplaySource
from stream.store import Store
from stream.tracker import Topic, Tracker
from stream.x import TAG_PREFIX, XSource

FULL = "Congratulations to the boys on their seventh anniversary, what a journey it has been from the first debut stage to the stadium tours around the world #bts #army"
TRUNC = "RT @bts_fan: Congratulations to the boys on their seventh anniversary, what a journey it has been from the first debut stage to the st…"


def _posts(path, **kw):
    return [x for _, x in ReplaySource(path, **kw).items() if isinstance(x, Post)]


def _lines(path, objs):
    path.write_text("\n".join(json.dumps(o) for o in objs) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------ 1. retweets keep their full text
def test_twarc2_raw_retweet_takes_the_full_text_from_includes(tmp_path):
    page = {
        "data": [{"id": "1440717170493689866", "text": TRUNC, "created_at": "2021-09-22T16:00:00.000Z", "author_id": "7", "referenced_tweets": [{"type": "retweeted", "id": "1440700000000000000"}]}],
        "includes": {"tweets": [{"id": "1440700000000000000", "text": FULL, "author_id": "9", "created_at": "2021-09-22T15:00:00.000Z"}], "users": [{"id": "7", "username": "someone"}, {"id": "9", "username": "bts_fan"}]},
        "meta": {"result_count": 1},
    }
    [p] = _posts(_lines(tmp_path / "rt.jsonl", [page]))
    assert p.text == "RT @bts_fan: " + FULL and p.is_retweet and p.author == "someone"
    assert Tracker([Topic.parse("bts", "#bts")]).match(p.text) == ["bts"]  # the hashtag past the "…"


def test_twarc2_flattened_retweet_and_v1_retweeted_status(tmp_path):
    flat = {"id": "11", "text": TRUNC, "created_at": "2021-09-22T16:00:00.000Z", "author": {"username": "someone"}, "__twarc": {"url": "x"},
            "referenced_tweets": [{"type": "retweeted", "id": "12", "text": FULL, "author": {"username": "bts_fan"}}]}
    [p] = _posts(_lines(tmp_path / "flat.jsonl", [flat]))
    assert p.text == "RT @bts_fan: " + FULL and p.is_retweet
    v1 = {"id_str": "21", "created_at": "Wed Sep 22 16:00:00 +0000 2021", "text": TRUNC, "user": {"screen_name": "someone"},
          "retweeted_status": {"id_str": "22", "text": FULL[:100] + "…", "truncated": True, "extended_tweet": {"full_text": FULL}, "user": {"screen_name": "bts_fan"}}}
    [q] = _posts(_lines(tmp_path / "v1.jsonl", [v1]))
    assert q.text == "RT @bts_fan: " + FULL and q.is_retweet


def test_a_retweet_whose_original_is_missing_keeps_its_own_text(tmp_path):
    page = {"data": [{"id": "31", "text": TRUNC, "created_at": "2021-09-22T16:00:00.000Z", "referenced_tweets": [{"type": "retweeted", "id": "404"}]}], "meta": {}}
    [p] = _posts(_lines(tmp_path / "rt.jsonl", [page]))
    assert p.text == TRUNC and p.is_retweet


# ------------------------------------------------------------------ 2. quote tweets match on the quoted text
class RecordingScorer:
    def __init__(self):
        self.seen = []

    def score(self, texts):
        self.seen += list(texts)
        probs = np.full((len(texts), 3), 1 / 3, np.float32)
        return probs.argmax(1), probs


def test_quote_tweet_matches_on_the_quoted_text_and_is_scored_on_its_own(tmp_path):
    line = {
        "data": {"id": "1377650090978992134", "text": "This is the best thing I have read all week", "created_at": "2021-04-01T16:00:00.000Z", "author_id": "5",
                 "referenced_tweets": [{"type": "quoted", "id": "1377600000000000000"}]},
        "includes": {"tweets": [{"id": "1377600000000000000", "text": "Study finds dogs understand far more words than we thought", "author_id": "6"}], "users": [{"id": "5", "username": "reader"}]},
        "matching_rules": [{"id": "1", "tag": TAG_PREFIX + "dogs"}],
    }
    f = _lines(tmp_path / "q.jsonl", [line])
    [p] = _posts(f)
    assert p.quoted_text.startswith("Study finds dogs") and not p.is_retweet
    store = Store(tmp_path / "db.sqlite")
    scorer = RecordingScorer()
    st = Pipeline(ReplaySource(f), scorer, store, model_name="m", tracker=Tracker([Topic.parse("dogs", "dogs")])).run()
    assert st.stored == 1  # it used to be delivered by X and dropped here
    assert scorer.seen == ["This is the best thing I have read all week"]
    row = store.con.execute("SELECT text, quoted_text, is_retweet FROM posts").fetchone()
    assert row == ("This is the best thing I have read all week", "Study finds dogs understand far more words than we thought", 0)


# ------------------------------------------------------------------ 4. X rule errors are surfaced
class RuleClient:
    """get/add/delete_rules as tweepy's StreamingClient answers them; add_rules marks '--b'-like rules invalid."""

    def __init__(self, invalid):
        self.rules, self.invalid, self.sent = [], set(invalid), []

    def get_rules(self):
        return types.SimpleNamespace(data=list(self.rules))

    def delete_rules(self, ids):
        self.rules = [r for r in self.rules if r.id not in ids]

    def add_rules(self, add):
        self.sent.append([r.value for r in add])
        errors = []
        for r in add:
            if r.value in self.invalid:
                errors.append({"value": r.value, "id": None, "title": "UnprocessableEntity", "details": ["Rules must contain a non-negation term (at position 1)"]})
            else:
                self.rules.append(types.SimpleNamespace(value=r.value, tag=r.tag, id=str(len(self.rules) + 1)))
        meta = {"summary": {"created": len(add) - len(errors), "not_created": len(errors), "invalid": len(errors)}}
        return types.SimpleNamespace(data=None, errors=errors, meta=meta)


def test_rule_errors_are_reported_and_not_recorded_as_synced():
    topics = [Topic.parse("good", "bitcoin"), Topic.parse("bad", "ethereum")]
    client = RuleClient(invalid={"ethereum"})
    src = XSource("token", lambda: topics, client=client)
    src.sync_rules()
    assert src.rule_errors and "ethereum" in src.rule_errors[0] and "non-negation" in src.rule_errors[0]
    assert src._synced == [("bitcoin", TAG_PREFIX + "good")]  # the rejected rule is not recorded as synced
    src.sync_rules()
    assert len(client.sent) == 1  # the same rules are not re-sent in a loop
    topics[1] = Topic.parse("bad", "ethereum, eth")  # topics change: synced again, errors re-read
    client.invalid = set()
    src.sync_rules()
    assert src.rule_errors == [] and len(client.sent) == 2


def test_dashboard_shows_the_sources_errors(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from pathlib import Path

    from stream.worker import status_path

    db = tmp_path / "db.sqlite"
    monkeypatch.setenv("SPARSEPULSE_DB", str(db))
    monkeypatch.setenv("SPARSEPULSE_DATA", str(tmp_path / "no-data"))
    store = Store(db)
    store.save_topic(Topic.parse("apple", "apple"))
    import datetime as dt

    store.write_batch([Post("x:1", dt.datetime(2022, 1, 1, tzinfo=dt.timezone.utc), "apple")], [1], [[0.1, 0.8, 0.1]], [["apple"]], "m")
    status_path(db).write_text(json.dumps({"source": "x", "source_errors": ["X rejected the rule '--b': Rules must contain a non-negation term"], "posts_per_s": 0}))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert any("non-negation term" in w.value for w in at.warning)


# ------------------------------------------------------------------ 5. twarc-csv output
TWARC_CSV_HEADER = "id,conversation_id,referenced_tweets.replied_to.id,referenced_tweets.retweeted.id,referenced_tweets.quoted.id,author_id,in_reply_to_user_id,retweeted_user_id,quoted_user_id,created_at,text,lang,source,public_metrics.like_count,public_metrics.quote_count,public_metrics.reply_count,public_metrics.retweet_count,author.id,author.created_at,author.username,author.name,author.description,__twarc.retrieved_at,__twarc.url,__twarc.version"


def test_twarc_csv_authors_and_escaped_newlines(tmp_path):
    rows = [
        '1410000000000000001,1410000000000000001,,,,101,,,,2021-06-30T01:00:00.000Z,"Top songs this week #charts\\n#kpop \\tforever",en,Twitter Web App,5,0,1,2,101,2015-01-01T00:00:00.000Z,chart_bot,Chart Bot,,2021-07-01T00:00:00+00:00,https://api.twitter.com/2/tweets/search/all,2.0.8',
        '1410000000000000002,1410000000000000002,,,,102,,,,2021-06-30T01:05:00.000Z,plain tweet,en,Twitter for iPhone,0,0,0,0,102,2016-01-01T00:00:00.000Z,second_user,Second,,2021-07-01T00:00:00+00:00,https://api.twitter.com/2/tweets/search/all,2.0.8',
    ]
    f = tmp_path / "twarc.csv"
    f.write_text(TWARC_CSV_HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    a, b = _posts(f)
    assert (a.author, b.author) == ("chart_bot", "second_user")
    assert a.text == "Top songs this week #charts\n#kpop \tforever"
    assert Tracker([Topic.parse("t", "#kpop")]).match(a.text) == ["t"]


def test_other_csv_keeps_backslash_n_literally(tmp_path):
    f = tmp_path / "plain.csv"
    f.write_text('id,text\n5,"a path C:\\new\\table"\n', encoding="utf-8")
    [p] = _posts(f)
    assert p.text == "a path C:\\new\\table"


# ------------------------------------------------------------------ 6. non-tweet twarc2 outputs are refused
@pytest.mark.parametrize(
    "name, lines, what",
    [
        ("counts.jsonl", [{"data": [{"end": "2021-06-01T01:00:00.000Z", "start": "2021-06-01T00:00:00.000Z", "tweet_count": 17}], "meta": {"total_tweet_count": 17}}], "counts"),
        ("users.jsonl", [{"data": [{"id": "101", "name": "Chart Bot", "username": "chart_bot", "created_at": "2015-01-01T00:00:00.000Z"}], "meta": {"result_count": 1}}], "users"),
        ("users-flat.jsonl", [{"id": "101", "name": "Chart Bot", "username": "chart_bot", "public_metrics": {"followers_count": 3}, "__twarc": {"url": "u"}}], "users"),
        ("lists.jsonl", [{"data": [{"id": "84839422", "name": "Official Twitter Accounts", "follower_count": 906, "member_count": 1000, "owner_id": "783214", "private": False}], "meta": {}}], "lists"),
        ("compliance.jsonl", [{"id": "1410000000000000001", "action": "delete", "created_at": "2021-06-30T01:00:00.000Z", "redacted_at": "2021-07-02T00:00:00.000Z", "reason": "deleted"}], "compliance"),
        ("empty.jsonl", [{}], "empty"),
    ],
)
def test_non_tweet_twarc2_files_are_refused_clearly(tmp_path, name, lines, what):
    f = _lines(tmp_path / name, lines)
    with pytest.raises(UnknownFormat, match="not tweets: nothing to replay") as e:
        ReplaySource(f)
    assert what in str(e.value)


# ------------------------------------------------------------------ Bluesky language tags
def test_bluesky_language_tags_are_normalised():
    msg = {"did": "did:plc:abc", "time_us": 1_700_000_000_000_000, "kind": "commit", "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "3k", "record": {"text": "hello", "createdAt": "2023-11-14T22:13:20Z", "langs": ["en-US", "en"]}}}
    _, post = parse_jetstream(json.dumps(msg))
    assert post.lang == "en"
