"""Command line of the MZST toolkit: `python cli.py --help`.

This module only parses options, builds the stage's config dataclass and calls one public function of the
stage. Heavy imports (torch, zarr, dask) happen inside the commands so that `--help` stays fast.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path

import click

# Errors raised by the library for bad input (missing files, wrong formats, mismatched configs). The CLI
# turns them into one line "Error: ..." and exit code 1; anything else keeps its traceback.
_USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError)


def _user_errors(command):
    """Map the library's bad-input exceptions to a one-line click error."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except _USER_ERRORS as error:
            raise click.ClickException(str(error)) from error

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """Multimodal (audio + video) zero-shot action recognition: MZST model and MZSL protocol.

    Stages: make-synthetic (built-in data) -> extract (frozen backbones to a token store) -> train-fusion
    (AVT fusion head on cached tokens) -> zeroshot (ZSL / GZSL on any class list).
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


# --- commands -----------------------------------------------------------------------------------------
# Each command: options -> config dataclass -> one library call -> a one-line summary.


if __name__ == "__main__":
    cli()
