from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from extract.outputs import TokenLayout
from features.config import StoreConfig
from features.manifest import ManifestRow
from features.reader import BatchReader, free_bytes, resident_bytes, resident_fits
from features.store import TokenStore

LAYOUT = TokenLayout(views=1, video_tokens=2, video_dim=3, audio_tokens=2, audio_dim=3, kinetics_classes=4)


@pytest.fixture
def store(tmp_path):
    clips = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), "x", "seen") for i in range(11)]
    store = TokenStore.create(tmp_path / "s.zarr", clips, LAYOUT, {}, {})
    for i in range(11):
        store.write_clips([i], [SimpleNamespace(
            video_tokens=np.full((1, 2, 3), i, np.float16), audio_tokens=np.full((2, 3), -i, np.float16),
            kinetics_logits=np.full((1, 4), i, np.float32), has_audio=i % 2 == 0, audio_frames=i)])
    return store


def test_batches_carry_the_clips_they_name(store):
    reader = BatchReader(store, np.arange(11), batch_size=4, shuffle=True, seed=3)
    seen = []
    for batch in reader:
        assert batch.video_tokens.dtype == torch.float32 and batch.video_tokens.shape[1:] == (1, 2, 3)
        assert torch.equal(batch.video_tokens[:, 0, 0, 0], batch.index.float())
        assert torch.equal(batch.audio_tokens[:, 0, 0], -batch.index.float())
        assert torch.equal(batch.has_audio, batch.index % 2 == 0)
        seen += batch.index.tolist()
    assert sorted(seen) == list(range(11)) and seen != list(range(11))
    assert len(reader) == 3


def test_order_depends_on_seed_and_epoch_only(store):
    def order(seed, epoch, prefetch):
        reader = BatchReader(store, np.arange(11), batch_size=4, shuffle=True, seed=seed, prefetch=prefetch)
        reader.set_epoch(epoch)
        return [i for b in reader for i in b.index.tolist()]

    assert order(0, 1, prefetch=2) == order(0, 1, prefetch=0)
    assert order(0, 1, prefetch=2) != order(0, 2, prefetch=2)
    assert order(0, 1, prefetch=2) != order(1, 1, prefetch=2)


def test_drop_last_and_stopping_early(store):
    reader = BatchReader(store, np.arange(11), batch_size=4, drop_last=True)
    assert len(reader) == 2 and [len(b.index) for b in reader] == [4, 4]
    iterator = iter(BatchReader(store, np.arange(11), batch_size=1, prefetch=1))
    next(iterator)
    iterator.close()  # the read-ahead thread must not hang on a full queue


def test_read_errors_reach_the_consumer(store):
    reader = BatchReader(store, [0, 99], batch_size=1)
    with pytest.raises(ValueError, match="out of range"):
        list(reader)


VIEWS_LAYOUT = TokenLayout(views=3, video_tokens=2, video_dim=3, audio_tokens=2, audio_dim=3, kinetics_classes=4)


@pytest.fixture(params=[StoreConfig(compressor="none"), StoreConfig(compressor="zstd"),
                        StoreConfig(compressor="none", shard_blocks=True)], ids=["raw", "zstd", "sharded"])
def views_store(tmp_path, request):
    """Clip i, view v holds i + v / 10 in every video token."""
    clips = [ManifestRow(f"c{i}", Path(f"/c{i}.mp4"), "x", "seen") for i in range(9)]
    store = TokenStore.create(tmp_path / "v.zarr", clips, VIEWS_LAYOUT, {}, {}, request.param)
    for i in range(9):
        video = np.stack([np.full((2, 3), i + v / 10) for v in range(3)]).astype(np.float16)
        store.write_clips([i], [SimpleNamespace(
            video_tokens=video, audio_tokens=np.full((2, 3), -i, np.float16),
            kinetics_logits=np.full((3, 4), i, np.float32), has_audio=True, audio_frames=i)])
    return TokenStore.open(store.path)


def test_one_view_per_clip_reads_that_view(views_store):
    index, views = np.array([4, 0, 4, 8]), np.array([2, 1, 0, 2])
    expected = views_store.read(index, ["video_tokens"])["video_tokens"][np.arange(4), views]  # (4, 2, 3)
    assert np.array_equal(views_store.read_views(index, views), expected)
    with pytest.raises(ValueError, match="out of range"):
        views_store.read_views([0], [3])
    reader = BatchReader(views_store, np.arange(9), batch_size=4, shuffle=True, seed=1, float16=True)
    reader.set_epoch(2)
    picks = [np.arange(len(b)) % 3 for b in reader.batch_indices()]
    reader.set_epoch(2, views=picks)
    for batch, pick in zip(reader, picks, strict=True):
        assert batch.video_tokens.dtype == torch.float16 and batch.video_tokens.shape[1:] == (2, 3)
        assert torch.equal(batch.video_tokens[:, 0, 0],
                           (batch.index + torch.from_numpy(pick) / 10).half())
        assert batch.kinetics_logits.shape[1:] == (3, 4)  # s_v averages all views: read whole


def test_a_resident_store_gives_the_streamed_batches(views_store):
    def batches(**options):
        reader = BatchReader(views_store, np.arange(1, 9), batch_size=3, shuffle=True, seed=5, **options)
        reader.set_epoch(1)
        reader.set_epoch(1, views=[np.ones(len(b), np.int64) for b in reader.batch_indices()])
        return list(reader)

    for streamed, resident in zip(batches(), batches(resident=torch.device("cpu")), strict=True):
        for name in ("index", "video_tokens", "audio_tokens", "has_audio", "kinetics_logits", "audio_frames"):
            assert torch.equal(getattr(streamed, name), getattr(resident, name)), name


def test_resident_tokens_are_read_a_slice_at_a_time(views_store):
    from features.reader import _read_onto

    index = np.array([7, 1, 4, 2, 8])
    resident = _read_onto(views_store, index, ("video_tokens", "has_audio"), torch.device("cpu"), clips_per_read=2)
    expected = views_store.read(index, ("video_tokens", "has_audio"))
    assert resident["video_tokens"].dtype == torch.float16
    assert all(np.array_equal(resident[name].numpy(), expected[name]) for name in expected)


def test_resident_store_choice_and_size(views_store):
    per_clip = 3 * 2 * 3 * 2 + 2 * 3 * 2 + 1  # fp16 video views, fp16 audio, bool has_audio
    assert resident_bytes(views_store, 10, ("video_tokens", "audio_tokens", "has_audio")) == 10 * per_clip
    # VGGSound's pooled store (~77 GB fp16) on an H200 with 139 GB free, at a stated share of 60%
    assert resident_fits(77 * 10**9, 139 * 10**9, 0.6) and not resident_fits(77 * 10**9, 139 * 10**9, 0.5)
    assert free_bytes(torch.device("cpu")) > 0


def test_one_value_per_clip_fields_are_read_once_per_reader(store):
    asked = []
    read = store.read
    store.read = lambda index, fields=None: asked.append(list(fields)) or read(index, fields)
    reader = BatchReader(store, [9, 4, 3, 10, 0], batch_size=2, prefetch=0)
    batches = list(reader) + list(reader)
    assert asked[0] == ["has_audio", "audio_frames"] and all("has_audio" not in f for f in asked[1:])
    assert len(asked) == 1 + 2 * len(reader)
    assert torch.cat([b.has_audio for b in batches[:3]]).tolist() == [False, True, False, True, True]
    assert torch.cat([b.audio_frames for b in batches[:3]]).tolist() == [9, 4, 3, 10, 0]
