import numpy as np
import pytest

from compression.data import DataNotFound, Example, data_root, iter_batches, load_tsv, stratified_split, _dedupe, LoadReport


def test_dirty_file_counts(fixtures):
    exs, rep = load_tsv(fixtures / "dirty.tsv")
    by_id = {}
    for e in exs:
        by_id.setdefault(e.id, e)
    assert by_id[100].text.startswith("Gas by my house hit $3.39!!!! I\u2019m going")
    assert by_id[101].text == "Theo Walcott is still shit, watch Rafa deal with him"
    assert by_id[102].text == 'Quoted text, with "inner" quotes'
    assert by_id[103].text == "dated line"
    assert by_id[104].text == "stray tab inside"
    assert by_id[109].text == "emoji pair \U0001F602 decoded"
    assert by_id[110].label == 1 and by_id[110].text == "label case and CRLF"
    assert rep.lines == 14
    assert dict(rep.dropped) == {"empty_text": 1, "too_few_fields": 1, "bad_id": 1, "bad_label": 1, "bad_utf8": 1}
    assert rep.kept == len(exs) == 9
    deduped = _dedupe(exs, rep)
    assert len(deduped) == 7 and rep.kept == 7
    assert rep.dropped["duplicate_id"] == 1 and rep.dropped["duplicate_id_conflicting_label"] == 1
    assert [e.text for e in deduped if e.id == 100][0].startswith("Gas")  # first occurrence wins


def test_missing_data_dir_is_clear(tmp_path):
    with pytest.raises(DataNotFound, match="semeval2017-task4a"):
        data_root(tmp_path)


def test_stratified_split_is_fixed_and_stratified():
    exs = [Example(i, i % 3 if i < 900 else 0, f"t{i}") for i in range(1000)]
    a_rest, a_val = stratified_split(exs, 0.1, seed=1)
    b_rest, b_val = stratified_split(exs, 0.1, seed=1)
    assert [e.id for e in a_val] == [e.id for e in b_val]
    assert len(a_rest) + len(a_val) == 1000 and not {e.id for e in a_rest} & {e.id for e in a_val}
    counts = np.bincount([e.label for e in a_val], minlength=3)
    assert counts.tolist() == [40, 30, 30]


def test_bucketed_batches_cover_everything_once():
    rng = np.random.default_rng(0)
    ids = [np.ones(int(n), np.int32) for n in rng.integers(3, 60, size=203)]
    labels = rng.integers(0, 3, size=203).astype(np.int32)
    seen = []
    for b in iter_batches(ids, labels, 16, shuffle_seed=7):
        assert b.input_ids.shape[0] == 16 and b.input_ids.shape[1] % 8 == 0
        real = b.index >= 0
        assert (b.weights[real] == 1).all() and (b.weights[~real] == 0).all()
        assert (b.attention_mask[real].sum(1) == [len(ids[i]) for i in b.index[real]]).all()
        assert (b.labels[real] == labels[b.index[real]]).all()
        seen += b.index[real].tolist()
    assert sorted(seen) == list(range(203))
    order1 = [b.index.tolist() for b in iter_batches(ids, labels, 16, shuffle_seed=7)]
    order2 = [b.index.tolist() for b in iter_batches(ids, labels, 16, shuffle_seed=7)]
    order3 = [b.index.tolist() for b in iter_batches(ids, labels, 16, shuffle_seed=8)]
    assert order1 == order2 and order1 != order3


def test_real_semeval_report():
    from compression.data import load_semeval

    d = load_semeval()
    assert d.report["pool"]["kept"] == len(d.train) + len(d.valid) == 49570
    assert len(d.test) == 12284
    assert not {e.id for e in d.test} & {e.id for e in d.train + d.valid}


def test_one_semeval_test_path_on_both_sides():
    """The training side (compression.data) and the online side (stream.formats: demo replay,
    benchmarks) read the same SemEval-2017 test file."""
    from compression.data import DATASET_DIR, TEST_FILE
    from stream.formats import SEMEVAL_TEST_FILE

    assert SEMEVAL_TEST_FILE == f"{DATASET_DIR}/{TEST_FILE}"
