"""Language identification (stream.language): English tweets stay English (or unknown), posts in other
languages are named, mixed text is left to langid, and the CLD2 fast path changes no decision that
names another language."""
from stream import language
from stream.language import LanguageDetector

FOREIGN = {
    "fr": "Je ne comprends pas pourquoi le gouvernement a pris cette décision sans consulter personne.",
    "de": "Ich verstehe nicht, warum die Regierung diese Entscheidung ohne jede Rücksprache getroffen hat.",
    "pt": "Eu não entendo por que o governo tomou essa decisão sem consultar ninguém antes.",
    "tr": "Hükümetin neden kimseye danışmadan böyle bir karar aldığını anlamıyorum.",
    "ja": "政府がなぜ誰にも相談せずにこの決定を下したのか、私には理解できません。",
    "es": "No entiendo por qué el gobierno tomó esta decisión sin consultar a nadie antes.",
}


def test_other_languages_are_named():
    d = LanguageDetector()
    for lang, text in FOREIGN.items():
        assert d.detect(text) == lang, lang


def test_english_tweets_are_not_flagged_and_short_text_is_unknown():
    d = LanguageDetector()
    for t in ["Can't believe the game last night, what a comeback!! #NBA", "@user thanks for the follow, see you at the conference tomorrow",
              "the new iphone battery is terrible, dead by lunch every single day"]:
        assert d.detect(t) in ("en", None)
    assert d.detect("lol ok") is None and d.detect("🔥🔥🔥 #1") is None


def test_mixed_text_goes_to_langid():
    """English for only part of its bytes: the CLD2 fast path does not decide, langid does."""
    t = "Great match today 今天的比赛非常精彩，我们都很高兴看到这样的结果"
    assert language._cld2.detect(t)[2][0][1] != "en" or language._cld2.detect(t)[2][0][2] < language.FAST_ENGLISH_PERCENT
    assert LanguageDetector().detect(t) == "zh"


def test_fast_path_agrees_with_langid_on_every_foreign_decision(monkeypatch):
    d = LanguageDetector()
    texts = [*FOREIGN.values(), "Can't believe the game last night, what a comeback!! #NBA"]
    fast = [d.detect(t) for t in texts]
    monkeypatch.setattr(language, "_cld2", None)
    slow = [d.detect(t) for t in texts]
    assert [f for f in fast if f not in ("en", None)] == [s for s in slow if s not in ("en", None)]


def test_post_with_lang_keeps_every_field():
    """Post.with_lang (the reader's fast copy) equals dataclasses.replace on a post with no field at its default;
    a field added to Post without it fails here."""
    import dataclasses
    import datetime as dt

    from stream.post import Post

    p = Post("x:1", dt.datetime(2016, 11, 8, tzinfo=dt.timezone.utc), "text", "author", None, "bsky", 5, "quoted", True)
    assert all(getattr(p, f.name) != f.default for f in dataclasses.fields(Post) if f.name != "lang")
    assert p.with_lang("de") == dataclasses.replace(p, lang="de")
