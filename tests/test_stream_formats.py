"""Every recorded format from small fixtures, dirty cases included: skipped and counted, never a crash."""
import collections
import datetime as dt
import gzip
import json

import pytest

from stream.formats import UnknownFormat
from stream.post import Post, Skip, parse_time, snowflake_time
from stream.replay import ReplaySource

UTC = dt.timezone.utc


def _items(path, **kw):
    src = ReplaySource(path, **kw)
    out = [x for _, x in src.items()]
    posts = [x for x in out if isinstance(x, Post)]
    skips = collections.Counter(x.reason for x in out if isinstance(x, Skip))
    return src, posts, skips


def _write_lines(path, lines, gz=False):
    data = b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines)
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def test_parse_time_variants():
    assert parse_time("2018-10-10T20:19:24.000Z") == dt.datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert parse_time("Wed Oct 10 20:19:24 +0000 2018") == dt.datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert parse_time("2015-02-24 11:35:52 -0800") == dt.datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert parse_time(1539202764) == parse_time("1539202764000") == dt.datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_time("yesterday")
    assert snowflake_time(801989080477154944).year == 2016


def test_twarc2_pages_and_stream_lines(tmp_path):
    page = {
        "data": [
            {"id": "1", "text": "short", "created_at": "2022-01-01T00:00:00.000Z", "author_id": "u1", "lang": "en"},
            {"id": "2", "text": "trunc…", "note_tweet": {"text": "the full long text"}, "created_at": "2022-01-01T00:00:01.000Z", "author_id": "u2"},
            {"id": "3", "created_at": "2022-01-01T00:00:02.000Z"},
        ],
        "includes": {"users": [{"id": "u1", "username": "alice"}]},
        "meta": {"result_count": 3},
    }
    stream_line = {"data": {"id": "4", "text": "streamed", "created_at": "2022-01-01T00:00:03.000Z"}, "matching_rules": [{"id": 123, "tag": None}, {"id": "456", "tag": "x"}]}
    p = _write_lines(tmp_path / "t.jsonl", [json.dumps(page), json.dumps(stream_line), '{"data": [{"id": "5", "text": "cut'])
    src, posts, skips = _items(p)
    assert src.fmt == "twarc2"
    assert [x.id for x in posts] == ["x:1", "x:2", "x:4"]
    assert posts[0].author == "alice" and posts[0].lang == "en" and posts[1].author == "u2"
    assert posts[1].text == "the full long text"
    assert skips == {"missing_text": 1, "malformed_json": 1}  # truncated last line counted


def test_flattened_and_v2(tmp_path):
    flat = {"id": "10", "text": "flat tweet", "created_at": "2021-05-01T10:00:00.000Z", "author": {"username": "bob"}, "__twarc": {"url": "x"}}
    p = _write_lines(tmp_path / "f.jsonl", [json.dumps(flat)])
    src, posts, _ = _items(p)
    assert src.fmt == "twarc2-flat" and posts[0].author == "bob"
    v2 = {"id": "11", "text": "v2 tweet", "created_at": "2021-05-01T10:00:00.000Z", "author_id": "99"}
    p = _write_lines(tmp_path / "v.jsonl", [json.dumps(v2), json.dumps({**v2, "id": "12", "text": ""})], gz=True)
    src, posts, skips = _items(p)
    assert src.fmt == "v2" and [x.id for x in posts] == ["x:11"] and skips == {"empty_text": 1}


def test_v1_lines_with_control_messages_and_dirt(tmp_path):
    base = {"id_str": "20", "id": 20, "created_at": "Wed Oct 10 20:19:24 +0000 2018", "text": "truncated…", "extended_tweet": {"full_text": "full text here"}, "user": {"screen_name": "carol"}, "lang": "en"}
    lines = [
        json.dumps(base),
        json.dumps({"delete": {"status": {"id": 1}}}),
        json.dumps({"limit": {"track": 5}}),
        b'{"id_str": "21", "created_at": "Wed Oct 10 20:19:25 +0000 2018", "text": "bad \xff\xfe bytes", "user": {}}',
        json.dumps({**base, "id_str": "22", "created_at": "not a time"}),
        json.dumps({**base, "id_str": "23", "extended_tweet": None, "text": "x" * 100_000}),
        json.dumps({**base, "id_str": None, "id": None}),
        "[1, 2, 3]",
        json.dumps({**base, "id_str": "24", "extended_tweet": {}, "text": "plain text ünïcödé"}),
    ]
    src, posts, skips = _items(_write_lines(tmp_path / "v1.jsonl", lines))
    assert src.fmt == "v1"
    assert [(x.id, x.text, x.author) for x in posts] == [("x:20", "full text here", "carol"), ("x:24", "plain text ünïcödé", "carol")]
    assert posts[0].created_at == dt.datetime(2018, 10, 10, 20, 19, 24, tzinfo=UTC)
    assert skips == {"control_message": 2, "bad_utf8": 1, "bad_time": 1, "text_too_long": 1, "missing_id": 1, "malformed_record": 1}


def test_csv_recognised_headers_and_mapping(tmp_path):
    p = tmp_path / "airline.csv"
    p.write_text('tweet_id,airline_sentiment,name,text,tweet_created\n570306133677760513,neutral,cairdin,"@VirginAmerica What, ""said"".",2015-02-24 11:35:52 -0800\n570301130888122368,positive,jnardino,"multi\nline text",2015-02-24 11:15:59 -0800\nbad,row\n', encoding="utf-8")
    src, posts, skips = _items(p)
    assert src.fmt == "csv"
    assert posts[0].id == "x:570306133677760513" and posts[0].text == '@VirginAmerica What, "said".' and posts[0].author == "cairdin"
    assert posts[0].created_at == dt.datetime(2015, 2, 24, 19, 35, 52, tzinfo=UTC)
    assert posts[1].text == "multi\nline text"
    assert skips == {"wrong_field_count": 1}
    q = tmp_path / "custom.csv"
    q.write_text("msg_no,body_txt,when\n5,hello there,2020-01-01T00:00:00Z\n", encoding="utf-8")
    with pytest.raises(UnknownFormat):
        ReplaySource(q, fmt="csv")._items().__next__()
    src, posts, _ = _items(q, fmt="csv", csv_map={"id": "msg_no", "text": "body_txt", "time": "when"})
    assert posts[0].text == "hello there" and posts[0].created_at.year == 2020


def test_semeval_tsv_times_from_snowflake(tmp_path):
    p = _write_lines(tmp_path / "s.txt", ["801989080477154944\tneutral\t#ArianaGrande Ari By Ariana Grande", "801989272341453952\tpositive\t", "garbage line"])
    src, posts, skips = _items(p)
    assert src.fmt == "semeval" and posts[0].created_at.date() == dt.date(2016, 11, 25)
    assert skips == {"empty_text": 1, "too_few_fields": 1}


def test_unknown_format_is_a_clear_error(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"\x00\x01\x02 hello\n")
    with pytest.raises(UnknownFormat, match="unrecognised"):
        ReplaySource(p)
    with pytest.raises(UnknownFormat, match="unknown format"):
        ReplaySource(_write_lines(tmp_path / "y.jsonl", ["{}"]), fmt="tiktok")
    with pytest.raises(UnknownFormat):
        ReplaySource(_write_lines(tmp_path / "z.jsonl", ['{"foo": 1}']))


def test_resume_offsets_are_per_item(tmp_path):
    page = {"data": [{"id": str(i), "text": f"t{i}", "created_at": "2022-01-01T00:00:00Z"} for i in range(3)], "meta": {}}
    p = _write_lines(tmp_path / "p.jsonl", [json.dumps(page), json.dumps(page | {"data": [{"id": "9", "text": "t9", "created_at": "2022-01-01T00:00:00Z"}]})])
    src = ReplaySource(p)
    all_items = list(src.items())
    assert [o for o, _ in all_items] == [1, 2, 3, 4]
    assert [x.id for _, x in src.items(start_after=2)] == ["x:2", "x:9"]
