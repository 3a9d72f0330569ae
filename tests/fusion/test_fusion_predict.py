import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.outputs import TokenLayout
from features.store import TokenStore
from fusion.config import FusionConfig, TrainConfig
from fusion.losses import kinetics_class
from fusion.predict import conse_embeddings, predict_embeddings, resolve_device
from fusion.trained_run import load_concatenated_runs, load_run
from fusion.trainer import train

TINY = FusionConfig(width=32, num_blocks=1, num_heads=2, num_fusion_tokens=2, se_weights=(0.25,),
                    mlm_weights=(0.25,), weight_milestones_epochs=())


@pytest.fixture(scope="module")
def run_dir(synthetic_store, vectors_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "run"
    train(TrainConfig(store=synthetic_store.path, out=out, fusion=TINY, embeddings=f"word2vec:{vectors_file}",
                      epochs=2, batch_size=8, lr=3e-3, val_unseen_fraction=0.25, progress=False))
    return out


def test_load_run_returns_the_model_and_what_eval_needs(run_dir):
    model, info = load_run(run_dir)
    assert not model.training and info.checkpoint.name == "best.pt" and info.epoch in (1, 2)
    assert info.decision_rule == "kinetics" and info.fusion == TINY
    assert info.class_embeddings.shape == (len(info.class_names), 16) and info.kinetics_embeddings.shape == (400, 16)
    assert info.embedding_spec.startswith("word2vec:") and not info.embedding_normalised
    assert len(info.validation["unseen_classes"]) == 2
    last, last_info = load_run(run_dir, checkpoint="last")
    assert last_info.epoch == 2
    best_state = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(t, model.state_dict()[k]) for k, t in best_state.items())


def test_predictions_are_the_view_ensemble_of_the_av_pass(run_dir, synthetic_store):
    model, info = load_run(run_dir, checkpoint="last")
    indices = np.array([7, 3, 0, 50, 3])  # any order, repeats allowed
    predictions = predict_embeddings(model, synthetic_store, indices, batch_size=2)
    assert predictions.embeddings.shape == (5, 16) and predictions.task_logits.shape == (5, len(info.class_names))
    assert predictions.index.tolist() == indices.tolist()
    data = synthetic_store.read(indices)
    video = torch.from_numpy(data["video_tokens"]).float()
    audio = torch.from_numpy(data["audio_tokens"]).float()
    has_audio = torch.from_numpy(data["has_audio"])
    with torch.no_grad():
        views = [model.forward_av(video[:, v], audio, has_audio).embedding for v in range(video.shape[1])]
    np.testing.assert_allclose(predictions.embeddings, torch.stack(views, 1).mean(1).numpy(), atol=1e-5)
    expected_kinetics = kinetics_class(torch.from_numpy(data["kinetics_logits"])).numpy()
    assert np.array_equal(predictions.kinetics_pred, expected_kinetics)
    np.testing.assert_allclose(predictions.embeddings[1], predictions.embeddings[4], atol=1e-6)


def test_predict_refuses_pending_clips_and_other_layouts(run_dir, synthetic_store, vectors_file, tmp_path, kit):
    model, _ = load_run(run_dir)
    other = kit.make_store(tmp_path / "wide.zarr", vectors_file, clips_per_class=1,
                           layout={**kit.LAYOUT, "Dv": 8})
    with pytest.raises(ValueError, match="video_dim=8 \\(model: 24\\)"):
        predict_embeddings(model, other, [0])
    pending = TokenStore.create(tmp_path / "pending.zarr", [_record("a")], TokenLayout.from_dict(kit.LAYOUT), {}, {})
    with pytest.raises(ValueError, match="not done.*'a'"):
        predict_embeddings(model, pending, [0])
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # broken weights, finite tokens: the head is blamed
    first = synthetic_store.clip_ids[0]
    with pytest.raises(ValueError, match=f"the head gives NaN or inf for clip\\(s\\) '{first}'.*weights are broken"):
        predict_embeddings(model, synthetic_store, [0])


def _record(clip_id):
    from features.manifest import ManifestRow

    return ManifestRow(clip_id, Path(f"/{clip_id}.mp4"), "dog barking", "seen")


def test_load_run_errors(run_dir, synthetic_store, vectors_file, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a fusion run directory"):
        load_run(tmp_path)
    out = tmp_path / "noval"
    train(TrainConfig(store=synthetic_store.path, out=out, fusion=TINY, embeddings=f"word2vec:{vectors_file}",
                      epochs=1, batch_size=16, progress=False))
    with pytest.raises(FileNotFoundError, match="no validation"):
        load_run(out)
    assert load_run(out, checkpoint="last")[1].validation == {}
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read as a fusion checkpoint"):
        load_run(run_dir, checkpoint=str(junk))
    with pytest.raises(ValueError, match="other class embeddings"):
        load_run(out, checkpoint=str(run_dir / "last.pt"))  # another run's checkpoint
    assert json.loads((out / "classes.json").read_text())["validation"] is None


def test_cuda_is_never_a_silent_fallback():
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="cpu' or 'cuda"):
        resolve_device("tpu")


def test_conse_by_hand():
    """Logits log(4), log(3), log(1), -inf-ish: softmax 0.5, 0.375, 0.125, 0; T = 2 keeps classes 0 and 1 and
    renormalises 0.5 : 0.375 to 4/7 : 3/7."""
    phi = np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0], [9.0, 9.0]])
    logits = np.log(np.array([[4.0, 3.0, 1.0, 1e-12], [1.0, 1.0, 1.0, 1.0]]))
    got = conse_embeddings(logits, phi, top_t=2)
    np.testing.assert_allclose(got[0], [4 / 7, 3 / 7], rtol=1e-6)
    np.testing.assert_allclose(got[1], [0.5, 0.5], rtol=1e-6)  # a tie: the lower ids 0 and 1, equal weights
    np.testing.assert_allclose(conse_embeddings(logits, phi, top_t=3)[0], [4 / 8 + 5 / 8, 3 / 8 + 5 / 8], rtol=1e-6)
    # T beyond the classes is capped: all four, weighted by the full softmax
    np.testing.assert_allclose(conse_embeddings(logits, phi, top_t=99)[1], phi.mean(axis=0), rtol=1e-6)


def test_a_task_only_head_predicts_conse_embeddings(synthetic_store, vectors_file, tmp_path):
    from fusion.config import apply_ablations

    out = tmp_path / "task"
    fusion = apply_ablations(TINY, ["task"])
    train(TrainConfig(store=synthetic_store.path, out=out, fusion=fusion, embeddings=f"word2vec:{vectors_file}",
                      epochs=1, batch_size=8, lr=3e-3, val_unseen_fraction=0.25, progress=False))
    model, info = load_run(out)
    assert info.decision_rule == "plain" and fusion.zero_shot_embedding == "conse"
    indices = synthetic_store.indices()[:6]
    pred = predict_embeddings(model, synthetic_store, indices, class_embeddings=info.class_embeddings)
    expected = conse_embeddings(pred.task_logits, info.class_embeddings, fusion.conse_top_t)
    np.testing.assert_allclose(pred.embeddings, expected, rtol=1e-6)
    with pytest.raises(ValueError, match="ConSE head"):
        predict_embeddings(model, synthetic_store, indices)


def test_concatenated_runs_stand_side_by_side(synthetic_store, vectors_file, tmp_path):
    runs = []
    for modalities in ("audio", "video"):
        runs.append(tmp_path / modalities)
        train(TrainConfig(store=synthetic_store.path, out=runs[-1], fusion=FusionConfig(**{
            **TINY.to_dict(), "modalities": modalities}), embeddings=f"word2vec:{vectors_file}", epochs=1,
            batch_size=8, lr=3e-3, val_unseen_fraction=0.25, progress=False))
    heads, info = load_concatenated_runs(runs)
    indices = synthetic_store.indices()[:5]
    both = predict_embeddings(heads, synthetic_store, indices)
    alone = [predict_embeddings(load_run(r)[0], synthetic_store, indices).embeddings for r in runs]
    np.testing.assert_allclose(both.embeddings, np.concatenate(alone, axis=1), rtol=1e-6)
    e = load_run(runs[0])[1].class_embeddings.shape[1]
    assert info.embedding_repeats == 2 and info.class_embeddings.shape[1] == 2 * e
    np.testing.assert_array_equal(info.class_embeddings[:, :e], info.class_embeddings[:, e:])
    other = tmp_path / "other"
    train(TrainConfig(store=synthetic_store.path, out=other, fusion=TINY, embeddings=f"word2vec:{vectors_file}",
                      epochs=1, batch_size=8, lr=3e-3, val_unseen_fraction=0.5, progress=False))
    with pytest.raises(ValueError, match="cannot be concatenated"):
        load_concatenated_runs([runs[0], other])
