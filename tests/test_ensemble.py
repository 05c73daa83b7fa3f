"""Teacher ensembles from committed logits: size and prior correction chosen on validation only."""
import numpy as np

from compression.configs.common import DataConfig
from compression.data import load_semeval
from compression.ensemble import ensemble_report


def _member(folder, data, rng, quality):
    """Logits that point to the gold label with some probability (``quality``), else anywhere."""
    folder.mkdir(parents=True)
    for name, exs in (("pool_logits.npz", data.train + data.valid), ("test_logits.npz", data.test)):
        y = np.asarray([e.label for e in exs])
        logits = rng.normal(0, 1, (len(exs), 3)).astype(np.float32)
        hit = rng.random(len(exs)) < quality
        logits[hit, y[hit]] += 3.0
        np.savez_compressed(folder / name, tweet_id=np.asarray([e.id for e in exs], np.int64), label=y.astype(np.int8), logits=logits)
    return folder


def test_ensemble_beats_its_members_and_chooses_on_validation(tmp_path):
    dc = DataConfig()
    data = load_semeval(dc.root, dc.valid_fraction, dc.split_seed)
    rng = np.random.default_rng(0)
    folders = [_member(tmp_path / f"m{i}", data, rng, q) for i, q in enumerate((0.5, 0.5, 0.5, 0.1))]
    r = ensemble_report([str(f) for f in folders])
    best_single = max(m["valid"] for m in r["members"])
    assert r["chosen"]["valid"] > best_single  # independent errors average out
    assert "m3" not in r["chosen"]["members"]  # the weak member does not help on validation: left out
    assert r["prior_corrected"]["valid"] >= r["chosen"]["valid"]
    assert len(r["members"]) == 4 and 0 < r["chosen"]["test"] < 1


def test_whole_pool_member_is_refused(tmp_path):
    """A whole-pool fit trained on validation: loading it as a member is an error, never a silent bias."""
    import json

    import pytest

    from compression.ensemble import load_member, trained_on_valid

    dc = DataConfig()
    data = load_semeval(dc.root, dc.valid_fraction, dc.split_seed)
    f = _member(tmp_path / "pool", data, np.random.default_rng(1), 0.5)
    (f / "config.json").write_text(json.dumps({"config": {"data": {"train_on_pool": True}}}))
    assert trained_on_valid(f)
    with pytest.raises(ValueError, match="whole pool"):
        load_member(f)
    g = _member(tmp_path / "held_out", data, np.random.default_rng(2), 0.5)
    (g / "config.json").write_text(json.dumps({"config": {"data": {"train_on_pool": False}}}))
    assert not trained_on_valid(g) and load_member(g)["name"] == "held_out"
