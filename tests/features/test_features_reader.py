from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from extract.outputs import TokenLayout
from features.manifest import ClipRecord
from features.reader import BatchReader
from features.store import TokenStore

LAYOUT = TokenLayout(views=1, video_tokens=2, video_dim=3, audio_tokens=2, audio_dim=3, kinetics_classes=4)


@pytest.fixture
def store(tmp_path):
    clips = [ClipRecord(f"c{i}", Path(f"/c{i}.mp4"), "x", "seen") for i in range(11)]
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
