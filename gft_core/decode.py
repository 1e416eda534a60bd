"""Decode steps of Llama-family models, written out, for n samples that share each prompt's cache.

A decode step runs one token per row through the model. transformers' forward does that with
machinery a rollout does not need at every token: it builds an attention mask, recomputes the
rotary angles, goes through its cache object and its attention dispatch, once per token. On
small models and batches that Python work costs more than the matmuls (the tiny benchmark model
on CPU: ~3 of 5 ms per step). SharedPromptDecoder runs the same layers as the model's own
forward (its modules are called as they are: norms, projections, MLP, head; so are adapters
that wrap them) and keeps the rest minimal:

    h = embed(token)
    per layer:  x = norm1(h);  q, k, v = proj(x)  (+ per-head q/k norms on Qwen3);  rope(q, k)
                append k, v to the row's cache;  h += o_proj(attention(q, prompt cache, row cache))
                h += mlp(norm2(h))
    logits = lm_head(norm(h))

The rotary angles of every decode position are computed once per rollout. The attention is
shared_prompt_attention: row b = u * n + j attends to prompt u's keys and values (U rows,
filled by the model's own prefill forward) and its own generated tokens (B rows), with one
softmax over both, which is exactly attention over the concatenated cache; a prompt's keys are
read once per step for all its n samples (the idea of cascade / Hydragen attention).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache

# Architectures whose decoder layer is exactly the loop above: pre-norm, plain softmax(q k^T *
# scaling) v attention with rotary embeddings (no soft-capping, sinks, ALiBi), MLP, residuals.
PLAIN_ATTENTION_MODELS = frozenset({"llama", "mistral", "qwen2", "qwen3"})
# Rotary variants whose angles depend on the longest position seen (recomputed during a decode).
_SEQUENCE_DEPENDENT_ROPE = ("dynamic", "longrope")


def supports(net: Any, can_share_prefix: bool) -> bool:
    """Whether SharedPromptDecoder runs this model (can_share_prefix: every layer attends to all
    earlier positions, see rollout.can_share_prefix)."""
    config, body = net.config, getattr(net, "model", None)
    rotary = getattr(body, "rotary_emb", None)
    return (can_share_prefix and getattr(config, "model_type", None) in PLAIN_ATTENTION_MODELS
            and rotary is not None and hasattr(body, "layers") and hasattr(net, "lm_head")
            and not any(kind in str(getattr(rotary, "rope_type", "default")) for kind in _SEQUENCE_DEPENDENT_ROPE))


class SharedPromptDecoder:
    """Decode steps for B = U * n rows, rows u * n .. u * n + n - 1 sampling from prompt u.

    prompt_kv: the model's cache after its forward over the U left-padded prompts; prompt_mask
    (U, P): their attention mask; positions (B, steps): the position of each row's t-th decoded
    token. step(tokens, t) feeds token t of every row and returns the next-token logits (B, V).
    """

    def __init__(self, net: Any, prompt_kv: DynamicCache, prompt_mask: torch.Tensor, positions: torch.Tensor) -> None:
        self.net, self.body = net, net.model
        B, steps = positions.shape
        self.prompt = [(layer.keys, layer.values) for layer in prompt_kv.layers]
        self.prompt_pad = ~prompt_mask.bool()[:, None, None, :]  # (U, 1, 1, P), True at left padding
        k0 = self.prompt[0][0]
        self.kv_heads, self.head_dim = k0.shape[1], k0.shape[3]
        # Each row's own keys and values, in buffers sized for the whole decode.
        self.own = [(k.new_empty(B, k.shape[1], steps, k.shape[3]), v.new_empty(B, v.shape[1], steps, v.shape[3]))
                    for k, v in self.prompt]
        weight = self.body.embed_tokens.weight
        cos, sin = self.body.rotary_emb(weight[:1], positions)  # (B, steps, head_dim), dtype of the model
        self.cos, self.sin = cos[:, :, None, :], sin[:, :, None, :]

    def step(self, tokens: torch.Tensor, t: int) -> torch.Tensor:
        B = tokens.shape[0]
        h = self.body.embed_tokens(tokens)  # (B, hidden)
        cos, sin = self.cos[:, t], self.sin[:, t]  # (B, 1, head_dim): broadcast over heads
        for layer, (k_p, v_p), (k_own, v_own) in zip(self.body.layers, self.prompt, self.own):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(B, -1, self.head_dim)
            k = attn.k_proj(x).view(B, self.kv_heads, self.head_dim)
            v = attn.v_proj(x).view(B, self.kv_heads, self.head_dim)
            if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm of each head's query and key, before rope
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            k_own[:, :, t], v_own[:, :, t] = k, v
            o = shared_prompt_attention(q, k_p, v_p, self.prompt_pad, k_own[:, :, :t + 1], v_own[:, :, :t + 1],
                                        attn.scaling)
            h = h + attn.o_proj(o.reshape(B, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.net.lm_head(self.body.norm(h))


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half layout (as Llama's apply_rotary_pos_emb)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin


def shared_prompt_attention(q: torch.Tensor, k_p: torch.Tensor, v_p: torch.Tensor, prompt_pad: torch.Tensor,
                            k_own: torch.Tensor, v_own: torch.Tensor, scaling: float) -> torch.Tensor:
    """One decode step's attention, (B, H, D), for B = U * n rows: n samples of each of U prompts.

        out_b = softmax([q_b K_p[u]^T, q_b K_own[b]^T] * scaling) [V_p[u]; V_own[b]]

    q (B, H, D); k_p, v_p (U, H_kv, P, D): the prompts' cache, prompt_pad (U, 1, 1, P) True at
    their left padding; k_own, v_own (B, H_kv, t, D): each row's generated tokens. The prompt part
    is one matmul per prompt and KV head over the queries of all its samples and query heads
    sharing that KV head (grouped-query attention).
    """
    U, H_kv, P, D = k_p.shape
    B, H, _ = q.shape
    n, g = B // U, H // H_kv  # samples per prompt, query heads per KV head
    q_u = q.view(U, n, H_kv, g, D).transpose(1, 2).reshape(U, H_kv, n * g, D)
    s_p = (q_u @ k_p.transpose(-1, -2)).masked_fill_(prompt_pad, float("-inf"))  # (U, H_kv, n * g, P)
    s_p = s_p.view(U, H_kv, n, g, P).transpose(1, 2).reshape(B, H_kv, g, P)
    s_own = q.view(B, H_kv, g, D) @ k_own.transpose(-1, -2)  # (B, H_kv, g, t)
    probs = torch.softmax(torch.cat([s_p, s_own], -1) * scaling, -1, dtype=torch.float32).to(q.dtype)
    p_u = probs[..., :P].reshape(U, n, H_kv, g, P).transpose(1, 2).reshape(U, H_kv, n * g, P)
    out = (p_u @ v_p).view(U, H_kv, n, g, D).transpose(1, 2).reshape(B, H_kv, g, D)
    return (out + probs[..., P:] @ v_own).view(B, H, D)
