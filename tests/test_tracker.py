import pytest

from stream.tracker import Topic, TopicError, Tracker


@pytest.fixture
def tracker():
    return Tracker(
        [
            Topic.parse("crypto", 'bitcoin, "crypto winter", #btc, $eth, -scam, -"pump and dump"'),
            Topic.parse("space", "@NASA, mars, café"),
            Topic.parse("deutsch", "straße, über"),
        ]
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Bitcoin to the moon", ["crypto"]),
        ("BITCOIN's price", ["crypto"]),
        ("#bitcoin rally", ["crypto"]),  # a word term also matches its hashtag
        ("bitcoins everywhere", []),  # word boundary
        ("bitcoin_fan", []),
        ("I love #BTC", ["crypto"]),
        ("btc alone", []),  # #btc matches the hashtag only
        ("$ETH up 5%", ["crypto"]),
        ("eth without cashtag", []),
        ("the Crypto   Winter\nis here", ["crypto"]),
        ("crypto winters", []),
        ("bitcoin scam alert", []),  # exclusion
        ("bitcoin pump and dump", []),  # excluded phrase
        ("@nasa on Mars", ["space"]),
        ("nasa without at", []),
        ("email me at a@nasa.gov", []),
        ("au CAFÉ ce matin", ["space"]),  # Unicode case folding
        ("cafe\u0301 decomposed", ["space"]),  # NFC
        ("DIE STRASSE ist lang", ["deutsch"]),  # casefold ß
        ("Über alles", ["deutsch"]),
        ("bitcoin on mars", ["crypto", "space"]),  # several topics
        ("", []),
    ],
)
def test_matching(tracker, text, expected):
    assert tracker.match(text) == expected


def test_topics_change_while_running(tracker):
    assert tracker.match("a new word") == []
    tracker.set_topics([*tracker.topics, Topic.parse("new", "word")])
    assert tracker.match("a new word") == ["new"]
    tracker.set_topics([t for t in tracker.topics if t.name != "crypto"])
    assert tracker.match("bitcoin") == []


@pytest.mark.parametrize("name, spec", [("", "a"), ("x", ""), ("x", "-only exclusions"), ("x", "two words"), ("x", "#"), ("x", '""'), ("x", "#has space")])
def test_invalid_topics(name, spec):
    with pytest.raises(TopicError):
        Topic.parse(name, spec)


def test_duplicate_names_rejected():
    with pytest.raises(TopicError):
        Tracker([Topic.parse("a", "x"), Topic.parse("a", "y")])


def test_spec_roundtrip():
    t = Topic.parse("c", 'bitcoin, "crypto winter", -scam')
    assert Topic.parse("c", t.spec()) == t
