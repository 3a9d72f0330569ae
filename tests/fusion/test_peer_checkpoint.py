"""fusion.peer_checkpoint: checkpoints in AVCA-GZSL's format and parameter names, written by the test, become runs
whose zeroshot predictions equal those of an independent re-implementation of the peer's own test code; bad
checkpoints are refused in one line naming the file."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import cli
from common.errors import InputError
from curate import splits
from curate.config import AVCAImportConfig
from curate.importers import import_avca_features
from fusion import heads
from fusion.config import PeerImportConfig
from fusion.peer_checkpoint import import_peer_model
from text.class_embeddings import AVCA_TABLES
from text.class_names import read_class_file, read_name_map
from workflows.config import ZeroShotConfig
from workflows.zeroshot import run_zeroshot

DV = DA = 512  # SeLaVi's widths (main_split): a DeviseModel's weight gives only their sum
CLASS_SPLIT = splits.load_class_split("ucf")
# Classes with clips: one of each side keeps its own vector in the peers' text order, the others get another's
SEEN = ["Archery", "CliffDiving", "Haircut"]
UNSEEN = ["BandMarching", "PlayingFlute", "Typing"]
# Candidates: every seen and unseen class of the split, as AVCA-GZSL's test ranks them (its seen_unseen_array)
CANDIDATES = {"seen": CLASS_SPLIT.stages["stage_2_test_seen"], "unseen": CLASS_SPLIT.stages["stage_2_test_unseen"]}
CLIPS_PER_CLASS = 3


def _features(clip_id: str, modality: str, dim: int) -> np.ndarray:
    """Random features that float16 holds exactly (the store keeps float16): the peer and the store see the same."""
    rng = np.random.default_rng(zlib.crc32(f"{clip_id}/{modality}".encode()))
    return rng.normal(size=dim).astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def peer_store(tmp_path_factory):
    """An import-avca store of 3 seen and 3 unseen UCF classes, the split's seen and unseen class files, and each
    clip's (label, video, audio) as written."""
    root = tmp_path_factory.mktemp("peer")
    clips = {}
    for stage, names in (("stage_2_test_seen", SEEN), ("stage_2_test_unseen", UNSEEN)):
        for name in names:
            ids = [f"v_{name}_g0{i + 1}_c01" for i in range(CLIPS_PER_CLASS)]
            for modality, dim in (("video", DV), ("audio", DA)):
                folder = root / "features" / modality / stage
                folder.mkdir(parents=True, exist_ok=True)
                with h5py.File(folder / f"{name}.h5", "w") as f:
                    f["data"] = np.stack([_features(c, modality, dim) for c in ids])
                    f["video_urls"] = np.array([f"{c}.avi".encode() for c in ids])
            clips.update({c: (name, _features(c, "video", DV), _features(c, "audio", DA)) for c in ids})
    store = root / "store.zarr"
    import_avca_features(AVCAImportConfig(features=root / "features", dataset="ucf", out=store))
    for kind, names in CANDIDATES.items():
        (root / f"{kind}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return store, root / "seen.txt", root / "unseen.txt", clips


# --- the peer's side, written from reading AVCA-GZSL @ 2711aeb (src/model.py, src/dataset.py, src/utils.py) ---


def _peer_class_vectors(names: list[str], peer_order: bool) -> np.ndarray:
    """Class vectors as AVCA-GZSL's dataset gives them: by name, or (its code) the i-th of the vectors sorted by
    manual name to the class with id i, the index of its original name in the sorted all_class.txt."""
    table = AVCA_TABLES["ucf"]
    with np.load(table.path) as arrays:
        manual_names, vectors = [str(n) for n in arrays["names"]], arrays["emb"].astype(np.float64)
    manual = {original.casefold(): name for original, name in read_name_map(table.name_map).items()}
    if not peer_order:
        return np.stack([vectors[manual_names.index(manual[n.casefold()])] for n in names])
    by_manual = [vectors[manual_names.index(m)] for m in sorted(manual_names)]
    originals = sorted(read_class_file(table.class_list))
    return np.stack([by_manual[originals.index(n)] for n in names])


def _batchnorm(x, state, prefix):  # eval mode: running statistics, torch's eps
    return (x - state[f"{prefix}.running_mean"]) / np.sqrt(state[f"{prefix}.running_var"] + 1e-5) \
        * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def _cjme_net(x, state, prefix):  # EmbeddingNetCJME with BatchNorm: Linear, BN, ReLU, Dropout, Linear, ReLU
    hidden = np.maximum(_batchnorm(x @ state[f"{prefix}.0.weight"].T + state[f"{prefix}.0.bias"], state,
                                   f"{prefix}.1"), 0)
    return np.maximum(hidden @ state[f"{prefix}.4.weight"].T + state[f"{prefix}.4.bias"], 0)


def _peer_distances(method: str, state: dict, video: np.ndarray, audio: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Distances of each clip to each class as AVCA-GZSL's evaluation computes them (the "both" mode for CJME)."""
    state = {k: v.double().numpy() for k, v in state.items()}

    def cdist(a, b):
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    if method != "cjme":  # DeviseModel: bilinear(cat(video, audio)) against the raw text vectors
        return cdist(np.concatenate([video, audio], 1) @ state["bilinear.weight"].T, text)
    a = _cjme_net(audio, state, "triplet_net.embedding_net1.fc")
    v = _cjme_net(video, state, "triplet_net.embedding_net2.fc")
    t = _cjme_net(text, state, "triplet_net.embedding_net3.fc")
    gate_in = _batchnorm(np.concatenate([audio, video], 1), state, "attention_model.0")
    weight = 1 / (1 + np.exp(-(gate_in @ state["attention_model.1.weight"].T + state["attention_model.1.bias"])))
    picked = (weight >= 0.5).astype(np.float64)  # threshold_attention
    return (1 - picked) * cdist(a, t) + picked * cdist(v, t)


def _peer_checkpoint(method: str, path: Path, seed: int = 0, hidden: int = 48, audio_dim: int = DA,
                     state: dict | None = None) -> dict[str, torch.Tensor]:
    """A checkpoint in AVCA-GZSL's format (`save_best_model`), random tensors of its parameter names and shapes."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape, scale=0.05):
        return torch.randn(*shape, generator=generator) * scale

    if state is None and method == "cjme":
        state = {}
        for net, width, inner in (("1", audio_dim, hidden), ("2", DV, hidden), ("3", 300, 300)):
            prefix = f"triplet_net.embedding_net{net}.fc"
            state |= {f"{prefix}.0.weight": normal(inner, width), f"{prefix}.0.bias": normal(inner),
                      f"{prefix}.1.weight": 1 + normal(inner), f"{prefix}.1.bias": normal(inner),
                      f"{prefix}.1.running_mean": normal(inner), f"{prefix}.1.running_var": 0.5 + normal(inner).abs(),
                      f"{prefix}.1.num_batches_tracked": torch.tensor(1000), f"{prefix}.4.weight": normal(64, inner),
                      f"{prefix}.4.bias": normal(64)}
        width = audio_dim + DV
        state |= {"attention_model.0.weight": 1 + normal(width), "attention_model.0.bias": normal(width),
                  "attention_model.0.running_mean": normal(width),
                  "attention_model.0.running_var": 1 + normal(width).abs(),
                  "attention_model.0.num_batches_tracked": torch.tensor(1000),
                  "attention_model.1.weight": normal(1, width, scale=1.0), "attention_model.1.bias": torch.zeros(1)}
    elif state is None:
        state = {"bilinear.weight": normal(300, DV + DA)}
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-5,
                                                "amsgrad": False, "params": list(range(len(state)))}]}
    torch.save({"epoch": 12, "model": state, "optimizer": optimizer, "metric": "score"}, path)
    return state


def _predictions(folder: Path) -> dict[str, tuple[str, str]]:
    with (folder / "predictions.csv").open(encoding="utf-8") as handle:
        return {row["clip_id"]: (row["pred_gzsl"], row["pred_zsl"]) for row in csv.DictReader(handle)}


@pytest.mark.parametrize("method,peer_order", [("devise", False), ("cjme", False), ("cjme", True), ("sje", True)])
def test_imported_runs_predict_what_the_peers_code_predicts(method, peer_order, peer_store, tmp_path):
    store, seen, unseen, clips = peer_store
    state = _peer_checkpoint(method, tmp_path / "peer.pt")
    import_peer_model(PeerImportConfig(method=method, checkpoint=tmp_path / "peer.pt", dataset="ucf",
                                       out=tmp_path / "run", peer_text_order=peer_order))
    result = run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen,
                                         out=tmp_path / "eval"))
    assert result.metrics["imported"]["sha256"] and result.metrics["peer_text_order"] is peer_order
    ours = _predictions(tmp_path / "eval")

    # the peer, beta 0
    names = sorted(CANDIDATES["seen"] + CANDIDATES["unseen"], key=CLASS_SPLIT.class_id)
    ids = sorted(clips)
    video = np.stack([clips[c][1] for c in ids]).astype(np.float64)
    audio = np.stack([clips[c][2] for c in ids]).astype(np.float64)
    distances = _peer_distances(method, state, video, audio, _peer_class_vectors(names, peer_order))
    unseen_columns = [names.index(n) for n in CANDIDATES["unseen"]]
    peer = {c: (names[int(np.argmin(distances[i]))],
                names[unseen_columns[int(np.argmin(distances[i, unseen_columns]))]] if clips[c][0] in UNSEEN else "")
            for i, c in enumerate(ids)}
    assert ours == peer
    assert len({gzsl for gzsl, _ in peer.values()}) > 1  # not one class for every clip: the comparison has teeth
    if method == "cjme":  # both branches are picked by the gate for some clips
        gate_in = _batchnorm(np.concatenate([audio, video], 1), {k: v.double().numpy() for k, v in state.items()},
                             "attention_model.0")
        logits = gate_in @ state["attention_model.1.weight"].double().numpy().T
        assert (logits >= 0).any() and (logits < 0).any()


def test_the_command_line_imports_and_reports_say_so(peer_store, tmp_path):
    store, seen, unseen, _ = peer_store
    _peer_checkpoint("ale", tmp_path / "DeviseModel_score_ckpt_11.pt")
    result = CliRunner().invoke(cli.cli, ["import-peer-model", "--method", "ale", "--checkpoint",
                                          str(tmp_path / "DeviseModel_score_ckpt_11.pt"), "--dataset", "ucf",
                                          "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "imported ale (epoch 12, 42 training classes, video 512 + audio 512 -> 300)" in result.output
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["imported"]["method"] == "ale" and recorded["imported"]["dataset"] == "ucf"
    assert recorded["train"]["head"]["normalise_inputs"] is False
    evaluated = CliRunner().invoke(cli.cli, ["zeroshot", "--run", str(tmp_path / "run"), "--store", str(store),
                                             "--seen", str(seen), "--unseen", str(unseen), "--out",
                                             str(tmp_path / "eval"), "--no-plots"])
    assert evaluated.exit_code == 0, evaluated.output
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "imported from the peers' code: AVCA-GZSL ale checkpoint" in report
    # cls_split: the peers' DeviseModel runs normalised their C3D / VGGish inputs, so the import does
    _peer_checkpoint("devise", tmp_path / "cls.pt", state={"bilinear.weight": torch.zeros(300, 4096 + 128)})
    import_peer_model(PeerImportConfig(method="devise", checkpoint=tmp_path / "cls.pt", dataset="ucf",
                                       split="cls_split", out=tmp_path / "cls"))
    cls_run = json.loads((tmp_path / "cls" / "config.json").read_text())
    assert cls_run["train"]["head"]["normalise_inputs"] is True and cls_run["dims"]["video_dim"] == 4096


def _refusal(tmp_path, path: Path, method: str = "devise", **options) -> str:
    with pytest.raises(InputError) as error:
        import_peer_model(PeerImportConfig(method=method, checkpoint=path, dataset="ucf", out=tmp_path / "run",
                                           **options))
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_bad_checkpoints_are_one_line_naming_the_file(tmp_path, monkeypatch):
    cjme = _peer_checkpoint("cjme", tmp_path / "cjme.pt")
    assert "its keys are those of cjme" in _refusal(tmp_path, tmp_path / "cjme.pt", "devise")  # wrong method
    devise_message = _refusal(tmp_path, _write(tmp_path / "devise.pt", {"bilinear.weight": torch.zeros(300, 1024)}),
                              "cjme")
    assert "devise" in devise_message and "ale" in devise_message  # DeviseModel serves all three
    missing = {k: v for k, v in cjme.items() if k != "attention_model.1.bias"}
    assert "1 missing ['attention_model.1.bias']" in _refusal(tmp_path, _write(tmp_path / "m.pt", missing), "cjme")
    extra = {**cjme, "triplet_net.embedding_net1.fc.7.weight": torch.zeros(2)}
    assert "1 unexpected" in _refusal(tmp_path, _write(tmp_path / "u.pt", extra), "cjme")
    # shapes that disagree with each other: the video encoder 32 wide, the audio encoder 48
    narrow = _peer_checkpoint("cjme", tmp_path / "narrow.pt", hidden=32)
    mixed = {**cjme, **{k: v for k, v in narrow.items() if "embedding_net2" in k}}
    assert "of another shape" in _refusal(tmp_path, _write(tmp_path / "s.pt", mixed), "cjme")
    assert "which of them are video cannot be told" in _refusal(
        tmp_path, _write(tmp_path / "w.pt", {"bilinear.weight": torch.zeros(300, 1000)}))
    (tmp_path / "notes.pt").write_text("not a checkpoint\n")
    assert "cannot read as a checkpoint" in _refusal(tmp_path, tmp_path / "notes.pt")
    (tmp_path / "short.pt").write_text("junk\n")  # torch.load fails with a KeyError on this one
    assert "cannot read as a checkpoint" in _refusal(tmp_path, tmp_path / "short.pt")
    torch.save({"bilinear.weight": torch.zeros(300, 1024)}, tmp_path / "bare.pt")  # a state_dict, not their format
    assert "not a checkpoint of AVCA-GZSL" in _refusal(tmp_path, tmp_path / "bare.pt")
    # a pickle that needs code to load (argparse.Namespace, as training scripts save their arguments)
    torch.save({"epoch": 1, "model": {"bilinear.weight": torch.zeros(300, 1024)}, "args": argparse.Namespace(lr=1)},
               tmp_path / "code.pt")
    assert "no option to load one that needs code" in _refusal(tmp_path, tmp_path / "code.pt")
    assert not (tmp_path / "run").exists()
    # a method whose module offers no reader of the peers' checkpoints
    entry = heads.head_entry("sje")
    monkeypatch.setitem(heads._REGISTRY, "sje", dataclasses.replace(entry, peer_weights=None))
    with pytest.raises(InputError, match="method 'sje' has no reader of the peers' checkpoints"):
        import_peer_model(PeerImportConfig(method="sje", checkpoint=tmp_path / "devise.pt", dataset="ucf",
                                           out=tmp_path / "run"))


def _write(path: Path, state: dict) -> Path:
    torch.save({"epoch": 3, "model": state, "optimizer": {}}, path)
    return path


def test_features_of_other_sizes_than_the_checkpoint_are_refused_at_zeroshot(peer_store, tmp_path):
    store, seen, unseen, _ = peer_store
    _peer_checkpoint("cjme", tmp_path / "peer.pt", audio_dim=128)  # VGGish-wide audio, the store's is 512
    import_peer_model(PeerImportConfig(method="cjme", checkpoint=tmp_path / "peer.pt", dataset="ucf",
                                       out=tmp_path / "run"))
    with pytest.raises(InputError, match=r"token layout audio_dim=512 \(model: 128\)") as error:
        run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen))
    assert "\n" not in str(error.value) and str(store) in str(error.value)


def test_an_imported_run_scores_test_splits_only(peer_store, tmp_path):
    """The peer's training clips are not recorded: a store that also holds a training stage is scored on its test
    stages only, and naming the training stage is refused (its clips would inflate S)."""
    _, seen, unseen, _ = peer_store
    root = tmp_path / "features"
    for modality, dim in (("video", DV), ("audio", DA)):
        for stage, names in (("stage_2_train", SEEN), ("stage_2_test_seen", SEEN), ("stage_2_test_unseen", UNSEEN)):
            folder = root / modality / stage
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                ids = [f"v_{name}_g{'1' if stage == 'stage_2_train' else '0'}{i + 1}_c01" for i in range(2)]
                with h5py.File(folder / f"{name}.h5", "w") as f:
                    f["data"] = np.stack([_features(c, modality, dim) for c in ids])
                    f["video_urls"] = np.array([f"{c}.avi".encode() for c in ids])
    store = tmp_path / "store.zarr"
    import_avca_features(AVCAImportConfig(features=root, dataset="ucf", out=store))
    _peer_checkpoint("devise", tmp_path / "peer.pt")
    import_peer_model(PeerImportConfig(method="devise", checkpoint=tmp_path / "peer.pt", dataset="ucf",
                                       out=tmp_path / "run"))
    result = run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen))
    assert result.metrics["num_clips"] == 2 * len(SEEN + UNSEEN)  # the 6 training clips are not scored
    with pytest.raises(InputError, match=r"not \['stage_2_train'\]") as error:
        run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen,
                                    splits=("stage_2_train", "stage_2_test_seen")))
    assert "\n" not in str(error.value)
    everything = run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen,
                                             include_training_clips=True))
    assert everything.metrics["num_clips"] == 4 * len(SEEN) + 2 * len(UNSEEN)
