"""Teacher ensembles (averaged CRF posteriors) and stacked / fine-tuned teacher embeddings."""

import json
from pathlib import Path

import numpy as np
import pytest

from nerdistil import assets, softlabels, trust
from nerdistil.data.conll import read_conll
from nerdistil.metrics import entity_report
from nerdistil.tags import decode_posteriors
from nerdistil.teacher.ensemble import average
from nerdistil.teacher.flair import embeddings as fe
from nerdistil.teacher.flair import label as fl
from nerdistil.teacher.flair import model as fm
from nerdistil.teacher.flair import sentences as fs

CORPUS = Path(__file__).parent / "data" / "corpus"


def _probs(folder: Path, split: str = "test") -> list[np.ndarray]:
    ds = softlabels.load(folder / "soft_labels")
    return [np.asarray(r["probs"]) for r in ds[split].with_format("numpy")]


def test_averaged_posteriors_still_sum_to_one():
    rng = np.random.default_rng(0)
    members = [rng.dirichlet(np.ones(7), size=11).astype(np.float32) for _ in range(5)]
    avg = average(members)
    assert avg.shape == (11, 7) and avg.dtype == np.float32
    np.testing.assert_allclose(avg.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(avg, np.mean(members, axis=0), atol=1e-7)
    np.testing.assert_allclose(average([members[0]]), members[0])


def test_ensemble_decoding_is_valid_bio():
    labels = ["O", "B-person", "I-person", "B-loc", "I-loc"]
    # per-word argmax would give O I-person I-person: an invalid start; the decoder repairs it to B I
    probs = np.array([[0.9, 0.05, 0.03, 0.01, 0.01], [0.3, 0.25, 0.4, 0.0, 0.05], [0.2, 0.1, 0.6, 0.05, 0.05]])
    assert decode_posteriors(probs, labels) == ["O", "B-person", "I-person"]
    confident = np.eye(5)[[1, 2, 0, 3, 4]] * 0.96 + 0.008
    assert decode_posteriors(confident, labels) == ["B-person", "I-person", "O", "B-loc", "I-loc"]


def test_ensemble_of_identical_members_equals_the_member(tiny_teacher, cli, tmp_path):
    member = tiny_teacher / "teacher.pt"
    code, stdout, err = cli("teach", "--corpus", CORPUS, "--out", tmp_path / "one", "--teacher", member)
    assert code == 0, err
    code, stdout, err = cli("teach", "--corpus", CORPUS, "--out", tmp_path / "two", "--teacher", member,
                            "--teacher", member)  # fmt: skip
    assert code == 0, err
    assert "members (entity F1)" in stdout
    one, two = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("one", "two"))
    assert one["ensemble"] == 1 and two["ensemble"] == 2 and len(two["members"]) == 2
    assert two["members"][0]["scores"] == two["members"][1]["scores"] == one["members"][0]["scores"]
    for split in ("train", "test"):
        for p1, p2 in zip(_probs(tmp_path / "one", split), _probs(tmp_path / "two", split)):
            np.testing.assert_allclose(p2, p1, atol=1e-6)
    ds2 = softlabels.load(tmp_path / "two" / "soft_labels")
    labels = softlabels.label_names(ds2)
    # the ensemble's tags: the best valid BIO path through the members' mean T = 1 posteriors
    t1 = [lab.probs for lab in fl.label(fm.load_tagger(member), read_conll(CORPUS / "test.txt"), labels, 1.0)]
    for p1, r2 in zip(t1, ds2["test"].with_format("numpy")):
        assert [labels[k] for k in r2["teacher_tags"]] == decode_posteriors(p1, labels)


def test_trained_ensemble_stores_the_mean_of_its_members(cli, tmp_path):
    out = tmp_path / "ens"
    code, stdout, err = cli("teach", "--corpus", CORPUS, "--out", out, "--embeddings", "chars", "--epochs", "2",
                            "--ensemble", "2", "--seed", "3")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    files = [m["file"] for m in report["members"]]
    assert files == ["teacher.pt", "teacher_2.pt"] and [m["seed"] for m in report["members"]] == [3, 4]
    labels = report["labels"]
    test = read_conll(CORPUS / "test.txt")
    member_probs = []
    for f in files:
        assert trust.check(out / f) == trust.sha256(out / f)  # recorded: no --trust-teacher needed
        tagger = fm.load_tagger(out / f)
        member_probs.append([lab.probs for lab in fl.label(tagger, test, labels, report["temperature"])])
    assert not all(np.allclose(a, b) for a, b in zip(*member_probs))  # different seeds, different members
    for stored, a, b in zip(_probs(out), *member_probs):
        np.testing.assert_allclose(stored, (a + b) / 2, atol=1e-5)
        np.testing.assert_allclose(stored.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("spec", ["chars,minilm-all", "minilm-ft"])
def test_stacked_and_fine_tuned_teachers_load_back(spec, cli, tmp_path):
    out = tmp_path / "t"
    code, _, err = cli("teach", "--corpus", CORPUS, "--out", out, "--embeddings", spec, "--epochs", "1")
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert report["teacher"]["embeddings"] == spec
    tagger = fm.load_tagger(out / "teacher.pt")
    assert (tagger.use_rnn, tagger.embeddings.__class__.__name__) == (
        (True, "StackedEmbeddings") if "," in spec else (False, "TransformerWordEmbeddings")
    )
    test = read_conll(CORPUS / "test.txt")
    again = [lab.probs for lab in fl.label(tagger, test, report["labels"], report["temperature"])]
    for stored, fresh in zip(_probs(out), again):
        np.testing.assert_allclose(fresh, stored, atol=1e-5)


@pytest.mark.parametrize("spec", ["chars", "onehot,minilm-all"])
def test_stacked_embeddings_concatenate_in_the_same_order_after_loading(spec, tmp_path):
    """Regression: a loaded stack once put the one-hot part elsewhere in the word vector than in training."""
    import torch
    from flair.data import Dictionary
    from flair.data import Sentence as FlairSentence
    from flair.models import SequenceTagger

    train = read_conll(CORPUS / "train.txt")
    emb = fe.build_embeddings(spec, train, fs.to_flair(train))
    tags = Dictionary(add_unk=False)
    for t in ("O", "S-person", "B-person", "E-person", "I-person"):
        tags.add_item(t)
    tagger = SequenceTagger(hidden_size=8, embeddings=emb, tag_dictionary=tags, tag_type="ner", use_crf=True)
    tagger.save(tmp_path / "t.pt")
    loaded = SequenceTagger.load(tmp_path / "t.pt")
    words = [w for s in train[:3] for w in s.tokens][:12]
    vectors = []
    for model in (tagger, loaded):
        model.eval()
        sent = FlairSentence(words)
        with torch.no_grad():
            model.embeddings.embed([sent])
        vectors.append(torch.stack([tok.get_embedding(model.embeddings.get_names()) for tok in sent]))
    torch.testing.assert_close(vectors[1], vectors[0])


def test_any_transformer_folder_is_a_frozen_teacher_encoder_with_a_layer_choice(tiny_student):
    """`PATH@all` averages every layer of the user's model (here a tiny BERT folder), `PATH@-1` takes the last."""
    import torch
    from flair.data import Sentence as FlairSentence
    from transformers import AutoModel, AutoTokenizer

    words = ["obama", "visits", "london"]  # one subword each in the tiny WordPiece vocabulary
    tok = AutoTokenizer.from_pretrained(tiny_student)
    with torch.no_grad():
        hidden = AutoModel.from_pretrained(tiny_student)(
            **tok(words, is_split_into_words=True, return_tensors="pt"), output_hidden_states=True
        ).hidden_states  # embedding output + 2 layers
    word_ids = tok(words, is_split_into_words=True).word_ids()
    firsts = [word_ids.index(i) for i in range(len(words))]
    for suffix, expected in (("@all", torch.stack(hidden).mean(0)[0]), ("", hidden[-1][0])):
        emb = fe.build_embeddings(f"{tiny_student}{suffix}", [], [])
        assert emb.embedding_length == 32 and not emb.fine_tune
        emb.eval()
        sent = FlairSentence(words)
        emb.embed([sent])
        got = torch.stack([t.get_embedding() for t in sent])
        torch.testing.assert_close(got, expected[firsts], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("part", "message"),
    [("./no/such/model@all", "not a transformer folder"), ("roberta-large@last", "bad layers")],
)
def test_bad_transformer_parts_are_one_line_errors(part, message):
    from nerdistil.errors import UserError

    with pytest.raises(UserError, match=message):
        fe.transformer_part(part)
    assert fe.transformer_part("sentence-transformers/all-mpnet-base-v2@all") == (
        "sentence-transformers/all-mpnet-base-v2", "all")  # fmt: skip


def _split_zip(tmp_path, folder: str) -> tuple[list, str]:
    """A zip of folder/{config.json,sub/w.bin,desktop.ini} cut into three numbered pieces, and its SHA-256."""
    import hashlib
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{folder}/config.json", '{"model_type": "bert"}')
        z.writestr(f"{folder}/sub/w.bin", bytes(range(256)) * 40)
        z.writestr(f"{folder}/desktop.ini", "junk")
    data = buf.getvalue()
    cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
    pieces = []
    for k in range(3):
        p = tmp_path / "pkgs" / f"part{k}" / f"m.zip.00{k + 1}"  # pieces live in different packages
        p.parent.mkdir(parents=True)
        p.write_bytes(data[cut[k] : cut[k + 1]])
        pieces.append(p)
    return pieces[::-1], hashlib.sha256(data).hexdigest()  # given out of order: joined by name


def test_split_zip_is_joined_in_order_checked_and_unpacked_atomically(tmp_path):
    pieces, sha = _split_zip(tmp_path, "m")
    target = assets.unpack_split_zip(pieces, sha, "m", tmp_path / "cache" / "m")
    assert (target / "config.json").read_text() == '{"model_type": "bert"}'
    assert (target / "sub" / "w.bin").read_bytes() == bytes(range(256)) * 40
    assert not (target / "desktop.ini").exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m"]  # no temporary folder left

    from nerdistil.errors import UserError

    with pytest.raises(UserError, match="SHA-256"):
        assets.unpack_split_zip(pieces, "0" * 64, "m", tmp_path / "cache2" / "m")
    assert list((tmp_path / "cache2").iterdir()) == []  # nothing that looks finished


def test_mpnet_without_its_packages_is_a_one_line_error(tmp_path, monkeypatch):
    import importlib.metadata as md

    from nerdistil.errors import UserError

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(UserError, match=r"pip install 'nerdistil\[mpnet\]'"):
        assets.mpnet_path(tmp_path)


def _has_mpnet() -> bool:
    import importlib.metadata as md

    try:
        return all(md.distribution(n) for n in assets.MPNET_PARTS)
    except md.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _has_mpnet(), reason="the optional mpnet extra is not installed")
def test_mpnet_from_its_pypi_parts_loads_as_a_transformer(tmp_path):
    from transformers import AutoConfig

    path = assets.mpnet_path(tmp_path)
    cfg = AutoConfig.from_pretrained(path)
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size) == ("mpnet", 12, 768)
    assert assets.mpnet_path(tmp_path) == path  # the second call reuses the unpacked folder


def test_frozen_ensemble_embeds_each_sentence_once_and_labels_like_its_members(cli, tmp_path, monkeypatch):
    """Members on one frozen encoder share its word vectors, in training and labelling, with the same result."""
    from flair.embeddings import TransformerWordEmbeddings

    embedded = []
    original = TransformerWordEmbeddings._add_embeddings_internal

    def counting(self, sentences):
        embedded.append(len(sentences))
        return original(self, sentences)

    monkeypatch.setattr(TransformerWordEmbeddings, "_add_embeddings_internal", counting)
    counts = {}
    for n in (1, 2):
        embedded.clear()
        out = tmp_path / f"ens{n}"
        code, _, err = cli("teach", "--corpus", CORPUS, "--out", out, "--embeddings", "minilm-all", "--epochs", "2",
                           "--ensemble", n, "--seed", "5", "--vector-cache", "none")  # fmt: skip
        assert code == 0, err
        counts[n] = sum(embedded)
    distinct = {tuple(s.tokens) for split in ("train", "dev", "test") for s in read_conll(CORPUS / f"{split}.txt")}
    assert counts[2] == counts[1] == len(distinct)  # each distinct sentence once; a second member embeds nothing
    report = json.loads((tmp_path / "ens2" / "report.json").read_text())
    assert [m["seed"] for m in report["members"]] == [5, 6]
    test = read_conll(CORPUS / "test.txt")
    member_probs = []
    for m in report["members"]:  # each member relabelled alone, from its own file and its own encoder copy
        tagger = fm.load_tagger(tmp_path / "ens2" / m["file"])
        member_probs.append([lab.probs for lab in fl.label(tagger, test, report["labels"], report["temperature"])])
    assert not all(np.allclose(a, b) for a, b in zip(*member_probs))
    for stored, a, b in zip(_probs(tmp_path / "ens2"), *member_probs):
        np.testing.assert_allclose(stored, (a + b) / 2, atol=1e-5)


def test_share_embeddings_merges_only_identical_encoders(tiny_teacher):
    import copy

    first = fm.load_tagger(tiny_teacher / "teacher.pt")
    same, changed = copy.deepcopy(first), copy.deepcopy(first)
    with __import__("torch").no_grad():
        next(changed.embeddings.parameters()).add_(1.0)
    taggers = [first, same, changed]
    assert fe.share_embeddings(taggers) == 1
    assert same.embeddings is first.embeddings and changed.embeddings is not first.embeddings
    assert not fe.same_embeddings(fe.build_embeddings("minilm", [], []), fe.build_embeddings("minilm-all", [], []))


def test_cross_fit_labels_each_train_tweet_with_the_member_that_did_not_see_it(cli, tmp_path):
    from nerdistil.teacher.ensemble import train_folds

    out = tmp_path / "cf"
    code, _, err = cli("teach", "--corpus", CORPUS, "--out", out, "--embeddings", "minilm-all", "--epochs", "2",
                       "--ensemble", "2", "--cross-fit", "--seed", "7")  # fmt: skip
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    train, test = read_conll(CORPUS / "train.txt"), read_conll(CORPUS / "test.txt")
    folds = train_folds(len(train), 2, 7)
    assert sorted(set(folds)) == [0, 1] and abs(folds.count(0) - folds.count(1)) <= 1
    assert report["cross_fit"] and [m["train_sentences"] for m in report["members"]] == [folds.count(1),
                                                                                         folds.count(0)]  # fmt: skip
    taggers = [fm.load_tagger(out / m["file"]) for m in report["members"]]
    labels, t = report["labels"], report["temperature"]
    alone = [list(fl.label(tagger, train, labels, t)) for tagger in taggers]
    for i, stored in enumerate(_probs(out, "train")):
        np.testing.assert_allclose(stored, alone[folds[i]][i].probs, atol=1e-5)  # the held-out member only
    assert not all(np.allclose(a.probs, b.probs) for a, b in zip(*alone))
    held_out_tags = [alone[folds[i]][i].tags for i in range(len(train))]
    assert report["train_fit_f1"] == pytest.approx(entity_report([s.tags for s in train], held_out_tags)["f1"])
    both = [[lab.probs for lab in fl.label(tagger, test, labels, t)] for tagger in taggers]
    for stored, a, b in zip(_probs(out, "test"), *both):
        np.testing.assert_allclose(stored, (a + b) / 2, atol=1e-5)  # dev and test: the mean of every member


def test_cross_fit_needs_an_ensemble(cli, tmp_path):
    code, _, err = cli("teach", "--corpus", CORPUS, "--out", tmp_path / "x", "--embeddings", "chars", "--cross-fit")
    assert code == 2 and "--cross-fit" in err and "--ensemble 2" in err
