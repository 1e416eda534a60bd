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
    # No chat template: the tiny model is trained on plain prompts, and the default prompt format
    # (chat template on when the tokenizer has one) keeps them plain. CHAT_TEMPLATE is for tests
    # that need a templated tokenizer.
    return fast


# --------------------------------------------------------------------------- tiny model


def make_tiny_model(
    out_dir: str | Path,
    *,
    hidden_size: int = 192,
    num_layers: int = 4,
    num_heads: int | None = None,
    intermediate_size: int | None = None,
    max_positions: int = 512,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised (seeded) Llama-style causal LM + the tiny tokenizer to out_dir.

    The directory is an ordinary Hugging Face model directory (config.json, model.safetensors,
    tokenizer files), loadable with AutoModelForCausalLM / AutoTokenizer.from_pretrained.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    num_heads = num_heads or max(1, hidden_size // 32)  # head_dim 32
    intermediate_size = intermediate_size or max(32, round(hidden_size * 8 / 3 / 32) * 32)  # SwiGLU ratio
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        head_dim=hidden_size // num_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def count_parameters(model_dir: str | Path) -> int:
    """Number of parameters of the model saved in model_dir (tied weights counted once)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- toy arithmetic task
#
# An expression tree is an int or (op, left, right). Solutions reduce one innermost operation per
# step; different valid reduction orders and wordings give the teacher answers.

Node = Any
_PREC = {"+": 1, "-": 1, "*": 2}
_FORMS = [
    "a + b * c", "a * b + c", "( a + b ) * c", "a * ( b + c )", "a + b + c",
    "a * b - c", "a + b - c", "a * b + c * d", "( a + b ) * ( c + d )",
]
_QUESTIONS = ["What is {e}?", "Compute {e}.", "Evaluate {e}.", "Find the value of {e}."]
# The easy variant (`make-toy-data --easy`): two operations without parentheses, operands 1..6. A
# short warm-up SFT gets the tiny model to a moderate accuracy there, which leaves self samples
# with mixed rewards (the signal GFT adds to SFT).
EASY_FORMS = ["a + b * c", "a * b + c", "a + b + c", "a * b - c", "a + b - c"]
EASY_TOY: dict[str, Any] = {"forms": EASY_FORMS, "max_operand": 6}


def _parse(tokens: list[str]) -> Node:
    """Recursive-descent parse of a tokenised expression with + - * and parentheses."""
    pos = 0

    def atom() -> Node:
        nonlocal pos
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            node = expr()
            pos += 1  # ")"
            return node
        return int(tok)

    def term() -> Node:
        nonlocal pos
        node = atom()
        while pos < len(tokens) and tokens[pos] == "*":
            pos += 1
            node = ("*", node, atom())
        return node

    def expr() -> Node:
        nonlocal pos
        node = term()
        while pos < len(tokens) and tokens[pos] in "+-":
            op = tokens[pos]
            pos += 1
            node = (op, node, term())
        return node

    return expr()


def _show(node: Node, parent_prec: int = 0, right: bool = False) -> str:
    if isinstance(node, int):
        return str(node)
    op, a, b = node
    prec = _PREC[op]
    text = f"{_show(a, prec)} {op} {_show(b, prec, right=True)}"
    needs = prec < parent_prec or (right and prec == parent_prec and parent_prec == 1)
    return f"( {text} )" if needs else text


def _apply(op: str, x: int, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def _reducible(node: Node, path: tuple = ()) -> list[tuple]:
    """Paths (left to right) of operations whose operands are both numbers."""
    if isinstance(node, int):
        return []
    _, a, b = node
    if isinstance(a, int) and isinstance(b, int):
        return [path]
    return _reducible(a, path + (1,)) + _reducible(b, path + (2,))


def _get(node: Node, path: tuple) -> Node:
    for i in path:
        node = node[i]
    return node


def _replace(node: Node, path: tuple, value: int) -> Node:
    if not path:
        return value
    parts = list(node)
    parts[path[0]] = _replace(node[path[0]], path[1:], value)
    return tuple(parts)


def _solve(node: Node, pick_last: bool = False) -> list[tuple[str, int, Node]]:
    """Reduce to a number; each step is (step text "4 * 2 = 8", value, remaining tree)."""
    steps = []
    while not isinstance(node, int):
        paths = _reducible(node)
        path = paths[-1] if pick_last else paths[0]
        op, x, y = _get(node, path)
        value = _apply(op, x, y)
        node = _replace(node, path, value)
        steps.append((f"{x} {op} {y} = {value}", value, node))
    return steps


def _left_to_right(tokens: list[str]) -> int | None:
    """The classic mistake: ignore precedence (None if the expression has parentheses)."""
    if "(" in tokens:
        return None
    value = int(tokens[0])
    for op, y in zip(tokens[1::2], tokens[2::2]):
        value = _apply(op, value, int(y))
    return value


def _is_eval_expression(expr: str) -> bool:
    """A fixed ~20% of all expressions are held out, whatever the seed (stable hash)."""
    import hashlib

    return int(hashlib.sha256(expr.encode()).hexdigest(), 16) % 5 == 0


def toy_example(rng: random.Random, max_operand: int = 9, wrong_teacher_p: float = 0.25,
                forms: list[str] | tuple[str, ...] | None = None) -> dict:
    """One toy row: prompt, worked expert solution, teacher solutions, ground truth.

    forms: expression templates (letters a-d are operands 1..max_operand); default: all of _FORMS.
    """
    forms = forms or _FORMS
    while True:
        form = rng.choice(forms)
        tokens = [str(rng.randint(1, max_operand)) if t in "abcd" else t for t in form.split()]
        tree = _parse(tokens)
        steps = _solve(tree)
        if all(v >= 0 for _, v, _ in steps):
            break
    expr = " ".join(tokens)
    answer = steps[-1][1]
    texts = [s for s, _, _ in steps]
    connectors = ["First"] + ["Then"] * (len(texts) - 1)
    expert = " ".join(f"{c} {s}." for c, s in zip(connectors, texts)) + f" The answer is \\boxed{{{answer}}}"
    alt = [s for s, _, _ in _solve(tree, pick_last=True)]  # another valid order when one exists
    teachers = [
        "We compute " + ", then ".join(alt) + f". So the answer is \\boxed{{{answer}}}",
        " ".join(f"Step {i + 1}: {s}." for i, s in enumerate(texts)) + f" \\boxed{{{answer}}}",
        " = ".join([expr] + [_show(rest) for _, _, rest in steps]) + f". The answer is \\boxed{{{answer}}}",
    ]
    wrong = _left_to_right(tokens)
    if rng.random() < wrong_teacher_p:
        if wrong is None or wrong == answer:
            wrong = answer + rng.choice([-1, 1]) * rng.randint(1, 3)
        teachers[rng.randrange(len(teachers))] = f"From left to right {expr} = {wrong}. The answer is \\boxed{{{wrong}}}"
    return {
        "prompt": rng.choice(_QUESTIONS).format(e=expr),
        "expert": expert,
        "teachers": teachers,
        "answer": str(answer),
        "expression": expr,
    }


def toy_examples(n: int, *, split: str = "train", seed: int = 0, **kw: Any) -> list[dict]:
    """n toy rows from the train or eval pool of expressions (the pools never overlap)."""
    rng = random.Random(f"{seed}-{split}")
    rows: list[dict] = []
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        row = toy_example(rng, **kw)
        expr = row["expression"]
        if _is_eval_expression(expr) != (split == "eval"):
            continue
        if expr in seen and attempts < 5 * n:  # prefer distinct problems while there are enough
            continue
        seen.add(expr)
        rows.append(row)
    return rows


def write_jsonl(rows: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


def make_toy_data(out_dir: str | Path, n_train: int = 2000, n_eval: int = 200, seed: int = 0, **kw: Any) -> dict[str, Path]:
    """Write out_dir/train.jsonl and out_dir/eval.jsonl (columns prompt/expert/teachers/answer)."""
    out = Path(out_dir)
    return {
        "train": write_jsonl(toy_examples(n_train, split="train", seed=seed, **kw), out / "train.jsonl"),
        "eval": write_jsonl(toy_examples(n_eval, split="eval", seed=seed, **kw), out / "eval.jsonl"),
    }


# --------------------------------------------------------------------------- warm-up SFT


def warmup_sft(
    model_dir: str | Path,
    train_path: str | Path,
    *,
    steps: int = 2000,
    lr: float = 2e-3,
    method: str = "sft",
    prompts_per_step: int = 16,
    seed: int = 0,
    work_dir: str | Path | None = None,
    sink: Any = None,
) -> Path:
    """Teach the tiny model the task: SFT on the expert answers (the `sft` baseline of our own
    trainer, cosine schedule), or with method="sft_mix" on the expert and the three teacher
    answers, then overwrite model_dir with the result.

    sft_mix is the warm-up to use before GFT: GFT trains on the teacher answers too, and after an
    expert-only warm-up their wordings are unlikely tokens (pi < tau) whose positive advantage
    DCR damps while the self samples' negative advantages act in full (accuracy falls).

    The tiny model first learns the answer template (~200 steps), then to copy the operands from
    the prompt (~500-800 steps), then the arithmetic; ~1,500-2,000 steps give a model whose
    self samples are right often enough for group advantages to carry signal.
    """
    import shutil
    import tempfile

    from gft_core.config import DataConfig, GFTConfig
    from gft_core.trainer import Trainer

    tmp = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="gft-warmup-"))
    cfg = GFTConfig(
        method=method, model_path=str(model_dir), output_dir=str(tmp),
        data=DataConfig(path=str(train_path), mapping="toy"),
        n_expert=1, n_teacher=3, lr=lr, lr_schedule="cosine", warmup_steps=min(20, steps // 10),
        prompts_per_step=prompts_per_step, micro_batch_size=prompts_per_step, max_steps=steps,
        max_response_len=96, seed=seed, kl_interval=0, checkpoint_interval=0, group_sample_count=0,
    )
    result = Trainer(cfg, sink=sink).train()
    for f in Path(result.final_dir).iterdir():
        shutil.copy2(f, Path(model_dir) / f.name)
    if not work_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(model_dir)


def make_tiny(out_dir: str | Path, *, warmup_steps: int = 0, warmup_data: str | Path | None = None,
              warmup_method: str = "sft", warmup_lr: float = 2e-3, seed: int = 0, sink: Any = None,
              **model_kw: Any) -> Path:
    """make_tiny_model, then (if warmup_steps) a warm-up SFT on warmup_data (a toy train.jsonl;
    default: freshly generated toy train rows)."""
    import tempfile

    out = make_tiny_model(out_dir, seed=seed, **model_kw)
    if warmup_steps:
        with tempfile.TemporaryDirectory(prefix="gft-toy-") as tmp:
            path = Path(warmup_data) if warmup_data else write_jsonl(
                toy_examples(8000, split="train", seed=seed + 1), Path(tmp) / "train.jsonl")
            warmup_sft(out, path, steps=warmup_steps, lr=warmup_lr, method=warmup_method, seed=seed, sink=sink)
    return out
