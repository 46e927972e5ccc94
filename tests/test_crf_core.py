"""The package's one CRF (nerdistil.crf) against brute-force enumeration of every tag path."""

import itertools

import numpy as np
import pytest
import torch

from nerdistil.align import IGNORE
from nerdistil.crf import CrfHead, chain_potentials, forward_backward, path_score
from nerdistil.student.crf_loss import CrfBatch, nll_term, pair_term, posterior_term, word_view
from nerdistil.tags import bio_scores, bio_transitions, viterbi

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _random_chain(B, T, K, seed):
    g = torch.Generator().manual_seed(seed)
    emissions = torch.randn(B, T, K, generator=g, dtype=torch.float64) * 2
    trans = torch.randn(K, K, generator=g, dtype=torch.float64)
    start, end = torch.randn(K, generator=g, dtype=torch.float64), torch.randn(K, generator=g, dtype=torch.float64)
    return emissions, trans, start, end


def _enumerate(emissions, trans, start, end, n):
    """log Z, unary (n, K) and pair (n-1, K, K) marginals of one chain, by summing over all K^n paths."""
    K = emissions.shape[-1]
    scores, paths = [], list(itertools.product(range(K), repeat=n))
    for path in paths:
        s = start[path[0]] + emissions[0, path[0]] + end[path[-1]]
        s = s + sum(trans[path[t - 1], path[t]] + emissions[t, path[t]] for t in range(1, n))
        scores.append(float(s))
    scores = np.array(scores)
    log_z = np.logaddexp.reduce(scores)
    p = np.exp(scores - log_z)
    unary, pair = np.zeros((n, K)), np.zeros((max(n - 1, 0), K, K))
    for path, w in zip(paths, p):
        for t in range(n):
            unary[t, path[t]] += w
        for t in range(1, n):
            pair[t - 1, path[t - 1], path[t]] += w
    return log_z, unary, pair, scores, paths


@pytest.mark.parametrize("seed", range(4))
def test_marginals_partition_and_path_scores_match_enumeration(seed):
    B, T, K = 3, 4, 3
    emissions, trans, start, end = _random_chain(B, T, K, seed)
    lengths = [4, 2, 1]
    first, pair, end_ = chain_potentials(emissions, trans, start, end)
    chain = forward_backward(first, pair, end_, lengths, edges=True)
    for b, n in enumerate(lengths):
        log_z, unary, pairs, scores, paths = _enumerate(emissions[b], trans, start, end, n)
        assert float(chain.log_z[b]) == pytest.approx(log_z, abs=1e-9)
        np.testing.assert_allclose(chain.log_unary[b, :n].exp().numpy(), unary, atol=1e-9)
        np.testing.assert_allclose(chain.log_edge[b, : n - 1].exp().numpy(), pairs, atol=1e-9)
        assert torch.isinf(chain.log_unary[b, n:]).all() and torch.isinf(chain.log_edge[b, n - 1 :]).all()
        for path, s in list(zip(paths, scores))[:5]:  # the score of a path, padding ignored
            tags = torch.tensor([list(path) + [IGNORE] * (T - n)])
            got = path_score(first[b : b + 1], pair[b : b + 1], end_, tags, [n])
            assert float(got) == pytest.approx(s, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_is_the_best_enumerated_path(seed):
    emissions, trans, start, end = _random_chain(1, 5, 3, seed)
    _, _, _, scores, paths = _enumerate(emissions[0], trans, start, end, 5)
    best = list(paths[int(np.argmax(scores))])
    assert viterbi(emissions[0].numpy(), trans.numpy(), start.numpy(), end.numpy()) == best


def test_bio_viterbi_with_crf_scores_never_breaks_an_entity_and_uses_the_transitions():
    allowed = bio_transitions(LABELS)
    L = len(LABELS)
    logp = np.log(np.full((3, L), 1.0 / L))
    trans = np.zeros((L, L))
    trans[0, 3], trans[3, 4] = 5.0, 5.0  # O -> B-LOC -> I-LOC strongly preferred
    start = np.zeros(L)
    path = viterbi(logp, *bio_scores(allowed, (trans, start, np.zeros(L))))
    assert [LABELS[k] for k in path] == ["O", "B-LOC", "I-LOC"]
    trans[0, 4] = 50.0  # O -> I-LOC is forbidden whatever its learned score
    path = viterbi(logp, *bio_scores(allowed, (trans, start, np.zeros(L))))
    assert "I-LOC" not in [LABELS[path[t]] for t in range(3) if t == 0 or LABELS[path[t - 1]] == "O"]


def test_head_masks_forbidden_moves_and_its_nll_matches_enumeration():
    head = CrfHead(LABELS).double()
    with torch.no_grad():
        head.transitions.normal_()
        head.start.normal_()
        head.end.normal_()
    emissions = torch.randn(2, 3, len(LABELS), dtype=torch.float64)
    trans, start, end = (x.detach() for x in head.scores())
    assert float(start[2]) < -1e3 and float(trans[0, 2]) < -1e3
    assert float(trans[1, 2]) == float(head.transitions[1, 2].detach())
    tags = torch.tensor([[0, 1, 2], [3, 4, IGNORE]])
    lengths = torch.tensor([3, 2])
    b = CrfBatch(head, emissions, lengths, tags, torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.bool), 1.0)
    nll = nll_term(b)
    expected = 0.0
    for i, n in enumerate([3, 2]):
        log_z, *_, scores, paths = _enumerate(emissions[i], trans, start, end, n)
        expected -= scores[paths.index(tuple(tags[i, :n].tolist()))] - log_z
    assert float(nll.detach()) == pytest.approx(expected / 5, rel=1e-6)  # the head scores in float32


def test_posterior_and_pair_terms_are_zero_at_the_students_own_marginals_and_have_gradients():
    torch.manual_seed(0)
    head = CrfHead(LABELS)
    emissions = torch.randn(2, 4, len(LABELS), requires_grad=True)
    lengths = torch.tensor([4, 3])
    T = 2.0
    with torch.no_grad():
        chain = forward_backward(*head.potentials(emissions, T), lengths, edges=True)
    soft = chain.log_unary.exp()
    edges = torch.zeros(2, 4, 5, 5)
    edges[:, 1:] = chain.log_edge.exp()
    mask = torch.arange(4).unsqueeze(0) < lengths.unsqueeze(1)
    tags = torch.full((2, 4), IGNORE)
    b = CrfBatch(head, emissions, lengths, tags, soft, mask, T, soft_edges=edges)
    assert float(posterior_term(b).detach()) == pytest.approx(0.0, abs=1e-5)
    assert float(pair_term(b).detach()) == pytest.approx(0.0, abs=1e-5)
    other = CrfBatch(head, emissions, lengths, tags, torch.softmax(torch.randn(2, 4, 5), -1) * mask.unsqueeze(2),
                     mask, T, soft_edges=edges)  # fmt: skip
    loss = posterior_term(other) + pair_term(b)
    loss.backward()
    assert float(loss.detach()) > 0 and torch.isfinite(emissions.grad).all() and emissions.grad.abs().sum() > 0


def test_word_view_gathers_first_subwords_in_order():
    start = torch.tensor([[False, True, False, True, True], [False, True, True, False, False]])
    logits = torch.arange(10, dtype=torch.float32).view(2, 5, 1).expand(2, 5, 2)
    batch = {"word_start": start, "labels": torch.tensor([[IGNORE, 1, IGNORE, 0, 1], [IGNORE, 0, 1, IGNORE, IGNORE]]),
             "soft": torch.zeros(2, 5, 2), "soft_mask": start.clone()}  # fmt: skip
    view = word_view(batch, logits)
    assert view["lengths"].tolist() == [3, 2]
    assert view["emissions"][:, :, 0].tolist() == [[1, 3, 4], [6, 7, 5]]  # padding words: any position
    assert view["tags"].tolist() == [[1, 0, 1], [0, 1, IGNORE]]
    assert view["soft_mask"].tolist() == [[True, True, True], [True, True, False]]
