"""What the faster teacher training keeps (issue 15): Flair's CRF loss and decoding with int lengths, bitwise."""

import contextlib
from pathlib import Path

import pytest
import torch

from nerdistil.teacher.flair import model as fm

CORPUS = Path(__file__).parent / "data" / "corpus"


def viterbi_loss():
    """Flair's CRF loss over the BIOES tags of two entity types, as a tagger makes it."""
    from flair.data import Dictionary
    from flair.models.sequence_tagger_utils.viterbi import ViterbiLoss

    tags = Dictionary(add_unk=False)
    for t in ("O", *(f"{p}-{e}" for e in ("person", "loc") for p in "SBIE"), "<START>", "<STOP>"):
        tags.add_item(t)
    return ViterbiLoss(tags)


@pytest.mark.parametrize("lengths", [[7, 5, 5, 2, 1], [4, 4, 4], [1], [9]])
def test_the_loss_and_its_gradients_are_flairs_bitwise(lengths):
    loss = viterbi_loss()
    k = loss.tagset_size
    gen = torch.Generator().manual_seed(sum(lengths))
    features = torch.randn(len(lengths), max(lengths), k, k, generator=gen) * 3
    transitions = torch.randn(k, k, generator=gen)
    targets = torch.randint(0, k - 2, (sum(lengths),), generator=gen)  # real tags, not START or STOP
    got = []
    for fn in (loss.forward, lambda *a: fm._viterbi_loss(loss, *a)):
        f, tr = features.clone().requires_grad_(), transitions.clone().requires_grad_()
        value = fn((f, torch.tensor(lengths), tr), targets.clone())
        value.backward()
        got.append((value.detach(), f.grad, tr.grad))
    (v1, f1, t1), (v2, f2, t2) = got
    assert torch.equal(v1, v2) and torch.equal(f1, f2) and torch.equal(t1, t2)


def test_the_change_lives_only_while_training(tiny_teacher):
    """Set on the loss and decoder objects for the ``with`` block, gone after it (and after an error)."""
    tagger = fm.load_tagger(tiny_teacher / "teacher.pt")
    flair_forward, flair_decode = tagger.loss_function.forward, tagger.viterbi_decoder.decode
    with pytest.raises(RuntimeError, match="stop"), fm.int_lengths_crf(tagger):
        assert tagger.loss_function.forward is not flair_forward
        assert tagger.viterbi_decoder.decode is not flair_decode
        raise RuntimeError("stop")
    assert "forward" not in vars(tagger.loss_function) and "decode" not in vars(tagger.viterbi_decoder)
    assert tagger.loss_function.forward == flair_forward and tagger.viterbi_decoder.decode == flair_decode


def test_a_teacher_trains_bitwise_as_with_flairs_own_loss_and_decoding(tmp_path, monkeypatch):
    """A whole ``teach`` (3 epochs, dev scored each epoch, the best kept): the same weights and soft labels."""
    from nerdistil import softlabels
    from nerdistil.cli import main

    calls = {"loss": 0, "decode": 0}  # the patched run must really take the int-lengths loss and host decoding
    loss, decode = fm._viterbi_loss, fm.host_viterbi
    monkeypatch.setattr(fm, "_viterbi_loss", lambda *a: calls.__setitem__("loss", calls["loss"] + 1) or loss(*a))
    monkeypatch.setattr(fm, "host_viterbi", lambda *a: calls.__setitem__("decode", calls["decode"] + 1) or decode(*a))

    def teach(out, patched):
        if not patched:
            monkeypatch.setattr(fm, "int_lengths_crf", lambda tagger: contextlib.nullcontext())
        with pytest.raises(SystemExit) as e:
            main(["teach", "--corpus", str(CORPUS), "--out", str(out), "--embeddings", "chars", "--epochs", "3",
                  "--seed", "4"])  # fmt: skip
        assert e.value.code in (0, None)
        return torch.load(out / "teacher.pt", map_location="cpu", weights_only=False)["state_dict"]

    ours = teach(tmp_path / "ours", True)
    assert calls["loss"] > 0 and calls["decode"] > 0
    flairs = teach(tmp_path / "flairs", False)
    assert ours.keys() == flairs.keys() and all(torch.equal(ours[k], flairs[k]) for k in ours)
    a, b = softlabels.load(tmp_path / "ours" / "soft_labels"), softlabels.load(tmp_path / "flairs" / "soft_labels")
    for split in ("train", "dev", "test"):
        assert a[split]["probs"] == b[split]["probs"]
