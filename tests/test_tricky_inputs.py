"""The tricky-file corpus (tests/data/tricky): each file works, or fails with one line naming file and line.

Valid files go through the teacher, a student and `evaluate`; the number of predicted tags must
always equal the number of words.
"""

from pathlib import Path

import pytest

from nerdistil.data.conll import read_conll
from nerdistil.errors import UserError

TRICKY = Path(__file__).parent / "data" / "tricky"
ERRORS = {  # file -> (needle in the message, line number or None)
    "empty.txt": ("no sentences", None),
    "blank_lines_only.txt": ("no sentences", None),
    "one_column.txt": ("column", 1),
    "invalid_utf8.txt": ("invalid UTF-8", 4),
    "tag_outside_scheme.txt": ("'VERB'", 2),
    "i_after_o.txt": ("--repair-tags", 2),
    "form_feed_line.txt": ("expected 2 columns", 3),  # a form feed alone is a line of text, not a blank line
    "invalid_utf8_old_mac.txt": ("invalid UTF-8", 4),  # \r line ends count as lines
}
VALID = sorted(p.name for p in TRICKY.iterdir() if p.is_file() and p.name not in ERRORS)  # configs/: bad settings


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_bad_files_fail_with_one_line(name, cli, tiny_distilled):
    needle, line = ERRORS[name]
    with pytest.raises(UserError) as e:
        read_conll(TRICKY / name)
    msg = str(e.value)
    assert needle in msg and name in msg and "\n" not in msg
    if line:
        assert f"{name}:{line}:" in msg
    code, out, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / name)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_repair_is_opt_in_and_warns(cli, tiny_distilled, caplog):
    (s,) = read_conll(TRICKY / "i_after_o.txt", repair=True)
    assert s.tags == ["O", "B-person", "O"]
    code, out, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / "i_after_o.txt", "--repair-tags")
    assert code == 0


@pytest.mark.parametrize("name", VALID)
def test_valid_files_lose_no_word(name, tiny_teacher, tiny_distilled, cli, tmp_path):
    import json

    from nerdistil import softlabels
    from nerdistil.teacher.flair import label as fl
    from nerdistil.teacher.flair import model as fm

    sents = read_conll(TRICKY / name)
    assert all(len(s.tokens) == len(s.tags) > 0 for s in sents)
    labels = softlabels.label_names(softlabels.load(tiny_teacher / "soft_labels"))
    tagger = fm.load_tagger(tiny_teacher / "teacher.pt")
    from nerdistil.data.conll import Sentence

    words_only = [Sentence(s.tokens) for s in sents]
    for sent, lab in zip(sents, fl.label(tagger, words_only, labels)):
        assert lab.probs.shape == (len(sent.tokens), len(labels)) and len(lab.tags) == len(sent.tokens)
    code, out, err = cli("evaluate", tiny_distilled, "--corpus", TRICKY / name, "--json", tmp_path / "r.json")
    assert code == 0, err  # label_set_mismatch.txt too: gold types the student lacks score as misses
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_words"] == sum(len(s.tokens) for s in sents)


def test_label_set_mismatch_with_a_teacher_lists_both_sets(tiny_teacher, cli, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "train.txt").write_text((TRICKY / "label_set_mismatch.txt").read_text())
    code, _, err = cli("teach", "--corpus", corpus, "--out", tmp_path / "o", "--teacher", tiny_teacher / "teacher.pt")
    assert code == 2 and "B-film" in err and "B-person" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob(".o*"))  # no partial folder left behind by a user error
