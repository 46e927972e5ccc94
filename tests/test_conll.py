import logging

import pytest

from nerdistil.data.conll import (
    Sentence,
    bio_to_bioes,
    bioes_to_bio,
    detect_scheme,
    read_conll,
    write_conll,
)
from nerdistil.errors import UserError


def _write(tmp_path, text, name="f.txt", mode="w"):
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", newline="")
    return p


def test_reads_tabs_spaces_docstart_and_whitespace_separators(tmp_path):
    p = _write(tmp_path, "-DOCSTART- O\n\nObama B-person\nsmiles O\n\t\nin O\nParis\tB-geo-loc\n  \n")
    sents = read_conll(p)
    assert [s.tokens for s in sents] == [["Obama", "smiles"], ["in", "Paris"]]
    assert [s.tags for s in sents] == [["B-person", "O"], ["O", "B-geo-loc"]]
    assert sents[0].line == 3 and sents[1].line == 6


def test_columns_by_index(tmp_path):
    p = _write(tmp_path, "1 Obama NNP B-person\n2 smiles VBZ O\n")
    (s,) = read_conll(p, token_col=1, tag_col=3)
    assert s.tokens == ["Obama", "smiles"] and s.tags == ["B-person", "O"]
    (s,) = read_conll(p, token_col=1, tag_col=None)
    assert s.tags is None


def test_crlf_and_bom(tmp_path):
    p = _write(tmp_path, "\ufeffObama\tB-person\r\nsmiles\tO\r\n\r\nok\tO\r\n".encode())
    sents = read_conll(p)
    assert sents[0].tokens == ["Obama", "smiles"] and sents[1].tags == ["O"]


def test_roundtrip(tmp_path):
    sents = [Sentence(["a", "b"], ["B-x", "I-x"]), Sentence(["😀", "c"], ["O", "B-y"])]
    write_conll(tmp_path / "o.txt", sents)
    back = read_conll(tmp_path / "o.txt")
    assert [(s.tokens, s.tags) for s in back] == [(s.tokens, s.tags) for s in sents]


def test_bioes_detected_and_converted(tmp_path):
    p = _write(tmp_path, "New B-loc\nYork E-loc\nis O\nBob S-per\n")
    assert detect_scheme([["B-loc", "E-loc"]]) == "BIOES"
    (s,) = read_conll(p)
    assert s.tags == ["B-loc", "I-loc", "O", "B-per"]
    (s,) = read_conll(p, to_bio=False)
    assert s.tags == ["B-loc", "E-loc", "O", "S-per"]


def test_scheme_conversions_invert():
    bio = ["B-a", "I-a", "I-a", "O", "B-b", "B-b", "I-b", "O", "B-a"]
    bioes = bio_to_bioes(bio)
    assert bioes == ["B-a", "I-a", "E-a", "O", "S-b", "B-b", "E-b", "O", "S-a"]
    assert bioes_to_bio(bioes) == bio


@pytest.mark.parametrize(
    "text, needle, line",
    [
        ("", "no sentences", None),
        ("\n\t\n  \n", "no sentences", None),
        ("Obama\nsmiles\n", "column", 1),
        ("Obama B-person\nsmiles O extra\n", "expected 2 columns", 2),
        ("Obama B-person\nsmiles X-verb\n", "'X-verb'", 2),
        ("Obama B-person\nsmiles B-\n", "'B-'", 2),
        ("Obama O\nsmiles I-person\n", "--repair-tags", 2),
        ("Obama B-person\nParis I-geo\n", "'I-geo' follows 'B-person'", 2),
        ("New B-loc\nYork O\nBob S-per\n", "not closed", 2),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, text, needle, line):
    p = _write(tmp_path, text)
    with pytest.raises(UserError) as e:
        read_conll(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg
    if line is not None:
        assert f"{p}:{line}:" in msg


def test_invalid_utf8_names_line(tmp_path):
    p = _write(tmp_path, b"ok O\n\nbad\xff O\n")
    with pytest.raises(UserError, match=r"f.txt:3: invalid UTF-8"):
        read_conll(p)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_conll(tmp_path / "nope.txt")


def test_repair_only_when_asked(tmp_path, caplog):
    p = _write(tmp_path, "Obama O\nsmiles I-person\nBob B-x\nAl I-y\n")
    with caplog.at_level(logging.WARNING):
        (s,) = read_conll(p, repair=True)
    assert s.tags == ["O", "B-person", "B-x", "B-y"]
    assert "repaired 2" in caplog.text


def test_cli_error_is_one_line_exit_2(tmp_path, cli):
    bad = tmp_path / "c"
    bad.mkdir()
    _write(bad, "Obama O\nsmiles I-person\n", name="train.txt")
    code, out, err = cli("teach", "--corpus", bad, "--out", tmp_path / "o", "--embeddings", "chars")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "train.txt:2:" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o").exists()
