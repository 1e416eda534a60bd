"""The lean sampling loop of gft_core.rollout against transformers `generate`, and its sampler."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def model_and_tok(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _variant(tiny_model_dir, name):
    """The tiny Llama as saved (SDPA), with eager attention, a Qwen2 with grouped-query attention
    and linear rope scaling, a Qwen3 (per-head query/key norms), or a GPT-2 (an architecture
    decode.SharedPromptDecoder does not run: the model's own forward decodes it)."""
    from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, Qwen2Config,
                              Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    special = dict(vocab_size=len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                   bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    if name == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **special)
        return GPT2LMHeadModel(cfg).eval(), tok
    if name == "qwen2-gqa":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0},
                          **special)
        return Qwen2ForCausalLM(cfg).eval(), tok
    if name == "qwen3":
        cfg = Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=16, **special)
        model = Qwen3ForCausalLM(cfg).eval()
        with torch.no_grad():  # non-trivial norm weights, so that skipping them would show
            for layer in model.model.layers:
                layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
                layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
        return model, tok
    impl = {"llama-sdpa": "sdpa", "llama-eager": "eager"}[name]
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=impl).eval(), tok


def _prompts(tok):  # different lengths: left padding, attention_mask and position_ids matter
    return [tok(t)["input_ids"] for t in ("1+1", "What is 3 + 4 * 2?", "Compute (7 - 2) * 3 + 11, step by step")]


@pytest.mark.parametrize("variant", ["llama-sdpa", "llama-eager", "qwen2-gqa", "qwen3", "gpt2"])
@pytest.mark.parametrize("n", [1, 3])
def test_greedy_equals_transformers_generate(tiny_model_dir, variant, n):
    """Same tokens as `generate`, whether decode.SharedPromptDecoder runs the steps (Llama, Qwen2,
    Qwen3) or the model's own forward on a copy of the prompt cache per sample (GPT-2; the SDPA
    path passes its own 4-D masks)."""
    from gft_core import decode
    from gft_core.rollout import can_share_prefix, eos_ids, left_pad, sample_tokens

    model, tok = _variant(tiny_model_dir, variant)
    assert decode.supports(model, can_share_prefix(model)) == (variant != "gpt2")
    stop = eos_ids(model, tok)
    ids, mask = left_pad(_prompts(tok), tok.pad_token_id)
    ref = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=20,
                         pad_token_id=tok.pad_token_id, eos_token_id=stop)[:, ids.shape[1]:]
    ours = sample_tokens(model, ids, mask, n=n, max_new_tokens=20, temperature=0.0, top_p=1.0, stop_ids=stop,
                         pad_id=tok.pad_token_id, generator=None)
    assert torch.equal(ours, ref.repeat_interleave(n, 0)[:, :ours.shape[1]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_prompt_attention_is_attention_over_the_whole_cache(dtype):
    """Each sample's row attends to its prompt's cache (with its left padding) and its own tokens,
    as SDPA over the concatenated cache does; grouped-query heads included."""
    import torch.nn.functional as F

    from gft_core.decode import shared_prompt_attention

    torch.manual_seed(0)
    U, n, H, H_kv, P, t, D = 3, 4, 6, 2, 7, 5, 16
    B = U * n
    k_p, v_p = torch.randn(U, H_kv, P, D, dtype=dtype), torch.randn(U, H_kv, P, D, dtype=dtype)
    k_own, v_own = torch.randn(B, H_kv, t, D, dtype=dtype), torch.randn(B, H_kv, t, D, dtype=dtype)
    q = torch.randn(B, H, D, dtype=dtype)
    prompt_mask = torch.ones(U, P, dtype=torch.bool)
    prompt_mask[1, :3] = False  # left padding of the second prompt
    out = shared_prompt_attention(q, k_p, v_p, ~prompt_mask[:, None, None, :], k_own, v_own, D ** -0.5)

    def full(x_p, x_own):  # (B, H, P + t, D): each row's prompt copy then its tokens, KV heads repeated
        return torch.cat([x_p.repeat_interleave(n, 0), x_own], 2).repeat_interleave(H // H_kv, 1)

    mask = torch.cat([prompt_mask.repeat_interleave(n, 0), torch.ones(B, t, dtype=torch.bool)], 1)[:, None, None, :]
    ref = F.scaled_dot_product_attention(q[:, :, None].float(), full(k_p, k_own).float(), full(v_p, v_own).float(),
                                         attn_mask=mask)
    assert out.shape == (B, H, D) and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref[:, :, 0], atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=0)


def test_samples_are_reproducible_and_stop_at_eos(model_and_tok):
    from gft_core.rollout import eos_ids, generate_samples

    model, tok = model_and_tok
    prompts = _prompts(tok)

    def run(seed, **kw):
        return generate_samples(model, tok, prompts, n=4, max_new_tokens=16, **kw,
                                generator=torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    tokens = lambda s: [[x.token_ids for x in ss] for ss in s]  # noqa: E731
    assert tokens(a) == tokens(b) != tokens(c)
    assert len(a) == 3 and all(len(ss) == 4 for ss in a)
    torch.manual_seed(5)  # no generator: one draw from the global RNG seeds it
    d = generate_samples(model, tok, prompts, n=4, max_new_tokens=16)
    torch.manual_seed(5)
    assert tokens(generate_samples(model, tok, prompts, n=4, max_new_tokens=16)) == tokens(d)
    stops = set(eos_ids(model, tok))
    for s in (x for ss in a for x in ss):
        assert 1 <= len(s.token_ids) <= 16
        assert s.truncated == (s.token_ids[-1] not in stops)
        assert not stops & set(s.token_ids[:-1])  # cut right after the first stop token
    assert model.training is False


def test_sampler_matches_the_nucleus_distribution():
    from gft_core.rollout import _sample

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, generator=g) * 2
    for temperature, top_p in ((1.0, 1.0), (0.7, 0.8)):
        p = torch.softmax(logits / temperature, -1)
        sp, idx = p.sort(descending=True)
        keep = (sp.cumsum(0) - sp) < top_p
        want = torch.zeros_like(p)
        want[idx[keep]] = sp[keep] / sp[keep].sum()
        draws = _sample(logits.expand(40_000, -1), temperature, top_p, g)
        got = torch.bincount(draws, minlength=50).float() / draws.numel()
        assert got[want == 0].sum() == 0
        assert (got - want).abs().max() < 0.01
    assert torch.equal(_sample(logits.expand(3, -1), 0.0, 1.0, g), logits.argmax().expand(3))
