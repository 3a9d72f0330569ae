"""curate.importers: AVCA .h5 / TCAF .pkl feature folders written by the test -> token store and back."""

import pickle
import zlib

import h5py
import numpy as np
import pytest

from curate import importers
from curate.config import AVCAImportConfig
from features.reader import BatchReader
from features.store import DONE, TokenStore

# UCF classes (all_class.txt spelling) and the clips the test writes per stage
_CLIPS = {
    "stage_1_train": {"ApplyEyeMakeup": ["v_ApplyEyeMakeup_g01_c01", "v_ApplyEyeMakeup_g01_c02"],
                      "Archery": ["v_Archery_g01_c01"]},
    "stage_2_test_unseen": {"Basketball": ["v_Basketball_g01_c01", "v_Basketball_g02_c01", "v_Basketball_g03_c01"]},
}


def _features(clip_id, dim, modality):
    seed = zlib.crc32(f"{clip_id}/{modality}".encode())
    return np.random.default_rng(seed).normal(size=dim).astype(np.float32)


def _write_h5(root, clips=_CLIPS, dv=6, da=4, url=lambda c: f"/data/UCF-101/{c}.avi"):
    for stage, classes in clips.items():
        for modality, dim in (("video", dv), ("audio", da)):
            folder = root / modality / stage
            folder.mkdir(parents=True, exist_ok=True)
            for name, ids in classes.items():
                order = ids if modality == "audio" else ids[::-1]  # video lists the clips in another order
                with h5py.File(folder / f"{name}.h5", "w") as f:
                    f["data"] = np.stack([_features(c, dim, modality) for c in order])
                    f["video_urls"] = np.array([url(c).encode() for c in order])
    return root


def test_h5_round_trip(tmp_path):
    root = _write_h5(tmp_path / "features")
    summary = importers.import_avca_features(AVCAImportConfig(features=root, dataset="ucf", out=tmp_path / "s.zarr"))
    assert (summary.clips, summary.classes, summary.duplicates, summary.format) == (6, 3, 0, "avca-h5")
    assert summary.stages == {"stage_1_train": 3, "stage_2_test_unseen": 3}
    store = TokenStore.open(tmp_path / "s.zarr")
    layout = store.token_layout
    assert (layout.views, layout.video_tokens, layout.video_dim, layout.audio_tokens, layout.audio_dim) == (
        1, 1, 6, 1, 4)
    assert layout.kinetics_classes == 0 and layout.source == "avca-h5"
    assert "kinetics_logits" not in store.fields
    assert (store.status == DONE).all()
    ids = store.clip_ids.tolist()
    assert sorted(ids) == sorted(c for classes in _CLIPS.values() for v in classes.values() for c in v)
    data = store.read(np.arange(store.num_clips))
    for i, clip_id in enumerate(ids):
        # video matched by clip id although the video file lists the clips in reverse order
        np.testing.assert_array_equal(data["video_tokens"][i, 0, 0], _features(clip_id, 6, "video").astype(np.float16))
        np.testing.assert_array_equal(data["audio_tokens"][i, 0], _features(clip_id, 4, "audio").astype(np.float16))
    labels = dict(zip(ids, store.labels.tolist(), strict=True))
    assert labels["v_Archery_g01_c01"] == "Archery"
    assert dict(zip(ids, store.splits.tolist(), strict=True))["v_Basketball_g02_c01"] == "stage_2_test_unseen"
    batch = next(iter(BatchReader(store, np.arange(3), batch_size=3, prefetch=0)))
    assert batch.video_tokens.shape == (3, 1, 1, 6) and batch.audio_tokens.shape == (3, 1, 4)
    assert bool(batch.has_audio.all())


def test_clip_in_two_stages_is_stored_once(tmp_path):
    clips = {**_CLIPS, "stage_2_train": {"Archery": ["v_Archery_g01_c01"]}}
    root = _write_h5(tmp_path / "features", clips)
    summary = importers.import_avca_features(AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "s.zarr"))
    assert (summary.clips, summary.duplicates) == (6, 1)
    assert TokenStore.open(tmp_path / "s.zarr").splits.tolist().count("stage_2_train") == 0


def test_only_requested_stages(tmp_path):
    root = _write_h5(tmp_path / "features")
    config = AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "s.zarr", stages=("stage_1_train",))
    assert importers.import_avca_features(config).clips == 3


def test_errors_name_the_problem(tmp_path):
    root = _write_h5(tmp_path / "features", {"stage_1_train": {"NotAClass": ["v_x"]}})
    with pytest.raises(ValueError, match="'NotAClass' is not in UCF/class-split/all_class.txt"):
        importers.import_avca_features(AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "a.zarr"))
    root = _write_h5(tmp_path / "f2")
    with h5py.File(root / "video" / "stage_1_train" / "Archery.h5", "r+") as f:
        del f["video_urls"]
        f["video_urls"] = np.array([b"v_Archery_g09_c09"])
    with pytest.raises(ValueError, match="list different"):
        importers.import_avca_features(AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "b.zarr"))
    with pytest.raises(FileNotFoundError, match="audio/ and video/"):
        importers.import_avca_features(AVCAImportConfig(features=tmp_path, dataset="UCF", out=tmp_path / "c.zarr"))
    (tmp_path / "exists.zarr").mkdir()
    with pytest.raises(FileExistsError):
        importers.import_avca_features(AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "exists.zarr"))


def _write_pkl(root, lengths):
    for stage, classes in _CLIPS.items():
        for modality, dim in (("video", 5), ("audio", 3)):
            folder = root / modality / stage
            folder.mkdir(parents=True, exist_ok=True)
            for name, ids in classes.items():
                features = [np.arange(lengths[c] * dim, dtype=np.float32).reshape(lengths[c], dim) for c in ids]
                payload = {"features": features, "video_names": ids, "fps": [25.0] * len(ids)}
                (folder / f"{name}.pkl").write_bytes(pickle.dumps(payload))
    return root


def test_tcaf_pickles_need_explicit_trust(tmp_path):
    ids = [c for classes in _CLIPS.values() for v in classes.values() for c in v]
    root = _write_pkl(tmp_path / "features", {c: 2 + i for i, c in enumerate(ids)})
    with pytest.raises(ValueError, match="`trust_pickle`"):
        importers.import_avca_features(AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "s.zarr"))
    assert not (tmp_path / "s.zarr").exists()
    config = AVCAImportConfig(features=root, dataset="UCF", out=tmp_path / "s.zarr", trust_pickle=True,
                              sequence_tokens=4)
    summary = importers.import_avca_features(config)
    assert summary.format == "tcaf-pkl"
    assert summary.token_layout.video_tokens == 4 and summary.token_layout.audio_tokens == 4
    store = TokenStore.open(tmp_path / "s.zarr")
    row = store.clip_ids.tolist().index(ids[2])  # a 4-step sequence: stored unchanged
    video = store.read([row])["video_tokens"][0, 0]
    np.testing.assert_array_equal(video, np.arange(20, dtype=np.float16).reshape(4, 5))
    assert store.read([row])["audio_frames"].tolist() == [4]


def test_resample_sequence_by_hand():
    x = np.arange(6, dtype=np.float32)[:, None]  # steps 0..5
    np.testing.assert_array_equal(importers.resample_sequence(x, 3)[:, 0], [0.5, 2.5, 4.5])
    np.testing.assert_array_equal(importers.resample_sequence(x[:2], 4)[:, 0], [0, 0, 1, 1])
    np.testing.assert_array_equal(importers.resample_sequence(x, 6), x)
    with pytest.raises(ValueError, match="non-empty"):
        importers.resample_sequence(np.zeros((0, 3)), 2)


def test_cli_import_avca(tmp_path):
    from click.testing import CliRunner

    from cli import cli

    root = _write_h5(tmp_path / "features")
    result = CliRunner().invoke(cli, ["import-avca", "--features", str(root), "--dataset", "UCF", "--out",
                                      str(tmp_path / "s.zarr")])
    assert result.exit_code == 0, result.output
    assert "imported 6 clips of 3 classes (avca-h5" in result.output
    pickles = _write_pkl(tmp_path / "pkl", {c: 2 for classes in _CLIPS.values() for v in classes.values() for c in v})
    refused = CliRunner().invoke(cli, ["import-avca", "--features", str(pickles), "--dataset", "UCF", "--out",
                                       str(tmp_path / "p.zarr")])
    assert refused.exit_code == 1 and "--trust-pickle" in refused.output
