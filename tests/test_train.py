import dataclasses
import json

import jax
import numpy as np
import pytest

from compression.configs import load_config
from compression.train import class_weights, prepare, train


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config("teacher", tiny=True)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, eval_every_epoch=False, checkpoint_every=1000))
    return cfg, prepare(cfg)


def _leaves(state):
    return jax.tree_util.tree_leaves({"p": state["params"], "o": state["opt_state"], "e": state["ema"]})


def test_two_steps_change_params_and_write_checkpoint(tiny, tmp_path):
    # the warm-up starts at learning rate 0 (step 0), as in BERT's schedule, so take two steps
    cfg, prep = tiny
    s = train(cfg, tmp_path, max_steps=2, prepared=prep, progress=False)
    assert s["step"] == 2
    assert (tmp_path / "checkpoint.msgpack").is_file() and (tmp_path / "train.log").is_file()
    s0 = train(cfg, tmp_path / "fresh", max_steps=0, prepared=prep, progress=False)
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(jax.tree_util.tree_leaves(s["params"]), jax.tree_util.tree_leaves(s0["params"]))]
    assert max(moved) > 0


def test_resume_is_exact(tiny, tmp_path):
    cfg, prep = tiny
    straight = train(cfg, tmp_path / "a", max_steps=2, prepared=prep, progress=False)
    train(cfg, tmp_path / "b", max_steps=1, prepared=prep, progress=False)
    resumed = train(cfg, tmp_path / "b", resume=True, max_steps=2, prepared=prep, progress=False)
    assert resumed["step"] == straight["step"] == 2
    for x, y in zip(_leaves(straight), _leaves(resumed)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-7)


def test_epoch_end_selects_best_and_cli_evaluates(tmp_path, capsys):
    from compression.cli import main

    assert main(["teacher", "--tiny", "--run-dir", str(tmp_path)]) == 0
    best = json.loads((tmp_path / "best.json").read_text())
    assert best["which"] in ("raw", "ema") and 0 <= best["score"] <= 1
    assert main(["evaluate", "--tiny", "--run-dir", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == {"valid", "test"}
    assert len(metrics["test"]["confusion"]) == 3 and metrics["test"]["n"] == 64
    assert "macro_R" in capsys.readouterr().out


def test_cli_reports_missing_data(tmp_path, capsys):
    from compression.cli import main

    assert main(["teacher", "--tiny", "--run-dir", str(tmp_path), "--data", str(tmp_path)]) == 2
    assert "semeval2017-task4a" in capsys.readouterr().err


def test_class_weights_balance_classes():
    w = class_weights(np.array([0] * 10 + [1] * 30 + [2] * 60), 3, 1.0)
    np.testing.assert_allclose(w * np.array([10, 30, 60]), [100 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(class_weights(np.array([0, 1, 1, 2]), 3, 0.0), [1, 1, 1])


def test_resume_refuses_a_changed_config(tiny, tmp_path):
    cfg, prep = tiny
    train(cfg, tmp_path, max_steps=1, prepared=prep, progress=False)
    changed = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, learning_rate=1.0))
    with pytest.raises(ValueError, match="config differs"):
        train(changed, tmp_path, resume=True, max_steps=2, prepared=prep, progress=False)


def test_whole_pool_fit_trains_on_valid_and_keeps_the_fixed_pick(tmp_path):
    """teacher_pool: valid joins the training set, and nothing is chosen on it: the weights kept are the
    ones fixed in advance (epoch index, raw / EMA), written at that epoch's end."""
    from compression.cli import main

    cfg = load_config("teacher_pool", tiny=True)
    prep = prepare(cfg)
    assert cfg.data.train_on_pool and len(prep.ids["train"]) == 128  # 64 train + 64 valid (tiny limits)
    train_texts = {e.text for e in prep.data.train}
    assert all(e.text in train_texts for e in prep.data.valid)
    assert main(["teacher", "--config", "teacher_pool", "--tiny", "--run-dir", str(tmp_path)]) == 0
    best = json.loads((tmp_path / "best.json").read_text())
    steps_per_epoch = -(-128 // cfg.optim.batch_size)
    assert best["which"] == "ema" and best["score"] is None and best["step"] == steps_per_epoch
    assert (tmp_path / "best.msgpack").is_file()
    assert "valid[" not in (tmp_path / "train.log").read_text()  # never evaluated on data it trains on
