"""The loss core against values computed by hand with math/numpy (never the same torch call)."""

import math

import numpy as np
import pytest
import torch

from nerdistil.losses import class_weights, cosine_hidden, kd_kl, mse_logits, ner_loss, weighted_ce

LOGITS = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.5, 3.0, 0.0]]


def _log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _softmax(row):
    return [math.exp(v) for v in _log_softmax(row)]


# ---------------------------------------------------------------- weighted_ce


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.5]])
def test_weighted_ce_hand_value(weight):
    targets = [0, -100, 1]
    w = weight or [1.0, 1.0, 1.0]
    kept = [(row, y) for row, y in zip(LOGITS, targets) if y != -100]
    expected = sum(w[y] * -_log_softmax(row)[y] for row, y in kept) / len(kept)
    got = weighted_ce(
        torch.tensor(LOGITS),
        torch.tensor(targets),
        None if weight is None else torch.tensor(weight),
    )
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_divides_by_positions_not_weights():
    # torch's weighted "mean" divides by sum of weights; ours by the number of labelled positions
    targets = [2, 2, 2]
    w = [1.0, 1.0, 4.0]
    expected = sum(4.0 * -_log_softmax(row)[2] for row in LOGITS) / 3
    got = weighted_ce(torch.tensor(LOGITS), torch.tensor(targets), torch.tensor(w))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_ce_all_ignored_is_zero_with_grad():
    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = weighted_ce(logits, torch.tensor([-100, -100, -100]))
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None
    assert torch.all(logits.grad == 0)


def test_weighted_ce_custom_ignore_index():
    got = weighted_ce(torch.tensor(LOGITS), torch.tensor([1, 7, 7]), ignore_index=7)
    assert got.item() == pytest.approx(-_log_softmax(LOGITS[0])[1], rel=1e-6)


# ---------------------------------------------------------------- kd_kl


def _kd_expected(logits, probs, T, mask=None):
    rows = [(lo, p) for i, (lo, p) in enumerate(zip(logits, probs)) if mask is None or mask[i]]
    total = 0.0
    for lo, p in rows:
        log_q = _log_softmax([x / T for x in lo])
        total += sum(pk * (math.log(pk) - lq) for pk, lq in zip(p, log_q) if pk > 0)  # 0 log 0 = 0
    return T**2 * total / len(rows)


@pytest.mark.parametrize("T", [1.0, 2.0, 3.5])
def test_kd_kl_hand_value_with_zero_prob(T):
    probs = [[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]]
    expected = _kd_expected(LOGITS, probs, T)
    got = kd_kl(torch.tensor(LOGITS), torch.tensor(probs), temperature=T)
    assert math.isfinite(got.item())
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_kl_mask_excludes_positions():
    probs = [[0.7, 0.3, 0.0], [0.2, 0.5, 0.3], [0.0, 0.0, 1.0]]
    mask = [True, False, True]
    expected = _kd_expected(LOGITS, probs, 2.0, mask)
    got = kd_kl(torch.tensor(LOGITS), torch.tensor(probs), 2.0, torch.tensor(mask))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # garbage in the masked-out row changes nothing
    probs[1] = [5.0, -3.0, 9.0]
    again = kd_kl(torch.tensor(LOGITS), torch.tensor(probs), 2.0, torch.tensor(mask))
    assert again.item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kd_kl_identical_distributions_is_zero(T):
    probs = [_softmax([x / T for x in row]) for row in LOGITS]
    got = kd_kl(torch.tensor(LOGITS), torch.tensor(probs), temperature=T)
    assert abs(got.item()) < 1e-6


def test_kd_kl_empty_mask_is_zero_with_grad():
    logits = torch.tensor(LOGITS, requires_grad=True)
    got = kd_kl(logits, torch.full((3, 3), 1 / 3), 2.0, torch.zeros(3, dtype=torch.bool))
    assert got.item() == 0.0
    got.backward()
    assert torch.all(logits.grad == 0)


# ---------------------------------------------------------------- mse_logits, cosine_hidden


def test_mse_logits_hand_value_with_mask():
    s = np.array(LOGITS)
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = np.array([True, True, False])
    expected = ((s[mask] - t[mask]) ** 2).sum() / (mask.sum() * 3)
    got = mse_logits(torch.tensor(LOGITS), torch.tensor(t.tolist()), torch.tensor(mask.tolist()))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    full = ((s - t) ** 2).mean()
    assert mse_logits(torch.tensor(LOGITS), torch.tensor(t.tolist())).item() == pytest.approx(full, rel=1e-6)


def test_cosine_hidden_hand_value_with_mask():
    s = [[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [1.0, 2.0]]
    t = [[0.0, 1.0], [2.0, 2.0], [-3.0, -4.0], [7.0, 7.0]]
    mask = [True, True, True, False]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (math.hypot(*a) * math.hypot(*b))

    expected = sum(1 - cos(a, b) for a, b, m in zip(s, t, mask) if m) / 3  # (1 + 0 + 2) / 3
    assert expected == pytest.approx(1.0)
    got = cosine_hidden(torch.tensor(s), torch.tensor(t), torch.tensor(mask))
    assert got.item() == pytest.approx(expected, abs=1e-6)


def test_mse_and_cosine_empty_mask_are_zero():
    z = torch.zeros(2, dtype=torch.bool)
    x = torch.ones(2, 3, requires_grad=True)
    assert mse_logits(x, torch.zeros(2, 3), z).item() == 0.0
    assert cosine_hidden(x, torch.zeros(2, 3), z).item() == 0.0


# ---------------------------------------------------------------- class_weights


@pytest.mark.parametrize("power", [1.0, 0.5, 0.25])
def test_class_weights_balanced_formula_and_renormalisation(power):
    tags = [0] * 12 + [1] * 3 + [2] * 1 + [4] * 4  # class 3 absent
    num_labels = 5
    counts = np.bincount(tags, minlength=num_labels)
    present = np.flatnonzero(counts)
    n_samples, n_classes = len(tags), len(present)
    raw = {c: (n_samples / (n_classes * counts[c])) ** power for c in present}
    expected = np.array([raw.get(c, max(raw.values())) for c in range(num_labels)])
    expected /= sum(expected[c] * counts[c] / n_samples for c in range(num_labels))

    got = class_weights(tags, num_labels, power=power)
    assert got.dtype == torch.float32
    assert got.shape == (num_labels,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    # documented renormalisation: expected weight of a training word is 1
    assert float((got.numpy() * counts).sum() / n_samples) == pytest.approx(1.0, rel=1e-6)
    # absent class gets the largest weight (the rarest present class's)
    assert got[3].item() == pytest.approx(got.max().item())
    assert got[3].item() == pytest.approx(got[2].item())
    # rarer classes weigh more
    assert got[2] > got[1] > got[0]


def test_class_weights_power_zero_all_equal():
    got = class_weights([0, 0, 0, 1, 2, 2], 4, power=0.0)
    np.testing.assert_allclose(got.numpy(), np.ones(4), rtol=1e-6)


# ---------------------------------------------------------------- ner_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T, K = 2, 4, 3
    logits = torch.randn(B, T, K, generator=g)
    labels = torch.tensor([[-100, 0, 2, -100], [1, -100, -100, -100]])
    soft = torch.softmax(torch.randn(B, T, K, generator=g), -1)
    soft_mask = torch.tensor([[False, True, True, False], [True, False, True, False]])
    return logits, labels, soft, soft_mask


def test_ner_loss_combines_parts():
    logits, labels, soft, soft_mask = _batch()
    logits.requires_grad_(True)
    weight = torch.tensor([0.5, 1.0, 2.0])
    total, parts = ner_loss(logits, labels, soft, soft_mask, weights={"ce": 0.3, "kd": 0.7}, temperature=2.0,
                            weight=weight)  # fmt: skip
    assert set(parts) == {"ce", "kd"}
    assert all(isinstance(v, float) for v in parts.values())

    # parts against hand values over the flattened positions
    flat = logits.detach().reshape(-1, 3).tolist()
    lab = labels.reshape(-1).tolist()
    sp = soft.reshape(-1, 3).tolist()
    sm = soft_mask.reshape(-1).tolist()
    kept = [(row, y) for row, y in zip(flat, lab) if y != -100]
    ce = sum(weight[y].item() * -_log_softmax(row)[y] for row, y in kept) / len(kept)
    kd = _kd_expected(flat, sp, 2.0, sm)
    assert parts["ce"] == pytest.approx(ce, rel=1e-5)
    assert parts["kd"] == pytest.approx(kd, rel=1e-5)
    assert total.item() == pytest.approx(0.3 * parts["ce"] + 0.7 * parts["kd"], rel=1e-6)

    total.backward()
    assert logits.grad is not None
    assert logits.grad.abs().sum() > 0
    # positions with neither a gold label nor a teacher row get no gradient
    assert torch.all(logits.grad[0, 0] == 0) and torch.all(logits.grad[0, 3] == 0)
    assert torch.all(logits.grad[1, 3] == 0)


def test_ner_loss_no_kd_key_when_alpha_kd_zero():
    logits, labels, soft, soft_mask = _batch(1)
    logits.requires_grad_(True)
    total, parts = ner_loss(logits, labels, soft, soft_mask, weights={"ce": 1.0, "kd": 0.0}, temperature=2.0)
    assert set(parts) == {"ce"}
    assert total.item() == pytest.approx(parts["ce"], rel=1e-6)
    total.backward()
    assert logits.grad.abs().sum() > 0


def test_ner_loss_unknown_term_is_a_value_error():
    logits, labels, soft, soft_mask = _batch(1)
    with pytest.raises(ValueError, match="unknown NER loss term.*'kld'"):
        ner_loss(logits, labels, soft, soft_mask, weights={"ce": 1.0, "kld": 1.0}, temperature=1.0)


def test_ner_loss_new_term_is_one_function_and_one_entry(monkeypatch):
    from nerdistil import losses

    logits, labels, soft, soft_mask = _batch(4)
    monkeypatch.setitem(losses.NER_TERMS, "l2", lambda b: (b.logits**2).mean())
    total, parts = ner_loss(logits, labels, soft, soft_mask, weights={"ce": 0.5, "l2": 0.1}, temperature=1.0)
    assert set(parts) == {"ce", "l2"}
    assert parts["l2"] == pytest.approx(float((logits**2).mean()), rel=1e-6)
    assert total.item() == pytest.approx(0.5 * parts["ce"] + 0.1 * parts["l2"], rel=1e-6)


def test_kd_kl_has_no_default_temperature():
    import inspect

    assert inspect.signature(kd_kl).parameters["temperature"].default is inspect.Parameter.empty


def test_ner_loss_kd_only():
    logits, labels, soft, soft_mask = _batch(2)
    logits.requires_grad_(True)
    total, parts = ner_loss(logits, labels, soft, soft_mask, weights={"ce": 0.0, "kd": 1.0}, temperature=1.0)
    assert set(parts) == {"kd"}
    assert total.item() == pytest.approx(parts["kd"], rel=1e-6)
    total.backward()
    assert logits.grad.abs().sum() > 0


def test_reweighted_teacher_targets_hand_value():
    from nerdistil.losses import reweight_soft

    p = torch.tensor([[0.8, 0.15, 0.05], [0.0, 0.0, 0.0]])
    w = torch.tensor([0.5, 2.0, 4.0])
    T = 2.0
    raw = [0.8 * 0.5**0.5, 0.15 * 2.0**0.5, 0.05 * 4.0**0.5]
    want = [x / sum(raw) for x in raw]
    got = reweight_soft(p, w, T)
    assert got[0].tolist() == pytest.approx(want, rel=1e-6)
    assert got[1].tolist() == [0.0, 0.0, 0.0]  # an empty (masked) row stays empty
    assert reweight_soft(p, torch.ones(3), T)[0].tolist() == pytest.approx(p[0].tolist())


def test_ner_loss_kd_class_weights_use_the_reweighted_targets():
    from nerdistil.losses import reweight_soft

    logits, labels, soft, soft_mask = _batch(3)
    w = torch.tensor([0.5, 1.0, 3.0])
    _, parts = ner_loss(logits, labels, soft, soft_mask, weights={"kd": 1.0}, temperature=2.0, kd_weight=w)
    target = reweight_soft(soft.reshape(-1, 3), w, 2.0)
    expected = _kd_expected(logits.reshape(-1, 3).tolist(), target.tolist(), 2.0, soft_mask.reshape(-1).tolist())
    assert parts["kd"] == pytest.approx(expected, rel=1e-5)
    _, plain = ner_loss(logits, labels, soft, soft_mask, weights={"kd": 1.0}, temperature=2.0)
    assert plain["kd"] != pytest.approx(parts["kd"])
