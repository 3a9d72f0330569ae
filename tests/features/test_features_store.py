import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from extract.outputs import TokenLayout
from features.config import StoreConfig
from features.manifest import ManifestRow
from features.store import DONE, FAILED, PENDING, StoreError, TokenStore, open_dask_arrays

LAYOUT = TokenLayout(views=2, video_tokens=3, video_dim=4, audio_tokens=5, audio_dim=6, kinetics_classes=7)


def _clips(n):
    return [ManifestRow(f"c{i}", Path(f"/data/c{i}.mp4"), f"class{i % 3}", "seen" if i % 2 else "unseen")
            for i in range(n)]


def _tokens(seed, has_audio=True):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        video_tokens=rng.standard_normal((2, 3, 4)).astype(np.float16),
        audio_tokens=rng.standard_normal((5, 6)).astype(np.float16),
        kinetics_logits=rng.standard_normal((2, 7)).astype(np.float32),
        has_audio=has_audio, audio_frames=17 if has_audio else 0)


@pytest.mark.parametrize("shard_blocks", [False, True])
def test_round_trip_statuses_and_order(tmp_path, shard_blocks):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(10), LAYOUT, {"profile": "x"}, {"video": "random-init"},
                              StoreConfig(clips_per_block=4, shard_blocks=shard_blocks))
    written = {3: _tokens(3), 1: _tokens(1, has_audio=False)}
    store.write_clips(list(written), list(written.values()))
    store.mark_failed([2], ["zero bytes:\n empty file"])

    reopened = TokenStore.open(tmp_path / "s.zarr")
    assert reopened.counts() == {"pending": 7, "done": 2, "failed": 1}
    assert reopened.status[[1, 2, 3, 0]].tolist() == [DONE, FAILED, DONE, PENDING]
    assert reopened.failure_reasons[2] == "zero bytes: empty file"
    data = reopened.read([3, 1, 3])
    np.testing.assert_array_equal(data["video_tokens"][0], written[3].video_tokens)
    np.testing.assert_array_equal(data["video_tokens"][2], written[3].video_tokens)
    np.testing.assert_array_equal(data["audio_tokens"][1], written[1].audio_tokens)
    np.testing.assert_array_equal(data["kinetics_logits"][0], written[3].kinetics_logits)
    assert data["has_audio"].tolist() == [True, False, True]
    assert data["audio_frames"].tolist() == [17, 0, 17]
    assert reopened.clip_ids.tolist() == [f"c{i}" for i in range(10)]
    assert reopened.indices(DONE, splits=["seen"]).tolist() == [1, 3]
    assert reopened.block_ranges() == [(0, 4), (4, 8), (8, 10)]


def test_store_opens_with_plain_zarr_and_dask(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(3), LAYOUT, {}, {})
    store.write_clips([0], [_tokens(0)])
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["video_tokens"].shape == (3, 2, 3, 4) and group["video_tokens"].dtype == np.float16
    assert group["video_tokens"].metadata.dimension_names == ("clip", "view", "video_token", "video_dim")
    lazy = open_dask_arrays(tmp_path / "s.zarr")
    np.testing.assert_array_equal(lazy["video_tokens"][0].compute(), _tokens(0).video_tokens)
    assert lazy["status"].compute().tolist() == [DONE, PENDING, PENDING]


def test_writes_check_shapes_and_dtypes(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(2), LAYOUT, {}, {})
    bad = _tokens(0)
    bad.video_tokens = bad.video_tokens.astype(np.float32)
    with pytest.raises(ValueError, match="video_tokens has dtype float32"):
        store.write_clips([0], [bad])
    bad = _tokens(0)
    bad.audio_tokens = bad.audio_tokens[:4]
    with pytest.raises(ValueError, match=r"audio_tokens has shape \(4, 6\)"):
        store.write_clips([0], [bad])
    assert store.counts()["done"] == 0
    with pytest.raises(StoreError, match="read-only"):
        TokenStore.open(tmp_path / "s.zarr").write_clips([0], [_tokens(0)])


def test_open_rejects_non_stores_and_create_refuses_to_overwrite(tmp_path):
    with pytest.raises(StoreError, match="not a token store"):
        TokenStore.open(tmp_path / "nothing")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an MZST token store"):
        TokenStore.open(tmp_path / "other.zarr")
    TokenStore.create(tmp_path / "s.zarr", _clips(1), LAYOUT, {}, {})
    with pytest.raises(FileExistsError):
        TokenStore.create(tmp_path / "s.zarr", _clips(1), LAYOUT, {}, {})
    assert not list(tmp_path.glob(".s.zarr.creating-*"))


def test_store_without_kinetics_logits(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(2), dataclasses.replace(LAYOUT, kinetics_classes=0), {}, {})
    assert "kinetics_logits" not in store.fields
    tokens = _tokens(0)
    del tokens.kinetics_logits
    store.write_clips([1], [tokens])
    assert set(store.read([1])) == {"video_tokens", "audio_tokens", "has_audio", "audio_frames"}


def test_summary_is_json(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(4), LAYOUT, {"profile": "p"}, {"video": "random-init"})
    store.write_clips([0], [_tokens(0)])
    summary = json.loads(json.dumps(store.summary()))
    assert (summary["clips"], summary["done"], summary["pending"], summary["failed"]) == (4, 1, 3, 0)
    assert summary["splits"]["unseen"]["done"] == 1
    assert summary["extract_config"] == {"profile": "p"} and summary["provenance"] == {"video": "random-init"}
    assert summary["bytes_on_disk"] > 0


def test_partial_clips_are_recorded_and_older_stores_say_they_cannot(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(4), LAYOUT, {"profile": "p"}, {})
    store.write_clips([0, 1], [SimpleNamespace(**vars(_tokens(0)), decoded_s=2.5), _tokens(1)])
    assert store.decoded_s[0] == 2.5 and np.isnan(store.decoded_s[1:]).all()
    assert store.summary()["partial"] == 1 and store.summary()["first_partial"][0] == {
        "clip_id": "c0", "path": "/data/c0.mp4", "decoded_s": 2.5}
    del zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")["decoded_s"]  # as made before partial clips
    older = TokenStore.open(tmp_path / "s.zarr", mode="r+")
    assert older.summary()["partial"] == 0 and np.isnan(older.decoded_s).all()
    older.write_clips([2], [_tokens(2)])  # whole clips are written as before
    with pytest.raises(StoreError, match="made before partial clips were kept.*`strict_media=True`"):
        older.write_clips([3], [SimpleNamespace(**vars(_tokens(3)), decoded_s=1.0)])


@pytest.mark.parametrize("store_config", [StoreConfig(compressor="none"), StoreConfig(compressor="zstd"),
                                          StoreConfig(compressor="none", shard_blocks=True)])
def test_fast_raw_reads_equal_zarr_reads(tmp_path, store_config):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {}, store_config)
    store.write_clips([0, 1, 4], [_tokens(0), _tokens(1), _tokens(4)])
    reopened = TokenStore.open(tmp_path / "s.zarr")
    index = np.array([4, 0, 5, 1, 4])
    ours = reopened.read(index)
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    for name in ("video_tokens", "audio_tokens", "kinetics_logits"):
        np.testing.assert_array_equal(ours[name], group[name][:][index])
        assert ours[name].dtype == group[name].dtype
    assert bool(reopened._raw_chunk_dirs) == (store_config.compressor == "none" and not store_config.shard_blocks)


def test_a_failed_clip_written_later_is_done_without_its_reason(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {}, StoreConfig(clips_per_block=4))
    store.mark_failed([1, 4], ["truncated", "empty file"])
    store.write_clips([0, 1, 2], [_tokens(0), _tokens(1), _tokens(2)])  # a retry of clip 1 among new clips
    store.write_clips([5], [_tokens(5)])  # clip 4's reason stays: only a written clip's is cleared
    reopened = TokenStore.open(tmp_path / "s.zarr")
    assert reopened.status.tolist() == [DONE, DONE, DONE, PENDING, FAILED, DONE]
    assert reopened.failure_reasons.tolist() == ["", "", "", "", "empty file", ""]
    chunk = tmp_path / "s.zarr" / "video_tokens" / "c" / "1" / "0" / "0" / "0"  # written as a plain chunk file
    np.testing.assert_array_equal(np.fromfile(chunk, dtype="<f2").reshape(2, 3, 4), _tokens(1).video_tokens)
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "s.zarr" / "video_tokens"), mode="r")[1],
                                  _tokens(1).video_tokens)
    assert not list((tmp_path / "s.zarr").rglob(".*writing*"))  # no staging file left behind
