from nerdistil.data import wnut16
from nerdistil.data.conll import entity_types, read_conll


def test_bundled_data_is_complete():
    sents = wnut16.load()
    assert len(sents) == wnut16.N_TWEETS == 2394
    assert tuple(entity_types(sents)) == wnut16.ENTITY_TYPES


def test_split_is_deterministic_and_a_partition(tmp_path, cli):
    code, out, _ = cli("data", "wnut16", tmp_path / "d", "--seed", "13")
    assert code == 0 and "train 1915 tweets" in " ".join(out.split())
    parts = {n: read_conll(tmp_path / "d" / f"{n}.txt") for n in ("train", "dev", "test")}
    assert [len(v) for v in parts.values()] == [1915, 239, 240]
    key = [tuple(s.tokens) + tuple(s.tags) for v in parts.values() for s in v]
    everything = [tuple(s.tokens) + tuple(s.tags) for s in wnut16.load()]
    assert sorted(key) == sorted(everything)  # every tweet exactly once (as a multiset)
    again = wnut16.split(wnut16.load(), seed=13)
    assert [s.tokens for s in again["test"]] == [s.tokens for s in parts["test"]]
    other = wnut16.split(wnut16.load(), seed=14)
    assert [s.tokens for s in other["test"]] != [s.tokens for s in parts["test"]]
