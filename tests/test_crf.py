import itertools

import numpy as np
import pytest
import torch

from nerdistil.errors import UserError
from nerdistil.teacher.crf import crf_marginals, project, tag_projection


def _random_crf(B, T, K, seed):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, K, generator=g) * 2
    transitions = torch.randn(K, K, generator=g) * 2  # [to, from]
    scores = emissions.unsqueeze(-1) + transitions.view(1, 1, K, K)  # Flair's layout
    return emissions, transitions, scores


def _brute_force(emissions, transitions, start, length):
    """p(y_t = k) by enumerating every tag path of one sentence."""
    K = emissions.shape[-1]
    log_w, paths = [], []
    for path in itertools.product(range(K), repeat=length):
        s = emissions[0, path[0]] + transitions[path[0], start]
        for t in range(1, length):
            s += emissions[t, path[t]] + transitions[path[t], path[t - 1]]
        s += transitions[start + 1, path[-1]]  # the STOP row (see stop index below)
        log_w.append(s.item())
        paths.append(path)
    w = np.exp(np.array(log_w) - max(log_w))
    w /= w.sum()
    marg = np.zeros((length, K))
    for p, path in zip(w, paths):
        for t, k in enumerate(path):
            marg[t, k] += p
    return marg


@pytest.mark.parametrize("seed", range(4))
def test_marginals_match_brute_force(seed):
    B, T, K = 3, 4, 5
    start, stop = 3, 4
    emissions, transitions, scores = _random_crf(B, T, K, seed)
    lengths = [4, 2, 3]
    marg = crf_marginals(scores, lengths, start, transitions[stop])
    for b, n in enumerate(lengths):
        expected = _brute_force(emissions[b], transitions, start, n)
        np.testing.assert_allclose(marg[b, :n].numpy(), expected, atol=1e-5)
        assert torch.all(marg[b, n:] == 0)


def test_rows_sum_to_one_and_single_word():
    _, transitions, scores = _random_crf(2, 6, 7, 11)
    marg = crf_marginals(scores, [6, 1], 5, transitions[6], temperature=2.0)
    np.testing.assert_allclose(marg[0].sum(-1).numpy(), np.ones(6), atol=1e-5)
    np.testing.assert_allclose(marg[1, 0].sum().item(), 1.0, atol=1e-6)


def test_temperature_raises_entropy():
    _, transitions, scores = _random_crf(1, 5, 6, 3)

    def entropy(T):
        m = crf_marginals(scores, [5], 4, transitions[5], temperature=T)[0]
        return -(m * m.clamp_min(1e-30).log()).sum(-1).mean().item()

    h = [entropy(T) for T in (0.5, 1.0, 2.0, 4.0)]
    assert h == sorted(h) and h[-1] > h[0] + 0.1


def test_temperature_equals_scaled_scores():
    _, transitions, scores = _random_crf(2, 4, 4, 5)
    a = crf_marginals(scores, [4, 3], 2, transitions[3], temperature=2.0)
    b = crf_marginals(scores / 2, [4, 3], 2, transitions[3] / 2)
    torch.testing.assert_close(a, b)


def test_bioes_to_bio_projection_sums_probabilities():
    teacher = ["O", "S-person", "B-person", "E-person", "I-person", "<START>", "<STOP>"]
    corpus = ["O", "B-person", "I-person"]
    proj = tag_projection(teacher, corpus)
    probs = torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.05, 0.1, 0.1]])
    out = project(probs, proj)
    # S+B -> B, E+I -> I, START/STOP dropped, renormalised over the remaining 0.8
    torch.testing.assert_close(out, torch.tensor([[0.1, 0.5, 0.2]]) / 0.8)


def test_unknown_corpus_label_lists_both_sets():
    with pytest.raises(UserError) as e:
        tag_projection(["O", "S-person", "B-person", "E-person", "I-person"], ["O", "B-person", "I-person", "B-movie"])
    msg = str(e.value)
    assert "B-movie" in msg and "S-person" in msg and "\n" not in msg


def test_extra_teacher_type_counts_as_o():
    proj = tag_projection(["O", "S-person", "S-movie"], ["O", "B-person"])
    assert proj[2].tolist() == [1.0, 0.0]
