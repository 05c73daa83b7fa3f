import pytest

from stream.tracker import DEFAULT_TOPICS, Topic, TopicError, Tracker


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


# ------------------------------------------------------------------ hostile-streams issue, finding 11
@pytest.mark.parametrize(
    "spec, text, expected",
    [
        ('"hello, world"', "Hello,  world!", True),  # a comma inside a quoted phrase belongs to it
        ('bitcoin, -"scam, alert"', "bitcoin scam, alert", False),
        ('bitcoin, -"scam, alert"', "bitcoin scam alert", True),
        ("東京", "東京に行きました", True),  # scripts without spaces: no word boundary required
        ("東京", "京都に行きました", False),
        ("サッカー", "サッカーが好き", True),
        ("ภาษาไทย", "ฉันชอบภาษาไทยมาก", True),
        ("서울", "서울에 갔어요", True),  # Korean particles attach to the word
        ("istanbul", "İstanbul'da hava güzel", True),  # Turkish dotted capital I
        ("istanbul", "ISTANBUL", True),
        ("btc", "ＢＴＣ price", True),  # full-width letters (NFKC)
        ("cat", "concatenate", False),
        ("from:x", "posted from:x today", True),  # an X operator-looking term is plain text locally
    ],
)
def test_topic_rules_from_the_hostile_streams_issue(spec, text, expected):
    assert bool(Tracker([Topic.parse("t", spec)]).match(text)) is expected


@pytest.mark.parametrize("spec", ['"unclosed, phrase', 'it"s', "the, a, an", '"the", a'])
def test_malformed_or_stop_word_topics_are_refused(spec):
    with pytest.raises(TopicError):
        Topic.parse("t", spec)


def test_quoted_exclusion_is_parsed_whole():
    t = Topic.parse("t", 'bitcoin, -"scam, alert"')
    assert t.terms == ("bitcoin",) and t.exclusions == ('"scam, alert"',)


def test_substring_prefilter_never_changes_a_match():
    """Topic.matches tests its terms' literals as substrings before running its regexes; over texts built from
    the terms' pieces (phrases split by newlines and tabs, #/@ inside words, accents, other cases) the answer
    equals the regexes' alone."""
    import random

    from stream.tracker import _norm

    topics = [Topic.parse("a", 'bitcoin, "crypto winter", #btc, $eth, @vitalik, -scam'), Topic.parse("b", "東京, naïve, c++, straße"),
              *[Topic.parse(k, v) for k, v in DEFAULT_TOPICS.items()]]
    pieces = ["bitcoin", "Bitcoins", "crypto", "winter", "crypto\\twinter", "crypto\nwinter", "#btc", "x#btc", "$eth", "@vitalik", "scam",
              "東京", "NAÏVE", "naive", "c++", "STRASSE", "straße", "trump", "@realDonaldTrump", "#Thanksgiving", "russia's", "putin",
              "hillary", "clinton", " ", ",", ".", "#", "@", "\u200b", "x"]
    rng = random.Random(0)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) + rng.choice(["", " ", "  "]) for _ in range(rng.randint(1, 8))).replace("\\t", "\t")
        t = _norm(text)
        for tp in topics:
            plain = bool(tp._include.search(t)) and not (tp._exclude is not None and tp._exclude.search(t))
            assert tp.matches(t) == plain, (tp.name, text)
