import json
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.outputs import TokenLayout
from features.store import TokenStore
from fusion.config import FusionConfig, TrainConfig
from fusion.losses import kinetics_class
from fusion.predict import predict_embeddings, resolve_device
from fusion.run_dir import load_run
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


def _record(clip_id):
    from features.manifest import ClipRecord

    return ClipRecord(clip_id, Path(f"/{clip_id}.mp4"), "dog barking", "seen")


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
