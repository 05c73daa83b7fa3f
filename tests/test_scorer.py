import threading

import numpy as np
import pytest

from runtime import InputError, ModelFormatError, Scorer

@pytest.fixture(scope="module")
def model_dir(synthetic_model_dir):
    return synthetic_model_dir


def test_score_shapes_truncation_and_stats(model_dir):
    s = Scorer(model_dir, threads=2)
    texts = ["I love it 😂", "", "word " * 100, "@bob see https://t.co/x"] * 3
    labels, probs = s.score(texts)
    assert probs.shape == (12, 3) and probs.dtype == np.float32 and labels.shape == (12,)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert (labels == probs.argmax(1)).all()
    st = s.stats()
    assert st["texts"] == 12 and st["truncated"] == 3
    # identical texts, identical scores, whatever the batch
    np.testing.assert_allclose(probs[0], probs[4], atol=1e-6)
    _, p1 = s.score(["I love it 😂"])
    np.testing.assert_allclose(p1[0], probs[0], atol=1e-6)
    assert s.score([])[1].shape == (0, 3)


def test_score_many_chunks_and_threads(model_dir):
    s = Scorer(model_dir, threads=1, chunk_size=7)
    texts = [f"tweet number {i} is {'great' if i % 2 else 'awful'}" for i in range(50)]
    _, ref = s.score(texts)
    out = {}

    def work(k):
        out[k] = s.score(texts)[1]

    th = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in th:
        t.start()
    for t in th:
        t.join()
    for k in range(4):
        np.testing.assert_array_equal(out[k], ref)


def test_bad_inputs(model_dir, tmp_path):
    s = Scorer(model_dir)
    with pytest.raises(InputError):
        s.score("not a list")
    with pytest.raises(InputError):
        s.score([b"bytes"])
    with pytest.raises(ModelFormatError):
        Scorer(tmp_path)
