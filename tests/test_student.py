import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest

from compression.configs import load_config
from compression.prune import mask_sparsity
from compression.student import drop_layers, evaluate_student, kd_loss, load_student, student_lr_schedule, train_student
from compression.train import prepare


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A 2-layer random teacher trained for one tiny epoch and exported like models/teacher."""
    from compression.cli import main

    run = tmp_path_factory.mktemp("teacher_run")
    out = tmp_path_factory.mktemp("teacher_model")
    for cmd in (["teacher"], ["evaluate"], ["logits"], ["export-teacher", "--out", str(out)]):
        assert main([*cmd, "--tiny", "--run-dir", str(run)]) == 0
    return out


@pytest.fixture(scope="module")
def tiny_pruned(tiny_teacher, tmp_path_factory):
    """The tiny OBS-pruned student, trained once for the whole module: 2 steps, then resumed to the
    end (the first pruning event's state is kept for the test that checks it) and evaluated."""
    cfg = _tiny_student("obert_6l_80_4b", tiny_teacher)
    prep = prepare(cfg)
    run = tmp_path_factory.mktemp("tiny_pruned")
    first = train_student(cfg, run, max_steps=2, prepared=prep, progress=False)
    first = {"sparsity": mask_sparsity(first["masks"]), "zeros_kept": all((np.asarray(first["params"][lk][n]["weight"])[np.asarray(m) == 0] == 0).all() for lk, lm in first["masks"].items() for n, m in lm.items())}
    full = train_student(cfg, run, resume=True, prepared=prep, progress=False)
    metrics = evaluate_student(cfg, run, prepared=prep)
    return {"cfg": cfg, "prep": prep, "dir": run, "first": first, "full": full, "metrics": metrics}


def _tiny_student(name, teacher_dir, **prune):
    cfg = load_config(name, tiny=True)
    return dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, teacher_dir=str(teacher_dir)), prune=dataclasses.replace(cfg.prune, **prune))


def test_kd_loss_zero_at_teacher_and_positive_elsewhere():
    t = jnp.array([[2.0, 0.0, -1.0], [0.1, 0.3, 0.2]])
    y = jnp.array([0, 1])
    w = jnp.ones(2)
    cw = jnp.ones(3)
    assert float(kd_loss(t, t, y, w, cw, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(-t, t, y, w, cw, 2.0, 1.0)) > 0.1
    # padding rows (weight 0) do not count
    assert float(kd_loss(jnp.concatenate([t, -t]), jnp.concatenate([t, t]), jnp.array([0, 1, 0, 1]), jnp.array([1.0, 1, 0, 0]), cw, 2.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


def test_drop_layers_maps_kept_layers():
    p = {"word_embeddings": 1, "layer_0": "a", "layer_1": "b", "layer_2": "c", "pooler": 2}
    assert drop_layers(p, (0, 2)) == {"word_embeddings": 1, "layer_0": "a", "layer_1": "c", "pooler": 2}
    with pytest.raises(ValueError):
        drop_layers(p, (5,))


def test_lr_rewinds_after_each_pruning_step():
    cfg = load_config("obert_6l_80_4b")
    sched = student_lr_schedule(cfg, 100, [0, 20, 40])
    lr = cfg.optim.learning_rate
    assert float(sched(0)) == pytest.approx(lr)
    assert float(sched(19)) < 0.1 * lr
    assert float(sched(20)) == pytest.approx(lr)  # rewound
    assert float(sched(40)) == pytest.approx(lr)
    assert float(sched(70)) == pytest.approx(lr / 2)  # recovery: linear to 0 at the end
    assert float(sched(100)) == pytest.approx(0.0, abs=1e-9)


def test_tiny_obs_run_prunes_keeps_masks_and_resumes(tiny_pruned, tmp_path):
    cfg, prep = tiny_pruned["cfg"], tiny_pruned["prep"]
    assert tiny_pruned["first"]["sparsity"] == pytest.approx(0.3, abs=0.01)  # first event: initial sparsity
    assert tiny_pruned["first"]["zeros_kept"]
    full = tiny_pruned["full"]
    assert full["step"] == full["total_steps"] and full["prune_events"] == 2
    model, params, masks = load_student(tiny_pruned["dir"])
    assert mask_sparsity(masks) == pytest.approx(0.8, abs=0.01)
    m = tiny_pruned["metrics"]
    assert m["sparsity"] == pytest.approx(0.8, abs=0.01) and "macro_recall" in m["test"] and "test" in m["recovery"]
    # resume equivalence across a pruning event: 6 steps straight == 3 + resume 3
    straight = train_student(cfg, tmp_path / "b", max_steps=6, prepared=prep, progress=False)
    train_student(cfg, tmp_path / "c", max_steps=3, prepared=prep, progress=False)
    resumed = train_student(cfg, tmp_path / "c", resume=True, max_steps=6, prepared=prep, progress=False)
    for lk in straight["masks"]:
        for n in straight["masks"][lk]:
            np.testing.assert_array_equal(np.asarray(straight["masks"][lk][n]), np.asarray(resumed["masks"][lk][n]))
            np.testing.assert_allclose(np.asarray(straight["params"][lk][n]["weight"]), np.asarray(resumed["params"][lk][n]["weight"]), atol=1e-6)


def test_tiny_layer_drop_dense_distillation(tiny_teacher, tmp_path):
    cfg = _tiny_student("student3_dense", tiny_teacher)
    cfg = dataclasses.replace(cfg, keep_layers=(1,), optim=dataclasses.replace(cfg.optim, epochs=1.0))
    s = train_student(cfg, tmp_path, prepared=prepare(cfg), progress=False)
    model, params, masks = load_student(tmp_path)
    assert model.cfg.num_layers == 1 and "layer_1" not in params and mask_sparsity(masks) == 0.0


def test_layer_drop_only_accepts_a_candidate(tiny_teacher, tmp_path):
    from compression.student import compare_layer_drops

    cfg = _tiny_student("student3_dense", tiny_teacher)
    with pytest.raises(ValueError, match="not one of the candidates"):
        compare_layer_drops(cfg, tmp_path, only=(0, 1, 2), progress=False)
    assert not (tmp_path / "layerdrop.json").exists()


@pytest.mark.parametrize("follow_up", ["qat_6l_80_4b", "recover_6l_80_4b"])
def test_tiny_follow_up_keeps_masks(tiny_pruned, tmp_path, follow_up):
    """QAT and the longer recovery train a pruned student further: no weight it pruned comes back."""
    cfg, prep = tiny_pruned["cfg"], tiny_pruned["prep"]
    _, params0, masks0 = load_student(tiny_pruned["dir"])
    fcfg = dataclasses.replace(load_config(follow_up, tiny=True), init=str(tiny_pruned["dir"]), kd=cfg.kd)
    assert fcfg.prune.method == "none"
    train_student(fcfg, tmp_path / "follow_up", prepared=prep, progress=False)
    model, params, masks = load_student(tmp_path / "follow_up")
    assert not np.array_equal(params["layer_0"]["query"]["weight"], params0["layer_0"]["query"]["weight"])  # it did train
    for lk in masks0:
        for n in masks0[lk]:
            np.testing.assert_array_equal(masks[lk][n], masks0[lk][n])
            assert (np.asarray(params[lk][n]["weight"])[masks0[lk][n] == 0] == 0).all()
    assert mask_sparsity(masks) == pytest.approx(0.8, abs=0.01)


def test_package_round_trip_and_card(tiny_teacher, tiny_pruned, tmp_path):
    """Float + QAT student -> fp16 student (masks bit-packed) + INT8 runtime model evaluated in C."""
    from compression.package import package_int8, save_student
    from compression.student_file import load_packaged_student
    from runtime.format import load_model
    from runtime.scorer import Scorer

    import shutil

    cfg, prep = tiny_pruned["cfg"], tiny_pruned["prep"]
    shutil.copytree(tiny_pruned["dir"], tmp_path / "float")  # the run's name becomes the packaged student's
    qcfg = dataclasses.replace(load_config("qat_6l_80_4b", tiny=True), init=str(tmp_path / "float"), kd=cfg.kd)
    train_student(qcfg, tmp_path / "qat", prepared=prep, progress=False)
    qm = evaluate_student(qcfg, tmp_path / "qat", prepared=prep)
    assert qm["quantized"] is True
    m = package_int8(tmp_path / "float", tmp_path / "qat", tmp_path / "out", students_dir=tmp_path / "students", teacher_dir=tiny_teacher, limit=40)
    # the fp16 student reloads with identical masks and weights within fp16 rounding
    _, p0, m0 = load_student(tmp_path / "float")
    model, p1, m1 = load_student(tmp_path / "students" / "float")
    for lk in m0:
        for n in m0[lk]:
            np.testing.assert_array_equal(m1[lk][n], m0[lk][n])
            np.testing.assert_allclose(p1[lk][n]["weight"], p0[lk][n]["weight"], atol=2e-3, rtol=1e-3)
    assert (tmp_path / "students" / "qat" / "metrics.json").is_file()
    # the runtime model validates, scores, and its card and metrics carry the measured figures
    assert load_model(tmp_path / "out").encoder_sparsity() == pytest.approx(m["sparsity"])
    assert Scorer(tmp_path / "out").score(["good day", "bad day"])[1].shape == (2, 3)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["test"]["n"] == 40 and 0 <= saved["test"]["macro_recall"] <= 1 and saved["encoder_compression"] > 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert f"{100 * saved['test']['macro_recall']:.2f}" in card and "python -m compression package" in card
    # a damaged student file is refused with a clear error
    f = tmp_path / "students" / "float" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_packaged_student(tmp_path / "students" / "float")
    save_student(tmp_path / "float", tmp_path / "students" / "float")
    assert load_packaged_student(tmp_path / "students" / "float")[0].cfg == model.cfg
    # metrics only: the figures for the results table, no weights
    only = save_student(tmp_path / "float", tmp_path / "students" / "float-metrics", weights=False)
    assert (only / "metrics.json").read_text() == (tmp_path / "float" / "metrics.json").read_text()
    assert not (only / "model.safetensors").exists()
    with pytest.raises(FileNotFoundError, match="not finished"):
        save_student(tmp_path / "nowhere", tmp_path / "students" / "x", weights=False)
