"""import-peer-model for TCAF-GZSL and ClipClap-GZSL: checkpoints in their format and parameter names, written by the
test, become runs whose zeroshot predictions equal those of an independent re-implementation of the peers' own test
forward (`get_embeddings`) and training losses equal their `compute_loss`; bad checkpoints are refused in one line
naming the file."""

from __future__ import annotations

import csv
import math
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from common.errors import InputError
from curate import splits
from curate.config import AVCAImportConfig
from curate.importers import import_avca_features
from fusion import heads
from fusion.config import PeerImportConfig
from fusion.heads.head import ClipBatch
from fusion.model import ModelDims
from fusion.peer_checkpoint import import_peer_model
from text.class_embeddings import load_embedding_source
from text.class_names import tokenize_class_name
from workflows.config import ZeroShotConfig
from workflows.zeroshot import run_zeroshot

CLASS_SPLIT = splits.load_class_split("ucf")
SEEN = ["Archery", "CliffDiving", "Haircut"]
UNSEEN = ["BandMarching", "PlayingFlute", "Typing"]
CANDIDATES = {"seen": CLASS_SPLIT.stages["stage_2_test_seen"], "unseen": CLASS_SPLIT.stages["stage_2_test_unseen"]}
STEPS = 3  # time steps per clip of the TCaF store (imported as they are: sequence_tokens 3)
TCAF_DIMS = {"video": 20, "audio": 12}
CLIPCLAP_DIMS = {"video": 512, "audio": 1024}  # CLIP ViT-B/32 image, WavCaps HTSAT audio
CLIPCLAP_TEXT = 1536  # CLIP text 512 + WavCaps text 1024


def _features(clip_id: str, modality: str, shape: tuple[int, ...], scale: float = 1.0) -> np.ndarray:
    """Random features that float16 holds exactly (the store keeps float16): the peer and the store see the same."""
    rng = np.random.default_rng(zlib.crc32(f"{clip_id}/{modality}".encode()))
    return (scale * rng.normal(size=shape)).astype(np.float16).astype(np.float32)


def _store(root: Path, dims: dict[str, int], steps: int | None, audio_scale: float = 1.0):
    """An import-avca store of 3 seen and 3 unseen UCF classes (2 clips each), the split's class files, and each
    clip's (label, video, audio) as written: (T, D) sequences when `steps`, else (D,) vectors."""
    clips = {}
    for stage, names in (("stage_2_test_seen", SEEN), ("stage_2_test_unseen", UNSEEN)):
        for name in names:
            ids = [f"v_{name}_g0{i + 1}_c01" for i in range(2)]
            shapes = {modality: (steps, dim) if steps else (dim,) for modality, dim in dims.items()}
            for modality in dims:
                folder = root / "features" / modality / stage
                folder.mkdir(parents=True, exist_ok=True)
                scale = audio_scale if modality == "audio" else 1.0
                with h5py.File(folder / f"{name}.h5", "w") as f:
                    f["data"] = np.stack([_features(c, modality, shapes[modality], scale) for c in ids])
                    f["video_urls"] = np.array([f"{c}.avi".encode() for c in ids])
            clips.update({c: (name, _features(c, "video", shapes["video"]),
                              _features(c, "audio", shapes["audio"], audio_scale)) for c in ids})
    store = root / "store.zarr"
    import_avca_features(AVCAImportConfig(features=root / "features", dataset="ucf", out=store,
                                          sequence_tokens=steps or 8))
    for kind, names in CANDIDATES.items():
        (root / f"{kind}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    return store, root / "seen.txt", root / "unseen.txt", clips


@pytest.fixture(scope="module")
def tcaf_store(tmp_path_factory):
    # audio of byte-like size, as TCAF-GZSL's / 255 expects of it
    return _store(tmp_path_factory.mktemp("tcaf"), TCAF_DIMS, STEPS, audio_scale=100.0)


@pytest.fixture(scope="module")
def clipclap_store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("clipclap"), CLIPCLAP_DIMS, None)


# --- the peers' side, written from reading TCAF-GZSL @ 0ca2059 (src/model_sequence.py) and ClipClap-GZSL @ 56b8e1b
# (src/clipclap_model.py); evaluation mode: BatchNorm on running statistics, no dropout ---


def _linear(x, state, prefix):
    return x @ state[f"{prefix}.weight"].T + state[f"{prefix}.bias"]


def _batchnorm(x, state, prefix):
    return (x - state[f"{prefix}.running_mean"]) / np.sqrt(state[f"{prefix}.running_var"] + 1e-5) \
        * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def _embedding_net(x, state, prefix, hidden: bool):
    """EmbeddingNet: [Linear, BN, ReLU, Dropout] once, or twice with a hidden layer (`hidden_size` > 0)."""
    x = np.maximum(_batchnorm(_linear(x, state, f"{prefix}.fc.0"), state, f"{prefix}.fc.1"), 0)
    if hidden:
        x = np.maximum(_batchnorm(_linear(x, state, f"{prefix}.fc.4"), state, f"{prefix}.fc.5"), 0)
    return x


def _layer_norm(x, state, prefix):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * state[f"{prefix}.weight"] + state[f"{prefix}.bias"]


def _softmax(x):
    x = x - x.max(-1, keepdims=True)
    return np.exp(x) / np.exp(x).sum(-1, keepdims=True)


def _gelu(x):  # torch's exact GELU
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


def _tcaf_theta_o(state, audio, video, heads: int):
    """Multimodal_Sequence_Transformer.get_embeddings: audio (B, Ta, Da), video (B, Tv, Dv) -> theta_o (B, 64)."""
    audio = audio / 255.0
    video = video / np.maximum(np.linalg.norm(video, axis=1, keepdims=True), 1e-12)  # F.normalize: dim 1, time
    b, ta, tv = audio.shape[0], audio.shape[1], video.shape[1]
    pe = "position_encoder_block"

    def tokens(x, encoder, modality, projection):
        t = x.shape[1]
        x = _embedding_net(x.reshape(b * t, -1), state, encoder, True).reshape(b, t, -1)
        positions = np.arange(t, dtype=np.float64)[:, None]  # its evaluation passes no times: indices
        projected = (2 * np.pi * np.concatenate([positions, positions], -1)) @ state[f"{pe}.fourier_randn"]
        time = _linear(np.concatenate([np.sin(projected), np.cos(projected)], -1), state, f"{pe}.fourier_embeddings")
        embedding = state[f"{pe}.modal_embedding.weight"][modality] + time  # no padding: its embedding adds 0
        x = np.concatenate([x, np.broadcast_to(embedding, (b, t, embedding.shape[-1]))], -1)
        weight = state[f"{pe}.{projection}.weight"][:, :, 0]  # Conv1d, kernel 1
        return x @ weight.T + state[f"{pe}.{projection}.bias"]

    x = np.concatenate([np.broadcast_to(state["cls_token"], (b, 1, state["cls_token"].shape[-1])),
                        tokens(audio, "A_enc", 0, "out_proj_audio"), tokens(video, "V_enc", 1, "out_proj_video")], 1)
    n = 1 + ta + tv
    allowed = np.ones((n, n), bool)  # use_cross_attention only: the blocks of one modality masked
    allowed[1:ta + 1, 1:ta + 1] = False
    allowed[ta + 1:, ta + 1:] = False
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith("Audio_visual_transformer.layers.")})
    for i in layers:
        p = f"Audio_visual_transformer.layers.{i}"
        normed = _layer_norm(x, state, f"{p}.norm")
        q, k, v = (normed @ state[f"{p}.attn.to_{name}.weight"].T for name in "qkv")
        q, k, v = (m.reshape(b, n, heads, -1).transpose(0, 2, 1, 3) for m in (q, k, v))
        dots = q @ k.transpose(0, 1, 3, 2) * q.shape[-1] ** -0.5
        dots = np.where(allowed, dots, -np.finfo(np.float64).max)
        out = (_softmax(dots) @ v).transpose(0, 2, 1, 3).reshape(b, n, -1)
        x = _linear(out, state, f"{p}.attn.to_out.0") + x
        hidden = _gelu(_linear(_layer_norm(x, state, f"{p}.norm"), state, f"{p}.ff.net.0"))
        x = _linear(hidden, state, f"{p}.ff.net.3") + x
    return _embedding_net(x[:, 0], state, "O_proj", True)


def _clipclap_theta_o(state, audio, video):
    """ClipClap_model.get_embeddings (`modality both`): O_proj(O_enc(cat(v, a)))."""
    return _embedding_net(_embedding_net(np.concatenate([video, audio], 1), state, "O_enc", False), state, "O_proj",
                          True)


def _peer_theta_w(method, state, text):
    if method == "tcaf":
        return _embedding_net(text, state, "W_proj", False)
    return _embedding_net(_embedding_net(text, state, "W_enc", False), state, "W_proj", False)


def _bn(prefix, width, normal):
    return {f"{prefix}.weight": 1 + normal(width), f"{prefix}.bias": normal(width),
            f"{prefix}.running_mean": normal(width), f"{prefix}.running_var": 0.5 + normal(width).abs(),
            f"{prefix}.num_batches_tracked": torch.tensor(100)}


def _net(prefix, sizes, normal, gain=1.0):
    """An EmbeddingNet's state: sizes (in, out) or (in, hidden, out); `gain` scales its first layer (unit-norm class
    vectors need about 10 to spread their classes as widely as the clips)."""
    state = {f"{prefix}.fc.0.weight": normal(sizes[1], sizes[0], scale=gain * sizes[0] ** -0.5),
             f"{prefix}.fc.0.bias": normal(sizes[1]), **_bn(f"{prefix}.fc.1", sizes[1], normal)}
    if len(sizes) == 3:
        state |= {f"{prefix}.fc.4.weight": normal(sizes[2], sizes[1], scale=sizes[1] ** -0.5),
                  f"{prefix}.fc.4.bias": normal(sizes[2]), **_bn(f"{prefix}.fc.5", sizes[2], normal)}
    return state


def _peer_checkpoint(method: str, path: Path, seed: int = 0, heads: int = 8, head_dim: int = 64,
                     depth: int = 2) -> dict[str, torch.Tensor]:
    """A checkpoint in the peers' format (`save_best_model`), random tensors of their parameter names and shapes."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    if method == "clipclap":
        inputs = CLIPCLAP_DIMS["video"] + CLIPCLAP_DIMS["audio"]
        state = {**_net("O_enc", (inputs, 512), normal), **_net("W_enc", (CLIPCLAP_TEXT, 512), normal, gain=10.0),
                 **_net("O_proj", (512, 512, 64), normal), **_net("D_o", (64, 512, 512), normal),
                 **_net("W_proj", (512, 64), normal), **_net("D_w", (64, 512), normal)}
    else:
        width, inner, pe = 300, heads * head_dim, "position_encoder_block"
        state = {**_net("A_enc", (TCAF_DIMS["audio"], 256, width), normal),
                 **_net("V_enc", (TCAF_DIMS["video"], 256, width), normal),
                 **_net("W_proj", (300, 64), normal, gain=10.0), **_net("D_w", (64, 300), normal),
                 **_net("O_proj", (width, 512, 64), normal), **_net("D_o", (64, 512, 300), normal),
                 "cls_token": normal(1, 1, width, scale=1.0)}
        embedding = {f"{pe}.modal_embedding.weight": normal(2, 64, scale=1.0),
                     f"{pe}.fourier_randn": 10 * normal(2, 32, scale=1.0),
                     f"{pe}.fourier_embeddings.weight": normal(64, 64, scale=0.125),
                     f"{pe}.fourier_embeddings.bias": normal(64), f"{pe}.pad_embedding.weight": normal(1, 64),
                     f"{pe}.out_proj_audio.weight": normal(width, width + 64, 1, scale=0.06),
                     f"{pe}.out_proj_audio.bias": normal(width),
                     f"{pe}.out_proj_video.weight": normal(width, width + 64, 1, scale=0.06),
                     f"{pe}.out_proj_video.bias": normal(width)}
        state |= embedding | {k.replace(pe, "audiovisual_embeddings"): v for k, v in embedding.items()}  # its alias
        for i in range(depth):
            p = f"Audio_visual_transformer.layers.{i}"
            state |= {f"{p}.attn.to_q.weight": normal(inner, width, scale=0.06),
                      f"{p}.attn.to_k.weight": normal(inner, width, scale=0.06),
                      f"{p}.attn.to_v.weight": normal(inner, width, scale=0.06),
                      f"{p}.attn.to_out.0.weight": normal(width, inner, scale=0.04),
                      f"{p}.attn.to_out.0.bias": normal(width), f"{p}.ff.net.0.weight": normal(128, width, scale=0.06),
                      f"{p}.ff.net.0.bias": normal(128), f"{p}.ff.net.3.weight": normal(width, 128, scale=0.09),
                      f"{p}.ff.net.3.bias": normal(width), f"{p}.norm.weight": 1 + normal(width),
                      f"{p}.norm.bias": normal(width)}
    torch.save({"epoch": 7, "model": state, "optimizer": {"state": {}, "param_groups": []}, "metric": "score"}, path)
    return state


def _vectors_file(path: Path) -> Path:
    """A word2vec file of random CLIPCLAP_TEXT-wide vectors for every word of the candidate class names, of about
    ClipClap's norm (two unit-norm halves: sqrt 2)."""
    words = sorted({w for n in CANDIDATES["seen"] + CANDIDATES["unseen"] for w in tokenize_class_name(n)})
    values = np.random.default_rng(3).normal(size=(len(words), CLIPCLAP_TEXT)) * (2 / CLIPCLAP_TEXT) ** 0.5
    rows = [f"{w} " + " ".join(f"{x:.5f}" for x in row) for w, row in zip(words, values, strict=True)]
    path.write_text(f"{len(words)} {CLIPCLAP_TEXT}\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def _predictions(folder: Path) -> dict[str, tuple[str, str]]:
    with (folder / "predictions.csv").open(encoding="utf-8") as handle:
        return {row["clip_id"]: (row["pred_gzsl"], row["pred_zsl"]) for row in csv.DictReader(handle)}


@pytest.mark.parametrize("method", ["tcaf", "clipclap"])
def test_imported_runs_predict_what_the_peers_code_predicts(method, tcaf_store, clipclap_store, tmp_path):
    store, seen, unseen, clips = tcaf_store if method == "tcaf" else clipclap_store
    state = _peer_checkpoint(method, tmp_path / "peer.pt")
    names = sorted(CANDIDATES["seen"] + CANDIDATES["unseen"], key=CLASS_SPLIT.class_id)
    if method == "tcaf":  # the dataset's AVCA table, normalised, by name
        embeddings = None
        source = load_embedding_source("avca:ucf", normalise=True)
    else:  # ClipClap's vectors as given (two unit-norm halves are never normalised again)
        embeddings = f"word2vec:{_vectors_file(tmp_path / 'clipclap.txt')}"
        source = load_embedding_source(embeddings, normalise=False)
    imported = import_peer_model(PeerImportConfig(method=method, checkpoint=tmp_path / "peer.pt", dataset="ucf",
                                                  out=tmp_path / "run", embeddings=embeddings))
    assert imported.epoch == 7
    result = run_zeroshot(ZeroShotConfig(run_dir=tmp_path / "run", store=store, seen=seen, unseen=unseen,
                                         out=tmp_path / "eval"))
    assert result.metrics["imported"]["code"] == {"tcaf": "TCAF-GZSL", "clipclap": "ClipClap-GZSL"}[method]
    ours = _predictions(tmp_path / "eval")

    ids = sorted(clips)
    video = np.stack([clips[c][1] for c in ids]).astype(np.float64)
    audio = np.stack([clips[c][2] for c in ids]).astype(np.float64)
    numpy_state = {k: v.double().numpy() for k, v in state.items()}
    theta_o = (_tcaf_theta_o(numpy_state, audio, video, heads=8) if method == "tcaf"
               else _clipclap_theta_o(numpy_state, audio, video))
    theta_w = _peer_theta_w(method, numpy_state, source.embed(names).astype(np.float64))
    distances = np.sqrt(((theta_o[:, None] - theta_w[None]) ** 2).sum(-1))
    unseen_columns = [names.index(n) for n in CANDIDATES["unseen"]]
    peer = {c: (names[int(np.argmin(distances[i]))],
                names[unseen_columns[int(np.argmin(distances[i, unseen_columns]))]] if clips[c][0] in UNSEEN else "")
            for i, c in enumerate(ids)}
    assert ours == peer
    assert len({gzsl for gzsl, _ in peer.values()}) > 1  # not one class for every clip: the comparison has teeth


def _refusal(tmp_path, path: Path, method: str) -> str:
    with pytest.raises(InputError) as error:
        import_peer_model(PeerImportConfig(method=method, checkpoint=path, dataset="ucf", out=tmp_path / "run"))
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def _write(path: Path, state: dict) -> Path:
    torch.save({"epoch": 3, "model": state, "optimizer": {}}, path)
    return path


def test_bad_checkpoints_are_one_line_naming_the_file(tmp_path):
    tcaf = _peer_checkpoint("tcaf", tmp_path / "tcaf.pt")
    clipclap = _peer_checkpoint("clipclap", tmp_path / "clipclap.pt")
    assert "its keys are those of tcaf" in _refusal(tmp_path, tmp_path / "tcaf.pt", "clipclap")
    assert "its keys are those of clipclap" in _refusal(tmp_path, tmp_path / "clipclap.pt", "tcaf")
    missing = {k: v for k, v in tcaf.items() if k != "Audio_visual_transformer.layers.1.ff.net.3.bias"}
    assert "not the weights of TCAF-GZSL's Multimodal_Sequence_Transformer: 1 missing" in _refusal(
        tmp_path, _write(tmp_path / "m.pt", missing), "tcaf")
    _peer_checkpoint("tcaf", tmp_path / "odd.pt", heads=5, head_dim=20)  # attention 100 wide: no known head count
    assert "none of TCAF-GZSL's configurations" in _refusal(tmp_path, tmp_path / "odd.pt", "tcaf")
    video_only = {**clipclap, "O_enc.fc.0.weight": torch.zeros(512, 512)}  # `--modality video`
    assert "a model of one modality" in _refusal(tmp_path, _write(tmp_path / "v.pt", video_only), "clipclap")
    wide = {**clipclap, "O_proj.fc.4.weight": torch.zeros(32, 512)}
    assert "of another shape" in _refusal(tmp_path, _write(tmp_path / "s.pt", wide), "clipclap")
    # ClipClap's own class vectors are not the default AVCA table
    assert "give them with `embeddings`" in _refusal(tmp_path, tmp_path / "clipclap.pt", "clipclap")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["tcaf", "clipclap"])
def test_the_training_loss_is_the_peers_loss(method, tmp_path):
    """compute_loss of the peers' forward on one batch (evaluation mode, so that BatchNorm and dropout are fixed):
    cross-entropy over the classes, MSE(theta_o, theta_w), and the two reconstructions of w (ClipClap's W_enc(w))."""
    state = _peer_checkpoint(method, tmp_path / "peer.pt")
    values, ours = heads.head_entry(method).peer_weights(state)
    dims = values.pop("dims")
    head = heads.create_head(method, values, ModelDims(video_tokens=1, audio_tokens=1, num_classes=1, **dims), False)
    head.load_state_dict(ours)
    head.eval()
    rng = np.random.default_rng(1)
    steps = (STEPS,) if method == "tcaf" else ()
    video = rng.normal(size=(5, *steps, dims["video_dim"]))
    audio = rng.normal(size=(5, *steps, dims["audio_dim"])) * (100 if method == "tcaf" else 1)
    classes = rng.normal(size=(4, dims["embedding_dim"]))
    classes /= np.linalg.norm(classes, axis=1, keepdims=True)
    labels = np.array([0, 3, 1, 1, 2])
    batch = ClipBatch(torch.tensor(video, dtype=torch.float32), torch.tensor(audio, dtype=torch.float32),
                      torch.tensor(labels))
    with torch.no_grad():
        losses = head.training_losses(batch, batch, torch.tensor(classes, dtype=torch.float32))

    s = {k: v.double().numpy() for k, v in state.items()}
    if method == "tcaf":
        theta_o, w, all_w = _tcaf_theta_o(s, audio, video, heads=8), classes[labels], classes
    else:
        theta_o = _clipclap_theta_o(s, audio, video)
        w, all_w = (_embedding_net(x, s, "W_enc", False) for x in (classes[labels], classes))
    theta_w = _embedding_net(w, s, "W_proj", False)
    scores = theta_o @ _embedding_net(all_w, s, "W_proj", False).T
    scores = scores - scores.max(1, keepdims=True)
    cross_entropy = -np.mean(scores[np.arange(5), labels] - np.log(np.exp(scores).sum(1)))
    rho_o = _embedding_net(theta_o, s, "D_o", True)
    rho_w = _embedding_net(theta_w, s, "D_w", False)
    expected = {"cross_entropy": cross_entropy, "regression": np.mean((theta_o - theta_w) ** 2),
                "reconstruction": np.mean((w - rho_o) ** 2) + np.mean((w - rho_w) ** 2)}
    for name, value in expected.items():
        assert losses.parts[name].item() == pytest.approx(value, rel=1e-4), name
    assert min(expected.values()) > 1e-3  # every term is non-trivial
