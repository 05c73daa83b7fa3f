"""Live sources without the internet: Bluesky against a local Jetstream-like websocket server on
127.0.0.1, X rule building and tweet handling with a fake tweepy client."""
import json
import threading
import time
import types

import pytest

from stream.bluesky import BlueskySource, parse_jetstream
from stream.post import Post, Skip
from stream.tracker import Topic
from stream.x import TAG_PREFIX, XAccessError, XSource, build_rules


def _jet(i, text="hello bluesky", kind="commit", op="create", collection="app.bsky.feed.post"):
    return json.dumps(
        {
            "did": f"did:plc:user{i}",
            "time_us": 1725911162329308 + i,
            "kind": kind,
            "commit": {"rev": "3l3qo2vutsw2b", "operation": op, "collection": collection, "rkey": f"3l3qo2vuowo2{i}", "record": {"$type": "app.bsky.feed.post", "createdAt": "2024-09-09T19:46:02.102Z", "langs": ["en"], "text": text}, "cid": "bafyrei"},
        }
    )


def test_parse_jetstream_shapes():
    t, p = parse_jetstream(_jet(1))
    assert isinstance(p, Post) and p.id == "bsky:at://did:plc:user1/app.bsky.feed.post/3l3qo2vuowo21" and p.lang == "en" and p.source == "bluesky"
    assert parse_jetstream(_jet(2, op="delete"))[1] is None
    assert parse_jetstream(_jet(3, kind="identity"))[1] is None
    assert parse_jetstream(_jet(4, collection="app.bsky.feed.like"))[1] is None
    assert parse_jetstream(_jet(5, text="  "))[1] == Skip("empty_text")
    assert parse_jetstream("{broken")[1] == Skip("malformed_json")


@pytest.fixture
def jetstream_server():
    """A local server speaking Jetstream's message shape; drops the first connection mid-stream."""
    from websockets.sync.server import serve

    seen_queries = []
    state = {"conn": 0}

    def handler(ws):
        state["conn"] += 1
        seen_queries.append(ws.request.path)
        first = state["conn"] == 1
        for i in range(10 if first else 20):
            ws.send(_jet(i, text=f"post {i} about #sparsepulse"))
            if i % 3 == 0:
                ws.send(_jet(100 + i, kind="account"))
            if first and i == 5:
                return  # connection drops: the client must reconnect with a cursor
        ws.send("{not json")
        time.sleep(0.5)

    server = serve(handler, "127.0.0.1", 0)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    port = server.socket.getsockname()[1]
    yield f"ws://127.0.0.1:{port}/subscribe", seen_queries
    server.shutdown()


def test_bluesky_client_reconnects_with_cursor(jetstream_server):
    url, queries = jetstream_server
    src = BlueskySource(url, backoff_s=0.05)
    stop = threading.Event()
    got = []
    for off, item in src.items(stop=stop):
        got.append((off, item))
        if len([x for _, x in got if isinstance(x, Post)]) >= 26:
            stop.set()
    posts = [x for _, x in got if isinstance(x, Post)]
    assert src.connects == 2
    assert "wantedCollections=app.bsky.feed.post" in queries[0] and "cursor=" not in queries[0]
    assert "cursor=" in queries[1]  # resumed from the last time_us (rewound)
    assert len({p.id for p in posts}) == 20  # the re-sent ones are duplicates by id (the store drops them)
    offs = [o for o, _ in got]
    assert offs == sorted(offs)


def test_build_rules_tags_and_limits():
    topics = [Topic.parse("crypto", 'bitcoin, "crypto winter", #btc, -scam'), Topic.parse("one", "solo")]
    rules = build_rules(topics)
    assert rules == [('(bitcoin OR "crypto winter" OR #btc) -scam', TAG_PREFIX + "crypto"), ("solo", TAG_PREFIX + "one")]
    many = Topic.parse("many", ", ".join(f"word{i:03d}" for i in range(90)))
    split = build_rules([many], max_len=512)
    assert len(split) > 1 and all(len(v) <= 512 and t == TAG_PREFIX + "many" for v, t in split)
    covered = set(" ".join(v for v, _ in split).replace("(", " ").replace(")", " ").replace(" OR ", " ").split())
    assert covered == {f"word{i:03d}" for i in range(90)}
    with pytest.raises(ValueError):
        build_rules([Topic.parse("long", "x" * 120)], max_len=100)


class FakeClient:
    def __init__(self, payloads, status=None):
        self.rules = [types.SimpleNamespace(value="old rule", tag=TAG_PREFIX + "gone", id="1"), types.SimpleNamespace(value="theirs", tag="other-app", id="2")]
        self.payloads, self.status = payloads, status
        self.deleted, self.added, self.disconnected = [], [], False
        self.on_data = self.on_request_error = None

    def get_rules(self):
        return types.SimpleNamespace(data=list(self.rules))

    def delete_rules(self, ids):
        self.deleted += ids
        self.rules = [r for r in self.rules if r.id not in ids]

    def add_rules(self, add):
        self.added += [(r.value, r.tag) for r in add]
        self.rules += [types.SimpleNamespace(value=r.value, tag=r.tag, id=str(10 + len(self.rules))) for r in add]

    def filter(self, threaded, **params):
        def run():
            if self.status:
                self.on_request_error(self.status)
                return
            for p in self.payloads:
                self.on_data(p)

        th = threading.Thread(target=run)
        th.start()
        return th

    def disconnect(self):
        self.disconnected = True


def _xsource(client, topics):
    src = XSource("token-not-used", lambda: topics, client=client)
    client.on_data, client.on_request_error = src.on_data, src.on_request_error  # what the tweepy subclass forwards
    return src


def test_x_source_syncs_rules_and_parses_tweets():
    payload = json.dumps({"data": {"id": "1460323737035677698", "text": "bitcoin is up", "created_at": "2021-11-15T19:08:05.000Z", "author_id": "42"}, "includes": {"users": [{"id": "42", "username": "satoshi"}]}, "matching_rules": [{"id": 1, "tag": TAG_PREFIX + "crypto"}]}).encode()
    client = FakeClient([payload, b"{broken"])
    topics = [Topic.parse("crypto", "bitcoin")]
    src = _xsource(client, topics)
    stop = threading.Event()
    got = []
    for off, item in src.items(stop=stop):
        got.append(item)
        if len(got) == 2:
            stop.set()
    assert client.deleted == ["1"] and client.added == [("bitcoin", TAG_PREFIX + "crypto")]  # foreign rule kept
    assert isinstance(got[0], Post) and got[0].id == "x:1460323737035677698" and got[0].author == "satoshi"
    assert got[1] == Skip("malformed_json")
    assert client.disconnected


def test_x_source_403_is_a_clear_error():
    client = FakeClient([], status=403)
    src = _xsource(client, [Topic.parse("a", "b")])
    with pytest.raises(XAccessError, match="403"):
        for _ in src.items():
            pass


def test_x_source_needs_a_token():
    with pytest.raises(XAccessError):
        XSource("", lambda: [])


# ------------------------------------------------------------------ X rule syntax (hostile streams 11, real X rules 3)
@pytest.mark.parametrize(
    "spec, expected",
    [
        ("coca-cola, covid-19", '("coca-cola" OR "covid-19")'),
        ("http://example.com, lang:en", '("http://example.com" OR "lang:en")'),
        ("from:x, is:retweet", '("from:x" OR "is:retweet")'),
        ("foo)", '"foo)"'),
        ("cats, OR", '(cats OR "OR")'),
        ("😀, ❤️", '("😀" OR "❤️")'),
        ('"hello, world", -"scam, alert"', '"hello, world" -"scam, alert"'),
        ("bitcoin, #btc, $eth, @nasa, -scam", "(bitcoin OR #btc OR $eth OR @nasa) -scam"),
        ('"say \\"hi\\"", x', '("say \\\\\\"hi\\\\\\"" OR x)'),  # backslashes and quotes inside a phrase are escaped
        ('"unclosed, x', None),  # refused at topic creation (unbalanced quote)
        ("東京, café", "(東京 OR café)"),
    ],
)
def test_rule_syntax_table(spec, expected):
    from stream.tracker import TopicError

    if expected is None:
        with pytest.raises(TopicError):
            Topic.parse("t", spec)
        return
    [(value, tag)] = build_rules([Topic.parse("t", spec)])
    assert value == expected and tag == TAG_PREFIX + "t"


def test_rule_length_limits_are_validated():
    t = Topic.parse("t", "bitcoin")
    for n in (512, 1024, 2048):
        assert build_rules([t], max_len=n)
    for n in (0, 100, 4096):
        with pytest.raises(ValueError, match="rule length"):
            build_rules([t], max_len=n)
