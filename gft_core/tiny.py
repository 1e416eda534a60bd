"""Tiny model, tokenizer and toy arithmetic task, so that everything runs on a CPU in minutes.

- build_tokenizer(): a small BPE tokenizer built offline from a fixed vocabulary (no training, no
  download): single characters + whole words of the toy task + byte fallback, so any text encodes.
- make_tiny_model(out_dir): a Llama-style causal LM with a few million parameters, saved as an
  ordinary Hugging Face directory.
- make_toy_data(out_dir): multi-step arithmetic with worked solutions (the "toy" column preset).
- warmup_sft(model_dir, data): a short SFT so the tiny model starts producing answers.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPACE = "\u2581"  # "▁", the Metaspace marker for a leading space

# Whole words that get their own token; everything else falls back to characters, then bytes.
TOY_WORDS = [
    "What", "is", "Compute", "Calculate", "Evaluate", "Find", "the", "value", "of", "First",
    "Then", "Next", "Finally", "So", "the", "answer", "The", "We", "compute", "get", "gives",
    "and", "then", "so", "Step", "result", "multiply", "add", "subtract", "Multiply", "Add",
    "Subtract", "boxed", "Start", "with", "inside", "parentheses", "from", "left", "to", "right",
    "now", "Now", "which", "equals", "Therefore", "Answer", "Question", "step", "by",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)


def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A fixed vocabulary: specials, byte-fallback tokens, printable characters, then words.

    Each word w gets the left-to-right merges (w[:i], w[i]) -> w[:i+1], so BPE rebuilds it from
    characters; words are stored with and without the leading-space marker.
    """
    tokens = [PAD, BOS, EOS, UNK] + [f"<0x{b:02X}>" for b in range(256)]
    chars = [SPACE] + [c for c in string.printable if c not in " \t\n\r\x0b\x0c"] + ["\n"]
    tokens += chars
    merges: list[tuple[str, str]] = []
    seen = set(tokens)
    for word in dict.fromkeys(TOY_WORDS):
        for form in (SPACE + word, word):
            for i in range(1, len(form)):
                piece = form[: i + 1]
                if piece not in seen:
                    merges.append((form[:i], form[i]))
                    tokens.append(piece)
                    seen.add(piece)
    return {tok: i for i, tok in enumerate(tokens)}, merges


def build_tokenizer():
    """The tiny tokenizer as a `PreTrainedTokenizerFast` (savable with `save_pretrained`).

    Digits are split one per token (arithmetic is easier to learn), punctuation is isolated,
    unknown characters fall back to bytes, `<s>` is prepended to every encoded text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _vocab_and_merges()
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first", split=True),
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
    ])
    tok.decoder = decoders.Sequence([  # as Llama's: marker -> space, bytes -> chars, drop 1st space
        decoders.Replace(SPACE, " "),
        decoders.ByteFallback(),
        decoders.Fuse(),
        decoders.Strip(" ", 1, 0),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
