import pytest

from runtime.text import NORMALIZATION_VERSION, normalize


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("hello @john_doe and @Jane!", "hello @user and @user!"),
        ("mail me: a@b.com", "mail me: a@b.com"),
        ("see https://t.co/abc123 and www.example.com/x?y=1", "see http and http"),
        ("Tom &amp; Jerry &lt;3 &amp;amp;", "Tom & Jerry <3 &"),
        ("I love it 😂", "I love it face with tears of joy"),
        ("👍🏽", "thumbs up medium skin tone"),
        ("soooooooo good!!!!!!", "sooo good!!!"),
        ("  tabs\tand\nnewlines  ", "tabs and newlines"),
        ("zero\u200bwidth", "zero width"),
        ("", ""),
    ],
)
def test_normalize_cases(raw, expected):
    assert normalize(raw) == expected


def test_emoji_kept_when_demojize_off():
    assert normalize("nice 😂", demojize=False) == "nice 😂"


def test_normalize_is_idempotent():
    s = "RT @bob: Tom &amp; Jerry 😂😂 https://x.co/1 soooooo"
    assert normalize(normalize(s)) == normalize(s)


def test_rejects_non_str():
    with pytest.raises(TypeError):
        normalize(b"bytes")


def test_version_string():
    assert NORMALIZATION_VERSION.startswith("tweet-norm/")
