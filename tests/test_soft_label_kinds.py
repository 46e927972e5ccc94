"""The three kinds of teacher soft labels: CRF posteriors, Flair's own all-class scores, hard labels."""

from pathlib import Path

import numpy as np
import pytest

from nerdistil import softlabels
from nerdistil.data.conll import read_conll
from nerdistil.errors import UserError
from nerdistil.teacher.crf import tag_projection
from nerdistil.teacher.flair import label as fl
from nerdistil.teacher.flair import model as fm
from nerdistil.teacher.flair import sentences as fsent

CORPUS = Path(__file__).parent / "data" / "corpus"


@pytest.fixture(scope="module")
def setup(tiny_teacher):
    tagger = fm.load_tagger(tiny_teacher / "teacher.pt")
    labels = softlabels.label_names(softlabels.load(tiny_teacher / "soft_labels"))
    return tagger, labels, read_conll(CORPUS / "test.txt")


def test_flair_kind_is_flairs_own_all_class_scores(setup):
    tagger, labels, sents = setup
    ours = [lab.probs for lab in fl.label(tagger, sents, labels, temperature=1.0, kind="flair")]
    flair_sents = fsent.to_flair(sents)
    tagger.predict(flair_sents, return_probabilities_for_all_classes=True, mini_batch_size=8)
    proj = tag_projection(fsent.teacher_tags(tagger), labels)
    index = {t: k for k, t in enumerate(fsent.teacher_tags(tagger))}
    for fs, mine in zip(flair_sents, ours):
        for token, row in zip(fs, mine):
            dist = np.zeros(len(index))
            for lab in token.get_tags_proba_dist(fsent.TAG_TYPE):
                dist[index[lab.value]] = lab.score
            want = dist @ proj
            np.testing.assert_allclose(row, want / want.sum(), atol=1e-5)
    # a temperature reshapes them as p^(1/T), renormalised
    warm = [lab.probs for lab in fl.label(tagger, sents, labels, temperature=2.0, kind="flair")]
    assert all(np.allclose(w.sum(-1), 1, atol=1e-5) for w in warm)
    entropy = [-(p * np.log(np.clip(p, 1e-12, None))).sum() for p in (ours[0], warm[0])]
    assert entropy[1] > entropy[0]


def test_hard_kind_is_the_one_hot_viterbi_path(setup):
    tagger, labels, sents = setup
    for lab in fl.label(tagger, sents, labels, temperature=2.0, kind="hard"):
        assert set(np.unique(lab.probs)) <= {0.0, 1.0}
        assert [labels[k] for k in lab.probs.argmax(-1)] == lab.tags


def test_unknown_kind_is_a_clear_error(setup):
    tagger, labels, sents = setup
    with pytest.raises(UserError, match="posterior, flair, hard"):
        next(fl.label(tagger, sents, labels, kind="logits"))


def test_batched_rows_equal_row_by_row_reads(tiny_teacher):
    """``softlabels.rows`` unpacks Arrow batches once; it must give exactly what the row format gives."""
    ds = softlabels.load(tiny_teacher / "soft_labels")
    for split in ds:  # train, dev, test and the unlabeled split (rows without gold tags)
        for part in (ds[split], ds[split].select(list(range(ds[split].num_rows))[::-1])):  # also an index mapping
            fast = list(softlabels.rows(part, batch_size=3))
            slow = list(part.with_format("numpy"))
            assert len(fast) == len(slow) > 0
            for a, b in zip(fast, slow):
                assert a["tokens"] == [str(t) for t in b["tokens"]] and a["has_gold"] == b["has_gold"]
                assert list(a["tags"]) == list(b["tags"]) and list(a["teacher_tags"]) == list(b["teacher_tags"])
                assert a["probs"].dtype == np.float32 and np.array_equal(a["probs"], np.stack(b["probs"]))
