"""Decoding real files: frames picked by presentation time, audio to mono 16 kHz, and every kind of bad input."""

import pickle
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from common.errors import InputError
from common.media import MediaError, Segment
from curate.encode import write_mp4
from extract import views
from extract.config import PROFILES
from extract.decode import decode_clip
from tests.media import shown_frame_index, truncated_playable

VIDEO, AUDIO = PROFILES["paper"].video, PROFILES["paper"].audio


def _picked_numbers(clip, helpers):
    """Frame number (from the grey level) shown at each view position."""
    numbers = np.array([helpers.frame_number(frame) for frame in clip.frames])
    return numbers[clip.frame_index]


def test_constant_frame_rate_picks_the_frame_shown_at_each_sample_time(numbered_clip, helpers):
    path = numbered_clip("cfr.mp4", frames=100, fps=25, audio=helpers.tone(4.0, 440))
    clip = decode_clip(path, VIDEO, AUDIO)
    assert clip.duration_s == pytest.approx(4.0)
    expected = shown_frame_index(np.arange(100) / 25, views.view_times(4.0, VIDEO))  # (4, 16)
    assert clip.frame_index.shape == (4, 16)
    np.testing.assert_array_equal(_picked_numbers(clip, helpers), expected)
    # Hand check: grid index 4 is 0.133 s, shown by frame 3 (0.12 s); only the distinct frames are converted.
    assert expected[0, 1] == 3
    assert clip.frames.shape == (len(np.unique(expected)), 48, 64, 3) and clip.frames.dtype == np.uint8
    np.testing.assert_allclose(clip.frame_times_s, np.unique(expected) / 25, atol=1e-9)


def test_variable_frame_rate_is_sampled_by_timestamp(timed_clip, helpers):
    pts_ms = [0, 40, 50, 200, 210, 220, 500, 900, 905, 1300]
    clip = decode_clip(timed_clip("vfr.mp4", pts_ms), VIDEO, AUDIO)
    assert clip.duration_s == pytest.approx(1.3 + 1 / 30, abs=1e-3)  # last frame lasts one frame of the rate
    times = views.view_times(clip.duration_s, VIDEO)
    expected = shown_frame_index(np.array(pts_ms) / 1000, times)
    np.testing.assert_array_equal(_picked_numbers(clip, helpers), expected)
    assert expected[0, :4].tolist() == [0, 2, 5, 5]  # 0, 0.133 -> 0.05 s, 0.267 -> 0.22 s, 0.4 -> 0.22 s
    assert expected[0, -1] == 9  # 1.3 s shows the frame at exactly 1.3 s


def test_short_video_repeats_its_last_frame(numbered_clip, helpers):
    clip = decode_clip(numbered_clip("short.mp4", frames=10, fps=25), VIDEO, AUDIO)  # 0.4 s < one 2.13 s view
    picked = _picked_numbers(clip, helpers)
    assert (picked == picked[0]).all()  # every temporal view is the same
    assert picked[0, -6:].tolist() == [9] * 6 and picked[0, 0] == 0
    assert not clip.has_audio and clip.audio is None and clip.audio_start_s is None


def test_display_rotation_gives_portrait_frames(timed_clip):
    clip = decode_clip(timed_clip("rotated.mp4", [0, 40, 80], rotation=90), VIDEO, AUDIO)
    assert clip.frames.shape[1:] == (64, 48, 3)  # stored 48 x 64 landscape, shown portrait
    # Rotated 90 degrees counter-clockwise, the white mark of the stored top-left corner is at the bottom left.
    assert clip.frames[0, -4:, :4].min() > 200 and clip.frames[0, :4, :4].max() < 200


def test_stereo_44k_audio_is_the_mean_of_channels_at_16k(numbered_clip, helpers):
    left, right = helpers.tone(4.0, 440, 44100, 0.6), helpers.tone(4.0, 440, 44100, 0.2)
    clip = decode_clip(numbered_clip("stereo.mp4", 100, 25, audio=np.stack([left, right]), rate=44100),
                       VIDEO, AUDIO)
    assert clip.has_audio and clip.audio.dtype == np.float32
    assert abs(clip.audio.size - 64000) < 1200  # 4 s at 16 kHz, give or take AAC's frame padding
    middle = clip.audio[8000:56000]
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.4 / np.sqrt(2), rel=0.05)  # mean of 0.6 and 0.2
    spectrum = np.abs(np.fft.rfft(middle))
    assert np.fft.rfftfreq(middle.size, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)


def test_long_audio_window_is_centred_on_the_views(numbered_clip, helpers):
    seconds = 12.0
    t = np.arange(round(seconds * 16000)) / 16000
    ramp = (0.05 + 0.5 * t / seconds) * np.sin(2 * np.pi * 440 * t)  # the amplitude tells the time
    clip = decode_clip(numbered_clip("long.mp4", 120, 10, audio=ramp.astype(np.float32)), VIDEO, AUDIO)
    assert clip.audio.size == AUDIO.window_samples == 164080  # exactly 1024 fbank frames
    starts = views.view_starts(360, 64, 4)  # 12 s on the 30 fps grid; views of 64 grid frames
    centre_s = (starts[0] + starts[-1] + 64) / 2 / 30
    assert clip.audio_start_s == pytest.approx(centre_s - AUDIO.window_samples / 2 / 16000, abs=1e-3)
    head = clip.audio[:1600]  # the first 0.1 s of the window
    heard_start_s = (np.sqrt(2 * np.mean(head**2)) - 0.05) / 0.5 * seconds - 0.05
    assert heard_start_s == pytest.approx(clip.audio_start_s, abs=0.1)


def test_no_audio_track_is_not_an_error(numbered_clip):
    clip = decode_clip(numbered_clip("silent.mp4", 25, 25), VIDEO, AUDIO)
    assert not clip.has_audio


def test_audio_shorter_than_25_ms_is_a_media_error(pcm_clip):
    with pytest.raises(MediaError, match="shorter than 25 ms"):
        decode_clip(pcm_clip("short_audio.mkv", 300), VIDEO, AUDIO)  # 18.75 ms
    clip = decode_clip(pcm_clip("enough_audio.mkv", 400), VIDEO, AUDIO)  # exactly one 25 ms window
    assert clip.has_audio and clip.audio.size == 400


@pytest.fixture
def valid_mp4(numbered_clip, helpers):
    return numbered_clip("valid.mp4", 50, 25, audio=helpers.tone(2.0, 440))


def _bad_files(tmp_path, valid_mp4, numbered_clip, helpers):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    data = valid_mp4.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    audio_only = write_mp4(tmp_path / "audio_only.mp4", None, 25, helpers.tone(1.0, 440), 16000)
    corrupt_audio, corrupt_video = tmp_path / "corrupt_audio.mp4", tmp_path / "corrupt_video.mp4"
    video_only = numbered_clip("video_only.mp4", 50, 25).read_bytes()
    for target, source in ((corrupt_audio, data), (corrupt_video, video_only)):
        mdat = source.index(b"mdat") + 4  # the media payload starts after the box header; moov is at the end
        end = source.index(b"moov") - 4
        target.write_bytes(source[:mdat] + bytes(end - mdat) + source[end:])  # every packet zeroed
    return {
        text: "not a media file", empty: "empty file", truncated: "not a media file or truncated",
        audio_only: "no video stream", corrupt_audio: "audio decoding failed",
        corrupt_video: "video decoding failed", tmp_path / "missing.mp4": "file not found",
    }


def test_every_bad_input_is_a_media_error_naming_file_and_reason(tmp_path, valid_mp4, numbered_clip, helpers):
    for path, reason in _bad_files(tmp_path, valid_mp4, numbered_clip, helpers).items():
        with pytest.raises(MediaError) as caught:
            decode_clip(path, VIDEO, AUDIO)
        error = caught.value
        assert error.path == path and reason in error.reason, (path, error.reason)
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    assert decode_clip(valid_mp4, VIDEO, AUDIO).has_audio  # the same writer's intact file is fine


def test_a_still_image_or_a_one_frame_file_is_not_a_clip(tmp_path, numbered_clip):
    picture = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    stills = [tmp_path / "png_named.mp4", tmp_path / "jpeg_named.mp4", numbered_clip("one_frame.mp4", 1, 25)]
    Image.fromarray(picture).save(stills[0], format="PNG")  # FFmpeg opens these as one-frame video streams
    Image.fromarray(picture).save(stills[1], format="JPEG")
    for path in stills:
        with pytest.raises(MediaError) as caught:
            decode_clip(path, VIDEO, AUDIO)
        assert str(caught.value) == f"{path}: 1 video frame(s), not a video (a still image?); a clip needs at least 2"
    two = decode_clip(numbered_clip("two_frames.mp4", 2, 25), VIDEO, AUDIO)  # short, but a video: views repeat
    assert two.duration_s == pytest.approx(0.08) and two.frame_index.shape == (4, 16)


def test_a_file_that_plays_in_part_is_decoded_from_that_part(numbered_clip, helpers, tmp_path):
    whole = numbered_clip("whole.mp4", 100, 25, audio=helpers.tone(4.0, 440))
    cut = truncated_playable(whole, tmp_path / "cut.mp4", 0.6)  # the index first, then 60% of the bytes
    clip = decode_clip(cut, VIDEO, AUDIO)
    assert clip.partial and 1.0 < clip.duration_s < 3.0 and not decode_clip(whole, VIDEO, AUDIO).partial
    frames = round(clip.duration_s * 25)
    expected = shown_frame_index(np.arange(frames) / 25, views.view_times(clip.duration_s, VIDEO))
    np.testing.assert_array_equal(_picked_numbers(clip, helpers), expected)  # views span the decodable part
    assert clip.audio.size <= round(clip.duration_s * 16000)  # the audio of that part only
    with pytest.raises(MediaError, match="cut.mp4: truncated: the index lists 100 video frames, the file holds"):
        decode_clip(cut, VIDEO, AUDIO, strict=True)


def test_a_file_whose_decoding_breaks_part_way_keeps_the_frames_before(tmp_path, helpers, caplog):
    noise = np.random.default_rng(0).integers(0, 256, (100, 120, 160, 3), dtype=np.uint8)  # big packets: a cut
    whole = write_mp4(tmp_path / "noise.mp4", noise, 25, helpers.tone(4.0, 440), 16000)  # lands inside one
    broken = truncated_playable(whole, tmp_path / "broken.mp4", 0.7)
    clip = decode_clip(broken, VIDEO, AUDIO)
    assert clip.partial and 2.0 < clip.duration_s < 3.2 and "video decoding failed after" in caplog.text
    assert "packets before it" in caplog.text and clip.frames.shape[1:] == (120, 160, 3)
    with pytest.raises(MediaError, match="broken.mp4: truncated"):
        decode_clip(broken, VIDEO, AUDIO, strict=True)


def test_media_error_survives_pickling():
    error = pickle.loads(pickle.dumps(MediaError("/a/b.mp4", "empty file (0 bytes)")))
    assert (str(error.path), error.reason, str(error)) == ("/a/b.mp4", "empty file (0 bytes)",
                                                           "/a/b.mp4: empty file (0 bytes)")


def test_one_view_is_centred(numbered_clip, helpers):
    config = replace(VIDEO, temporal_views=1)
    clip = decode_clip(numbered_clip("centred.mp4", 100, 25), config, AUDIO)  # 120 grid frames, delta 56
    assert _picked_numbers(clip, helpers)[0, 0] == shown_frame_index(np.arange(100) / 25, np.array([28 / 30]))[0]


def test_a_segment_is_sampled_inside_itself(numbered_clip, helpers):
    seconds = 12.0
    t = np.arange(round(seconds * 16000)) / 16000
    ramp = (0.05 + 0.5 * t / seconds) * np.sin(2 * np.pi * 440 * t)  # the amplitude tells the time
    path = numbered_clip("long.mp4", 300, 25, audio=ramp.astype(np.float32))
    clip = decode_clip(path, VIDEO, AUDIO, segment=Segment(5.0, 9.0))
    assert clip.duration_s == pytest.approx(4.0)
    expected = shown_frame_index(np.arange(300) / 25, 5.0 + views.view_times(4.0, VIDEO))
    np.testing.assert_array_equal(_picked_numbers(clip, helpers), expected)
    assert expected.min() == 125 and expected.max() <= 225  # frames from 5 s to 9 s only
    # The 4 s segment is shorter than the fbank window: its audio is all of the segment's, and only that.
    assert clip.audio.size == pytest.approx(4.0 * 16000, abs=2) and clip.audio_start_s == pytest.approx(0, abs=1e-3)
    for part, at_s in ((clip.audio[:1600], 5.05), (clip.audio[-1600:], 8.95)):
        heard_s = (np.sqrt(2 * np.mean(part**2)) - 0.05) / 0.5 * seconds
        assert heard_s == pytest.approx(at_s, abs=0.15)
    cut = decode_clip(path, VIDEO, AUDIO, segment=Segment(10.0, 20.0))  # past the end: cut at 12 s
    assert cut.duration_s == pytest.approx(2.0)
    expected = shown_frame_index(np.arange(300) / 25, 10.0 + views.view_times(2.0, VIDEO))
    assert expected.min() == 250
    np.testing.assert_array_equal(_picked_numbers(cut, helpers), expected % 256)  # frame numbers have 8 bits


def test_a_segment_after_the_end_is_a_media_error(numbered_clip):
    path = numbered_clip("short.mp4", 50, 25)  # 2 s
    with pytest.raises(MediaError, match="segment 3-13 s starts after the end of the video"):
        decode_clip(path, VIDEO, AUDIO, segment=Segment(3.0, 13.0))
    with pytest.raises(InputError, match="0 <= start_s < end_s"):
        Segment(4.0, 4.0)
