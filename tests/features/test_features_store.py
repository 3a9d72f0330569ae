import dataclasses
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from cli import cli
from extract.outputs import TokenLayout, kinetics_class
from features.chunks import DamagedClipError
from features.config import StoreConfig
from features.lease import StoreLease, lease_path
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


def test_split_names_asked_for_in_any_spelling_select_the_same_clips(tmp_path):
    # `train_splits`, `val_splits` and zeroshot's `--splits` reach the store through `indices`: a name padded with
    # spaces or a no-break space in a config file selects the clips of the split it spells.
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {})
    unseen = store.indices(None, ["unseen"])
    assert unseen.tolist() == [0, 2, 4]
    assert store.indices(None, [" unseen  "]).tolist() == unseen.tolist()
    assert store.indices(None, ["seen\u00a0", "unseen"]).tolist() == list(range(6))


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
    assert summary["token_bytes"] == sum(np.asarray(v).nbytes for k, v in vars(_tokens(0)).items()
                                         if k.endswith(("_tokens", "_logits")))
    assert summary["bytes_on_disk"] is None and store.summary(disk_usage=True)["bytes_on_disk"] > 0


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


@pytest.mark.parametrize("store_config", [StoreConfig(compressor="none", shard_blocks=False),
                                          StoreConfig(compressor="zstd", shard_blocks=False),
                                          StoreConfig(compressor="none", shard_blocks=True),
                                          StoreConfig(compressor="zstd", shard_blocks=True, clips_per_block=4)])
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
    assert bool(reopened._raw) == (store_config.compressor == "none")  # read straight from the files


def test_a_failed_clip_written_later_is_done_without_its_reason(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {},
                              StoreConfig(clips_per_block=4, shard_blocks=False))
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


# --- identity and integrity -------------------------------------------------------------------------------


def test_identity_survives_copy_move_and_link_and_tells_other_stores_apart(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(4), LAYOUT, {"profile": "p"}, {"created": "t"})
    store.write_clips([0, 1], [_tokens(0), _tokens(1)])
    identity = TokenStore.open(tmp_path / "s.zarr").identity
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "copy.zarr")
    (tmp_path / "link.zarr").symlink_to(tmp_path / "copy.zarr")
    assert TokenStore.open(tmp_path / "copy.zarr").identity == identity
    assert TokenStore.open(tmp_path / "link.zarr").identity == identity
    (tmp_path / "copy.zarr").rename(tmp_path / "moved.zarr")
    assert TokenStore.open(tmp_path / "moved.zarr").identity == identity
    # Another store of the very same clip list, config and layout: another identity.
    other = TokenStore.create(tmp_path / "other.zarr", _clips(4), LAYOUT, {"profile": "p"}, {"created": "t"})
    assert other.identity != identity
    # A store made before `store_id`: its identity comes from its content, the same for its copy.
    for name in ("s.zarr", "moved.zarr"):
        group = zarr.open_group(str(tmp_path / name), mode="r+")
        del group.attrs["store_id"]
    older = TokenStore.open(tmp_path / "s.zarr").identity
    assert older != identity and TokenStore.open(tmp_path / "moved.zarr").identity == older


def _corrupt(chunk: Path, how: str) -> None:
    data = chunk.read_bytes()
    if how == "deleted":
        chunk.unlink()
    elif how == "truncated":
        chunk.write_bytes(data[: len(data) // 2])
    else:  # "extended"
        chunk.write_bytes(data + b"\0" * 8)


@pytest.mark.parametrize("array", ["video_tokens", "audio_tokens", "kinetics_logits"])
@pytest.mark.parametrize("how", ["deleted", "truncated", "extended"])
def test_a_damaged_chunk_is_reported_and_never_read_as_zeros(tmp_path, how, array):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {},
                              StoreConfig(clips_per_block=4, shard_blocks=False))
    store.write_clips([0, 1, 2, 3], [_tokens(i) for i in range(4)])
    store.write_clips([4], [_tokens(4)])
    chunk = tmp_path / "s.zarr" / array / "c" / "2" / "0" / "0"
    _corrupt(chunk / "0" if array == "video_tokens" else chunk, how)

    reopened = TokenStore.open(tmp_path / "s.zarr")
    damaged = reopened.damaged_clips()
    assert list(damaged) == [2] and damaged[2].startswith(f"{array}: chunk file ")
    assert ("missing" in damaged[2]) == (how == "deleted")
    summary = reopened.summary()
    assert summary["damaged"] == 1 and summary["first_damaged"][0]["clip_id"] == "c2"
    message = f"s.zarr: clip 'c2' \\(index 2\\) is done but its {array} data is damaged"
    with pytest.raises(DamagedClipError, match=message):
        reopened.read([0, 2])
    if array == "video_tokens":
        with pytest.raises(DamagedClipError, match=message):
            reopened.read_views([2], [1])
    np.testing.assert_array_equal(reopened.read([3])[array][0], getattr(_tokens(3), array))  # others read as before
    assert not reopened.read([5])[array].any()  # a pending clip has no data: zeros, as before

    writable = TokenStore.open(tmp_path / "s.zarr", mode="r+")
    writable.mark_pending([2])
    assert writable.damaged_clips() == {} and writable.status[2] == PENDING
    writable.write_clips([2], [_tokens(2)])
    np.testing.assert_array_equal(writable.read([2])[array][0], getattr(_tokens(2), array))


@pytest.mark.parametrize("store_config", [StoreConfig(compressor="zstd", clips_per_block=4, shard_blocks=False),
                                          StoreConfig(shard_blocks=True, clips_per_block=4),
                                          StoreConfig(compressor="zstd", shard_blocks=True, clips_per_block=4)])
@pytest.mark.parametrize("how", ["deleted", "truncated", "extended"])
def test_compressed_or_sharded_chunks_are_checked_by_presence_then_when_decoded(tmp_path, store_config, how):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {}, store_config)
    silent = SimpleNamespace(**{**vars(_tokens(1, has_audio=False)), "audio_tokens": np.zeros((5, 6), np.float16)})
    store.write_clips([0, 1, 2, 3], [_tokens(0), silent, _tokens(2), _tokens(3)])
    assert TokenStore.open(tmp_path / "s.zarr").damaged_clips() == {}  # zero audio of a silent clip is no damage
    # One clip per chunk file, or the shard file of clips 0-3.
    video = tmp_path / "s.zarr" / "video_tokens"
    _corrupt(video / "c.0.0.0.0" if store_config.shard_blocks else video / "c" / "2" / "0" / "0" / "0", how)
    reopened = TokenStore.open(tmp_path / "s.zarr")
    first = 0 if store_config.shard_blocks else 2
    if how == "deleted" or store_config.shard_blocks:  # found without reading token data (a shard by its index)
        assert list(reopened.damaged_clips()) == ([0, 1, 2, 3] if store_config.shard_blocks else [2])
    with pytest.raises(DamagedClipError,
                       match=f"clip 'c{first}' \\(index {first}\\) is done but its video_tokens data is damaged"):
        reopened.read([first, 3])


@pytest.mark.parametrize("damage", ["array folder deleted", "junk group zarr.json", "truncated array zarr.json",
                                    "wrong-typed group zarr.json"])
def test_damaged_store_metadata_is_one_line_naming_it(tmp_path, damage):
    path = tmp_path / "s.zarr"
    TokenStore.create(path, _clips(2), LAYOUT, {}, {})
    if damage == "array folder deleted":
        shutil.rmtree(path / "audio_tokens")
        named = "'audio_tokens' is missing"
    elif damage == "junk group zarr.json":
        (path / "zarr.json").write_text("{junk")
        named = f"{path / 'zarr.json'}: damaged store metadata"
    elif damage == "truncated array zarr.json":
        text = (path / "status" / "zarr.json").read_text()
        (path / "status" / "zarr.json").write_text(text[: len(text) // 2])
        named = f"{path / 'status' / 'zarr.json'}: damaged store metadata"
    else:
        (path / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": 5}')
        named = "damaged store metadata (TypeError"
    with pytest.raises(StoreError, match="damaged store") as error:
        TokenStore.open(path)
    assert named in str(error.value) and "\n" not in str(error.value)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_store_name_as_long_as_the_file_system_allows(tmp_path):
    path = tmp_path / ("s" * 243 + ".zarr")  # 248 characters: the lease's own name (254) still fits in 255
    with StoreLease(path, timeout_s=0.4) as lease:
        assert lease.holder is not None and lease_path(path).is_file()
        store = TokenStore.create(path, _clips(2), LAYOUT, {}, {})
        store.write_clips([0], [_tokens(0)])
        time.sleep(0.3)  # the heartbeat is renewed (rewritten atomically) every 0.1 s
        assert json.loads(lease_path(path).read_text())["heartbeat"] > lease.holder.heartbeat
    assert TokenStore.open(path).counts()["done"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no lease, staging or temporary file left


def test_kinetics_class_is_recorded_with_the_logits(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(4), LAYOUT, {}, {})
    tokens = [_tokens(seed) for seed in (5, 6)]
    store.write_clips([3, 1], tokens)
    expected = kinetics_class(np.stack([t.kinetics_logits for t in tokens]))
    assert TokenStore.open(tmp_path / "s.zarr").kinetics_classes([3, 1, 0]).tolist() == [*expected.tolist(), -1]
    del zarr.open_group(str(tmp_path / "s.zarr"), mode="r+")["kinetics_class"]  # as made before it was recorded
    assert TokenStore.open(tmp_path / "s.zarr").kinetics_classes([3]) is None
    no_logits = TokenStore.create(tmp_path / "k0.zarr", _clips(2), dataclasses.replace(LAYOUT, kinetics_classes=0),
                                  {}, {})
    assert no_logits.kinetics_classes([0]) is None


@pytest.mark.parametrize("how", ["deleted", "truncated", "extended"])
def test_a_damaged_shard_is_reported_and_never_read_as_zeros(tmp_path, how):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(10), LAYOUT, {}, {}, StoreConfig(clips_per_block=4))
    store.write_clips([4, 5, 7], [_tokens(i) for i in (4, 5, 7)])
    store.write_clips([0, 1], [_tokens(0), _tokens(1)])
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "audio_tokens").iterdir()) == [
        "c.0.0.0", "c.1.0.0", "zarr.json"]  # one file per block: no folder per clip
    _corrupt(tmp_path / "s.zarr" / "audio_tokens" / "c.1.0.0", how)
    reopened = TokenStore.open(tmp_path / "s.zarr")
    damaged = reopened.damaged_clips()
    assert list(damaged) == [4, 5, 7] and all(p.startswith("audio_tokens: shard file ") for p in damaged.values())
    assert ("missing" in damaged[4]) == (how == "deleted")
    assert reopened.summary()["damaged"] == 3
    with pytest.raises(DamagedClipError, match="clip 'c4' \\(index 4\\) is done but its audio_tokens data is damaged"):
        reopened.read([0, 4])
    np.testing.assert_array_equal(reopened.read([1])["audio_tokens"][0], _tokens(1).audio_tokens)  # another shard
    writable = TokenStore.open(tmp_path / "s.zarr", mode="r+")
    writable.mark_pending([4, 5, 7])
    assert writable.damaged_clips() == {} and not writable.read([6])["audio_tokens"].any()  # pending: zeros
    writable.write_clips([4, 5, 7], [_tokens(i) for i in (4, 5, 7)])
    np.testing.assert_array_equal(writable.read([7, 5])["audio_tokens"], [_tokens(7).audio_tokens,
                                                                          _tokens(5).audio_tokens])


def test_a_shard_is_rewritten_whole_and_keeps_its_other_clips(tmp_path):
    store = TokenStore.create(tmp_path / "s.zarr", _clips(6), LAYOUT, {}, {}, StoreConfig(clips_per_block=4))
    store.write_clips([0, 2], [_tokens(0), _tokens(2)])
    shard = tmp_path / "s.zarr" / "video_tokens" / "c.0.0.0.0"
    before = shard.stat().st_ino
    reader = TokenStore.open(tmp_path / "s.zarr")  # opened before the rewrite: its cached shard index goes stale
    np.testing.assert_array_equal(reader.read([2])["video_tokens"][0], _tokens(2).video_tokens)
    store.stage_clips([3, 1], [_tokens(3), _tokens(1)])
    assert shard.stat().st_ino == before and store.status.tolist()[:4] == [DONE, PENDING, DONE, PENDING]
    assert TokenStore.open(tmp_path / "s.zarr").read([1])["video_tokens"].sum() == 0  # staged: not there yet
    store.commit_staged()
    assert shard.stat().st_ino != before  # a new file renamed over the old one
    np.testing.assert_array_equal(reader.read([2, 3])["video_tokens"], [_tokens(2).video_tokens,
                                                                        _tokens(3).video_tokens])
    assert not list((tmp_path / "s.zarr").rglob(".*writing"))
    reopened = TokenStore.open(tmp_path / "s.zarr")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")  # Zarr reads the shards written here
    for name in ("video_tokens", "audio_tokens", "kinetics_logits"):
        expected = np.stack([getattr(_tokens(i), name) for i in range(4)])
        np.testing.assert_array_equal(reopened.read(range(4))[name], expected)
        np.testing.assert_array_equal(group[name][:4], expected)
    views = reopened.read_views([3, 0, 3], [1, 0, 0])
    np.testing.assert_array_equal(views, [_tokens(3).video_tokens[1], _tokens(0).video_tokens[0],
                                          _tokens(3).video_tokens[0]])
    store.stage_clips([5], [_tokens(5)])
    store.abandon_staged()  # as a killed writer: the shard stays, the clip pending, no staging file
    assert store.status[5] == PENDING and not list((tmp_path / "s.zarr").rglob(".*writing"))


def test_a_store_in_one_file_per_clip_stays_readable_and_inspect_names_its_layout(tmp_path):
    old = TokenStore.create(tmp_path / "old.zarr", _clips(6), LAYOUT, {}, {}, StoreConfig(shard_blocks=False))
    new = TokenStore.create(tmp_path / "new.zarr", _clips(6), LAYOUT, {}, {})
    for store in (old, new):
        store.write_clips([1, 3], [_tokens(1), _tokens(3)])
    assert (tmp_path / "old.zarr" / "video_tokens" / "c" / "3" / "0" / "0" / "0").is_file()
    assert new.clips_per_shard == 512 and old.clips_per_shard is None
    for name, layout in (("old.zarr", "one file per clip"), ("new.zarr", "shards: one file per token array")):
        reopened = TokenStore.open(tmp_path / name)
        np.testing.assert_array_equal(reopened.read([3, 1])["video_tokens"],
                                      [_tokens(3).video_tokens, _tokens(1).video_tokens])
        assert reopened.summary()["layout"].startswith(layout)
        assert f"layout: {layout}" in CliRunner().invoke(cli, ["inspect", str(tmp_path / name)]).output


def test_convert_copies_an_old_store_into_shards_with_its_identity(tmp_path):
    old = TokenStore.create(tmp_path / "old.zarr", _clips(7), LAYOUT, {"profile": "p"}, {"created": "t"},
                            StoreConfig(clips_per_block=2, shard_blocks=False))
    silent = SimpleNamespace(**{**vars(_tokens(5, has_audio=False)), "audio_tokens": np.zeros((5, 6), np.float16)})
    old.write_clips([0, 1], [SimpleNamespace(**vars(_tokens(0)), decoded_s=1.5), _tokens(1)])
    old.write_clips([5], [silent])
    old.mark_failed([3], ["truncated"])
    del zarr.open_group(str(tmp_path / "old.zarr"), mode="r+")["kinetics_class"]  # as made before it was recorded
    result = CliRunner().invoke(cli, ["store", "convert", str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr"),
                                      "--clips-per-block", "4"])
    assert result.exit_code == 0, result.output
    before, after = TokenStore.open(tmp_path / "old.zarr"), TokenStore.open(tmp_path / "new.zarr")
    assert after.clips_per_shard == 4 and before.clips_per_shard is None and after.identity == before.identity
    assert after.status.tolist() == before.status.tolist() and after.failure_reasons.tolist()[3] == "truncated"
    np.testing.assert_array_equal(after.decoded_s, before.decoded_s)
    done = before.indices()
    for name, values in before.read(done).items():
        np.testing.assert_array_equal(after.read(done)[name], values)
    expected = kinetics_class(np.stack([_tokens(i).kinetics_logits for i in (0, 1, 5)]))
    assert after.kinetics_classes(done).tolist() == expected.tolist() and after.damaged_clips() == {}
    assert sorted(p.name for p in (tmp_path / "new.zarr" / "video_tokens").iterdir()) == [
        "c.0.0.0.0", "c.1.0.0.0", "zarr.json"]
    again = CliRunner().invoke(cli, ["store", "convert", str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")])
    assert again.exit_code != 0 and "already exists" in again.output
