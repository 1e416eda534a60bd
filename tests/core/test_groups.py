"""Group building (counts, EOS, truncation, group ids) and group advantages (docs/GFT.md sections 2, 4)."""

import math
import statistics

import pytest
import torch

from gft_core.data import Example
from gft_core.groups import Group, Response, group_advantages, off_policy_responses
from gft_core.methods import SOURCES
from gft_core.tiny import build_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def example(n_teachers: int = 3) -> Example:
    return Example(
        prompt="What is 2+3?",
        expert="2+3=5. The answer is 5.",
        teachers=[f"Teacher {k}: 2+3 is 5." for k in range(n_teachers)],
        ground_truth="5",
        row=1,
    )


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


# --- off-policy responses --------------------------------------------------------------------

def test_counts_and_order_expert_first_then_teachers(tok):
    ex = example(3)
    rs = off_policy_responses(ex, tok, n_expert=1, n_teacher=2, max_response_len=64)
    assert [r.source for r in rs] == ["expert", "teacher", "teacher"]
    assert [r.text for r in rs] == [ex.expert, ex.teachers[0], ex.teachers[1]]  # dataset order
    assert all(r.source in SOURCES for r in rs)


@pytest.mark.parametrize("n_expert, n_teacher, expected", [(0, 3, 3), (1, 0, 1), (0, 0, 0), (1, 3, 4)])
def test_counts_per_source(tok, n_expert, n_teacher, expected):
    rs = off_policy_responses(example(3), tok, n_expert=n_expert, n_teacher=n_teacher, max_response_len=64)
    assert len(rs) == expected
    assert sum(r.source == "expert" for r in rs) == n_expert
    assert sum(r.source == "teacher" for r in rs) == n_teacher


def test_row_with_fewer_answers_gives_a_smaller_group(tok):
    ex = example(1)
    ex.expert = None
    rs = off_policy_responses(ex, tok, n_expert=1, n_teacher=3, max_response_len=64)
    assert [r.source for r in rs] == ["teacher"]


def test_eos_appended(tok):
    ex = example(1)
    rs = off_policy_responses(ex, tok, n_expert=1, n_teacher=1, max_response_len=64)
    for r, text in zip(rs, [ex.expert, ex.teachers[0]]):
        assert r.token_ids == ids(tok, text) + [tok.eos_token_id]
        assert not r.truncated
        assert r.token_ids.count(tok.eos_token_id) == 1


def test_exact_fit_keeps_eos(tok):
    ex = example(0)
    n = len(ids(tok, ex.expert)) + 1  # text + EOS fills the budget exactly
    (r,) = off_policy_responses(ex, tok, n_expert=1, n_teacher=0, max_response_len=n)
    assert len(r.token_ids) == n and r.token_ids[-1] == tok.eos_token_id and not r.truncated


@pytest.mark.parametrize("cut", [1, 2])
def test_truncation_counts_eos_and_drops_it(tok, cut):
    ex = example(0)
    text_ids = ids(tok, ex.expert)
    max_len = len(text_ids) + 1 - cut  # one token too few (cut=1): text fits, EOS does not
    (r,) = off_policy_responses(ex, tok, n_expert=1, n_teacher=0, max_response_len=max_len)
    assert r.truncated
    assert len(r.token_ids) == max_len
    assert r.token_ids == text_ids[:max_len]
    assert tok.eos_token_id not in r.token_ids
    assert r.text == tok.decode(text_ids[:max_len], skip_special_tokens=True)


def test_bad_max_len(tok):
    with pytest.raises(ValueError, match="max_response_len"):
        off_policy_responses(example(), tok, n_expert=1, n_teacher=0, max_response_len=0)


def test_group_holds_responses(tok):
    ex = example(3)
    g = Group(group_id=7, prompt=ex.prompt, prompt_ids=ids(tok, ex.prompt), ground_truth=ex.ground_truth)
    g.responses += off_policy_responses(ex, tok, n_expert=1, n_teacher=3, max_response_len=64)
    g.responses.append(Response(source="self", text="5", token_ids=ids(tok, "5") + [tok.eos_token_id]))
    assert [r.source for r in g.responses] == ["expert"] + ["teacher"] * 3 + ["self"]
    assert g.group_id == 7


# --- group advantages ------------------------------------------------------------------------

def test_advantages_by_hand_two_groups():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    group_ids = torch.tensor([0, 0, 0, 0, 5, 5, 5])  # ids need not be contiguous
    adv = group_advantages(rewards, group_ids)
    # group 0: mean 0.5, sample std sqrt(1/3); group 5: mean 2/3, sample std sqrt(1/3)
    s = math.sqrt(1 / 3)
    expected = [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, (1 / 3) / s, (-2 / 3) / s, (1 / 3) / s]
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_advantages_match_statistics_module():
    rewards = [0.3, 1.2, -0.7, 2.0, 0.1, 0.9]
    group_ids = [2, 1, 2, 1, 2, 1]  # interleaved groups
    adv = group_advantages(rewards, group_ids, eps=1e-6)
    for g in (1, 2):
        members = [i for i, gid in enumerate(group_ids) if gid == g]
        rs = [rewards[i] for i in members]
        mu, sd = statistics.mean(rs), statistics.stdev(rs)  # stdev: n - 1 denominator
        for i in members:
            assert adv[i].item() == pytest.approx((rewards[i] - mu) / (sd + 1e-6), rel=1e-5)


def test_advantages_keep_float_dtype_and_accept_int_rewards():
    adv64 = group_advantages(torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0, 0]))
    assert adv64.dtype == torch.float64
    assert group_advantages(torch.tensor([1, 0]), torch.tensor([0, 0])).dtype == torch.float32


def test_advantages_without_std_normalisation():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), torch.tensor([0, 0, 0, 0]), normalize_std=False)
    torch.testing.assert_close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_zero_variance_group_gets_exact_zero():
    # 0.1 three times: the float mean is not exactly 0.1, the advantages must still be exactly 0
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0])
    adv = group_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]))
    assert adv[:3].tolist() == [0.0, 0.0, 0.0]
    assert adv[3] > 0 > adv[4]
    for normalize_std in (True, False):
        all_ones = group_advantages(torch.ones(4), torch.zeros(4, dtype=torch.long), normalize_std=normalize_std)
        assert all_ones.tolist() == [0.0] * 4


def test_group_of_one_keeps_raw_reward():
    adv = group_advantages(torch.tensor([0.7, 1.0, 0.0]), torch.tensor([3, 4, 4]))
    assert adv[0].item() == pytest.approx(0.7, rel=1e-5)  # authors' code: mean 0, std 1
    assert adv[1].item() == pytest.approx(0.5 / (math.sqrt(0.5) + 1e-6), rel=1e-5)  # mean 0.5, std sqrt(0.5)
    adv = group_advantages(torch.tensor([0.7]), torch.tensor([0]), normalize_std=False)
    assert adv.item() == pytest.approx(0.7)


def test_advantages_shape_mismatch():
    with pytest.raises(ValueError, match="same length"):
        group_advantages(torch.ones(3), torch.zeros(2, dtype=torch.long))
