"""`extract --option K=V`: any extraction field from the command line, recorded in the store, and a one-line error
for a name the config does not have."""

from click.testing import CliRunner

import cli
from features.store import TokenStore


def test_option_sets_a_field_and_a_view_setting_recorded_in_the_store(tmp_path, write_clip):
    clip = write_clip(tmp_path / "videos" / "drumming" / "clip0.mp4")
    out = tmp_path / "tokens.zarr"
    result = CliRunner().invoke(cli.cli, ["extract", "--videos", str(clip), "--out", str(out), "--profile",
                                          "cpu-small", "--no-progress", "--option", "video.frame_stride=2",
                                          "--option", "batch_views=4"])
    assert result.exit_code == 0, result.output
    recorded = TokenStore.open(out).extract_config
    assert recorded["video"]["frame_stride"] == 2 and recorded["batch_views"] == 4
    assert recorded["video"]["crops"] == 1  # the rest stays the profile's


def test_an_unknown_option_is_one_line_naming_the_known_ones(tmp_path, write_clip):
    clip = write_clip(tmp_path / "clip0.mp4")
    for option, told in (("no_such_field=1", "unknown extract config keys ['no_such_field']"),
                         ("video.no_such_field=1", "unknown video config keys ['no_such_field']"),
                         ("precision.x=1", "'precision' is not a group of settings")):
        result = CliRunner().invoke(cli.cli, ["extract", "--videos", str(clip), "--out", str(tmp_path / "t.zarr"),
                                              "--profile", "cpu-small", "--option", option])
        assert result.exit_code == 1 and told in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / "t.zarr").exists()


def test_an_option_value_that_does_not_fit_its_field_is_one_line_naming_it(tmp_path, write_clip):
    clip = write_clip(tmp_path / "clip0.mp4")
    for option, told in (("compile=yes", "--compile must be true or false, got 'yes'"),
                         ("video.crops=abc", "--crops must be a whole number, got 'abc'"),
                         ("audio.sample_rate_hz=[16000]", "`sample_rate_hz` must be a whole number, got (16000,)"),
                         ("seed=-1", "`seed` must be a whole number from 0 to 2**32 - 1"),
                         ("precision=3", "`precision` must be text")):
        result = CliRunner().invoke(cli.cli, ["extract", "--videos", str(clip), "--out", str(tmp_path / "t.zarr"),
                                              "--profile", "cpu-small", "--option", option])
        lines = result.output.strip().splitlines()
        assert result.exit_code == 1 and len(lines) == 1 and told in lines[0], result.output
        assert not (tmp_path / "t.zarr").exists()


def test_a_store_made_with_other_settings_is_refused_with_the_option_that_resumes_it(tmp_path, write_clip):
    # e.g. a paper-profile store made before `frame_scaling` existed did the reference: the message says how to resume
    clip = write_clip(tmp_path / "videos" / "drumming" / "clip0.mp4")
    out = tmp_path / "tokens.zarr"
    base = ["extract", "--videos", str(clip), "--out", str(out), "--profile", "cpu-small", "--no-progress"]
    assert CliRunner().invoke(cli.cli, base).exit_code == 0
    refused = CliRunner().invoke(cli.cli, [*base, "--option", "frame_scaling=decoder"])
    assert refused.exit_code == 1 and len(refused.output.strip().splitlines()) == 1
    assert "differs in frame_scaling" in refused.output
    assert "(the store's: --option frame_scaling=reference)" in refused.output, refused.output
    assert CliRunner().invoke(cli.cli, [*base, "--option", "frame_scaling=reference"]).exit_code == 0
    strict = CliRunner().invoke(cli.cli, [*base, "--strict"])
    assert "differs in strict_media" in strict.output and "(the store's: no --strict)" in strict.output
