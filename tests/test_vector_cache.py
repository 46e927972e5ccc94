"""A frozen encoder's word vectors, computed once a corpus and kept on disk (issue 27): the same bits every way."""

import logging
from pathlib import Path

import pytest
import torch

from nerdistil import softlabels
from nerdistil.teacher.flair import embeddings as fe
from nerdistil.teacher.flair import model as fm
from nerdistil.teacher.flair import vectors as fv

CORPUS = Path(__file__).parent / "data" / "corpus"
SENTENCES = [("Obama", "visits", "London"), ("@john", "loves", "#Apple", "&", "Google")]


def _weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f.name: torch.load(f, map_location="cpu", weights_only=False)["state_dict"] for f in out.glob("*.pt")}


def _probs(out: Path) -> dict[str, list]:
    return {name: ds["probs"] for name, ds in softlabels.load(out / "soft_labels").items()}


def _same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb) == ["teacher.pt", "teacher_2.pt"]
    for name in wa:
        assert wa[name].keys() == wb[name].keys()
        assert all(torch.equal(wa[name][k], wb[name][k]) for k in wa[name]), name
    assert _probs(a) == _probs(b)  # every split's soft labels, float for float


def test_teachers_and_soft_labels_are_bitwise_the_same_with_the_disk_cache_cold_warm_or_damaged(
    tiny_student, cli, tmp_path, monkeypatch, caplog
):
    """A cross-fitted ensemble of two members on a frozen tiny BERT, with and without the disk cache."""
    from flair.embeddings import TransformerWordEmbeddings
    from safetensors import safe_open

    passes, forwards = [], []
    compute, embed = fv.compute, TransformerWordEmbeddings._add_embeddings_internal
    monkeypatch.setattr(fv, "compute", lambda part, unit: passes.append(len(unit)) or compute(part, unit))
    monkeypatch.setattr(TransformerWordEmbeddings, "_add_embeddings_internal",
                        lambda self, sents: forwards.append(len(sents)) or embed(self, sents))  # fmt: skip
    unlabeled = tmp_path / "raw.txt"  # one corpus tweet (its cached vectors) and a new one (embedded as before)
    unlabeled.write_text("Obama visits London today\nnothing here but words\n")
    cache = tmp_path / "vectors"

    def teach(name: str, where: Path | str) -> Path:
        passes.clear(), forwards.clear()
        code, _, err = cli("teach", "--corpus", CORPUS, "--out", tmp_path / name, "--embeddings", f"{tiny_student}@all",
                           "--ensemble", "2", "--cross-fit", "--epochs", "2", "--seed", "3", "--vector-cache", where,
                           "--unlabeled", unlabeled)  # fmt: skip
        assert code == 0, err
        return tmp_path / name

    memory = teach("memory", "none")
    assert passes == [12] and not list(tmp_path.glob("vectors*"))  # 30 corpus tweets, 12 distinct: one pass
    _same_run(memory, teach("cold", cache))
    (stored,) = cache.glob("*.safetensors")
    assert passes == [12] and not list(cache.glob(".*"))  # no temporary file left
    _same_run(memory, teach("warm", cache))
    assert passes == [] and sum(forwards) <= 2  # only --unlabeled tweets outside the corpus reach the transformer

    for k, damage in enumerate([stored.read_bytes()[: stored.stat().st_size // 2], b"not a safetensors file"]):
        stored.write_bytes(damage)  # a truncated file, then garbage
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=fv.__name__):
            _same_run(memory, teach(f"damaged{k}", cache))
        assert passes == [12] and "unusable" in caplog.text  # recomputed with a warning, then written whole again
        with safe_open(str(stored), "pt") as f:  # checks the header and that the data covers the file
            assert f.metadata()["sentences"] == "12" and f.get_tensor("lengths").numel() == 12


def test_vectors_are_the_frozen_encoders_in_eval_mode_and_keyed_by_what_makes_them(tiny_student, tmp_path):
    part = fe.build_embeddings(f"{tiny_student}@all", [], [])
    cache = fv.VectorCache(None, SENTENCES)
    part.train()  # as a tagger in training leaves it: the pass still runs the transformer without dropout
    table = cache.vectors(part)
    assert part.training  # and gives the mode back
    for words in SENTENCES:
        from flair.data import Sentence

        alone = Sentence(list(words))
        part.eval()
        part.embed(alone)
        torch.testing.assert_close(table.rows(words, "cpu"), torch.stack([t.get_embedding() for t in alone]))
    key = cache.key(part)[0]
    assert key == fv.VectorCache(None, []).key(fe.build_embeddings(f"{tiny_student}@all", [], []))[0]
    assert key != cache.key(fe.build_embeddings(f"{tiny_student}@-1", [], []))[0]  # another layer choice
    changed = fe.build_embeddings(f"{tiny_student}@all", [], [])
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)
    assert key != cache.key(changed)[0]  # other weights
    assert cache.key(part)[1]["settings"]["layer_mean"] is True and "name" not in cache.key(part)[1]["settings"]


def test_a_tagger_saved_and_loaded_finds_the_vectors_it_trained_on(tiny_student, tmp_path):
    """Training and labelling in one run share one pass: the loaded teacher's encoder has the built one's key."""
    from nerdistil.config import TeachConfig
    from nerdistil.data.conll import read_conll

    train, dev = read_conll(CORPUS / "train.txt"), read_conll(CORPUS / "dev.txt")
    cfg = TeachConfig(embeddings=f"{tiny_student}@all", epochs=1)
    with fv.vector_cache("none", [s.tokens for s in train + dev]) as cache:
        tagger, _ = fm.train_teacher(train, dev, cfg, tmp_path / "work")
        (part,) = fv.frozen_transformers(tagger.embeddings)
        assert cache.computed == 1 and cache.key(part)[0] in cache._vectors


def test_a_write_that_stops_half_way_leaves_nothing_that_is_read(tiny_student, tmp_path, monkeypatch, caplog):
    import safetensors.torch

    part = fe.build_embeddings(f"{tiny_student}@all", [], [])
    real = safetensors.torch.save_file

    def dies(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", dies)
    with caplog.at_level(logging.WARNING, logger=fv.__name__):
        first = fv.VectorCache(tmp_path, SENTENCES).vectors(part).table
    assert "cannot write" in caplog.text and not list(tmp_path.iterdir())  # no final file, no temporary one
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    (tmp_path / ".stale.safetensors.1-abc.tmp").write_bytes(b"left by a killed run")  # never opened
    again = fv.VectorCache(tmp_path, SENTENCES)
    assert torch.equal(again.vectors(part).table, first) and again.computed == 1
    warm = fv.VectorCache(tmp_path, list(reversed(SENTENCES)))  # the same corpus in another order
    assert torch.equal(warm.vectors(part).table, first) and warm.computed == 0


@pytest.mark.parametrize(("setting", "expected"), [("none", None), ("", None), ("NONE", None), ("~/v", "~/v")])
def test_the_setting_names_a_folder_or_none(setting, expected, monkeypatch, tmp_path):
    assert fv.cache_root(setting) == (None if expected is None else Path(expected).expanduser())
    monkeypatch.setenv("NERDISTIL_CACHE", str(tmp_path))
    assert fv.cache_root("auto") == tmp_path / "vectors"
