"""common.files: a full disk part-way through a write leaves the previous file or folder whole, names the path, and
leaves no temporary behind; a folder is replaced whole, never mixed, and a folder of other files is never replaced."""

import errno
import os
import pathlib
import subprocess
import sys

import pytest

from common.errors import is_user_error
from common.files import write_folder, write_text, write_texts


@pytest.fixture
def disk_full_after(monkeypatch):
    """`disk_full_after(n)`: the n-th `Path.write_text` from now writes half its text, then the disk is full."""
    write = pathlib.Path.write_text

    def arm(calls: int) -> None:
        count = 0

        def write_text_until_full(path, text, *args, **kwargs):
            nonlocal count
            count += 1
            if count == calls:
                write(path, text[: len(text) // 2], *args, **kwargs)
                raise OSError(errno.ENOSPC, "No space left on device")
            return write(path, text, *args, **kwargs)

        monkeypatch.setattr(pathlib.Path, "write_text", write_text_until_full)

    return arm


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path, disk_full_after):
    path = write_text(tmp_path / "metrics.json", "old")
    disk_full_after(1)
    with pytest.raises(OSError) as raised:
        write_text(path, "new and longer")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path) and is_user_error(raised.value)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_files_that_belong_together_are_replaced_together_or_not_at_all(tmp_path, disk_full_after):
    first, second = tmp_path / "metrics.json", tmp_path / "summary.md"
    write_texts({first: "old 1", second: "old 2"})
    disk_full_after(2)
    with pytest.raises(OSError, match="No space left on device") as raised:
        write_texts({first: "new 1", second: "new 2"})
    assert raised.value.filename == str(second)
    assert (first.read_text(), second.read_text()) == ("old 1", "old 2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "summary.md"]


def _report(texts: dict[str, str]):
    def write(folder: pathlib.Path) -> None:
        for name, text in texts.items():
            write_text(folder / name, text)

    return write


def test_a_folder_is_replaced_whole(tmp_path):
    out = tmp_path / "report"
    write_folder(out, _report({"metrics.json": "run 1", "tsne.png": "figure"}), ("metrics.json", "tsne.png"), "report")
    write_folder(out, _report({"metrics.json": "run 2"}), ("metrics.json", "tsne.png"), "report")
    assert [p.name for p in out.iterdir()] == ["metrics.json"]  # no figure of run 1 beside run 2's numbers
    assert (out / "metrics.json").read_text() == "run 2" and [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_full_disk_leaves_the_previous_folder_and_no_partial_one(tmp_path, disk_full_after):
    out = tmp_path / "report"
    names = ("metrics.json", "report.md")
    write_folder(out, _report({"metrics.json": "run 1", "report.md": "table 1"}), names, "report")
    disk_full_after(2)
    with pytest.raises(OSError, match="No space left on device") as raised:
        write_folder(out, _report({"metrics.json": "run 2", "report.md": "table 2"}), names, "report")
    assert raised.value.filename == str(out / "report.md")  # the file in the folder, not the temporary
    assert [(out / n).read_text() for n in names] == ["run 1", "table 1"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    disk_full_after(1)
    with pytest.raises(OSError):  # a new folder: none is left
        write_folder(tmp_path / "new", _report({"metrics.json": "run 2"}), names, "report")
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_folder_of_other_files_is_never_replaced(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"holds files that are not a report folder's \(notes.txt\)"):
        write_folder(tmp_path, _report({"metrics.json": "run"}), ("metrics.json",), "report folder")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_killed_writers_temporary_folder_is_removed(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = tmp_path / f".report.tmp-{int(gone.stdout)}"
    abandoned.mkdir()
    (abandoned / "metrics.json").write_text("half")
    live = tmp_path / f".report.tmp-{os.getppid()}"  # a writer that still runs keeps its folder
    live.mkdir()
    write_folder(tmp_path / "report", _report({"metrics.json": "run"}), ("metrics.json",), "report")
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "report"]
