"""Fixtures shared by every package's tests."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from text.class_names import tokenize_class_name

KINETICS400 = Path(__file__).resolve().parents[1] / "data" / "classlists" / "kinetics400.txt"


@pytest.fixture(scope="session")
def write_word_vectors(tmp_path_factory):
    """`write_word_vectors(names, dim, seed, extra_words=())`: a word2vec text file with random vectors for every
    word of `names` and of the Kinetics-400 labels (the SE target's phi(s_v) needs them)."""

    def write(names, dim: int, seed: int, extra_words=()) -> Path:
        words = set(extra_words)
        for name in list(names) + KINETICS400.read_text(encoding="utf-8").splitlines():
            words.update(tokenize_class_name(name))
        rng = np.random.default_rng(seed)
        lines = [f"{len(words)} {dim}"]
        lines += [f"{w} " + " ".join(f"{x:.5f}" for x in rng.normal(size=dim)) for w in sorted(words)]
        path = tmp_path_factory.mktemp("vectors") / f"words{dim}-{seed}.w2v.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def pytest_configure(config):
    """The tests run with the threads every command runs with (common/threads.py): torch beside one helper."""
    from common.threads import apply_thread_plan, plan_threads

    apply_thread_plan(plan_threads(1))


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run where torch sees a CUDA device and are skipped, saying why, everywhere else."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False on this machine")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture
def read_only_copy(tmp_path):
    """`read_only_copy(folder) -> Path`: `folder` copied and bind-mounted read-only (a real EROFS file system, which
    root's permission bypass cannot write through, unlike chmod); unmounted afterwards. Skips, saying why, where
    bind mounts are not allowed (not root, or a container without CAP_SYS_ADMIN)."""
    mounts = []

    def make(folder: Path) -> Path:
        source, target = tmp_path / f"ro-source-{len(mounts)}", tmp_path / f"ro-{len(mounts)}"
        shutil.copytree(folder, source / folder.name, symlinks=True)
        target.mkdir()
        problem = _mount("--bind", str(source), str(target))
        if problem:
            pytest.skip(f"cannot bind-mount here ({problem})")
        problem = _mount("-o", "remount,bind,ro", str(target))
        if problem:
            subprocess.run(["umount", str(target)], check=True)
            pytest.skip(f"cannot remount read-only here ({problem})")
        mounts.append(target)
        return target / folder.name

    yield make
    for target in mounts:
        subprocess.run(["umount", str(target)], check=True)


def _mount(*arguments: str) -> str:
    """Run `mount`; '' when it worked, else why not."""
    try:
        done = subprocess.run(["mount", *arguments], capture_output=True, text=True)
    except FileNotFoundError:
        return "no mount command"
    return "" if done.returncode == 0 else done.stderr.strip() or f"exit {done.returncode}"
