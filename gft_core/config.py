"""Run configuration: GFTConfig (+ DataConfig), loaded from YAML/JSON and validated up front.

Every invalid value raises ConfigError(field, value, message) before any model is loaded, so a
run that starts is a run that can train. Defaults follow GFT.md section 7 where they make sense
(lr, weight decay, clipping, group composition, temperature, eval settings); sizes default small
enough for a CPU (users of real models raise them: the paper uses 128 prompts per step, 256
sequences per optimizer step, 1,024 / 2,048 prompt / response tokens).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

METHODS: tuple[str, ...] = ("gft", "sft", "sft_mix", "dft", "grpo", "gft_no_dcr", "gft_no_gal")
LR_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")
MIXED_PRECISION: tuple[str, ...] = ("no", "fp16", "bf16")
LOSS_AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
DEFAULT_REWARD: dict[str, Any] = {"name": "math_verify", "params": {}}


class ConfigError(ValueError):
    """An invalid configuration value: names the field (dotted path) and the value."""

    def __init__(self, field: str, value: Any, message: str):
        self.field, self.value, self.message = field, value, message
        super().__init__(f"{field}: {message} (got {value!r})")


@dataclass
class DataConfig:
    """Where the prompts come from and how the columns map (a preset name or a ColumnMapping dict)."""

    path: str = ""
    mapping: Any = "toy"  # preset name (data.PRESETS) or a dict of ColumnMapping fields
    eval_path: str | None = None  # held-out file; else eval_fraction of `path` is held out
    eval_fraction: float = 0.0
    eval_mapping: Any = None  # defaults to `mapping`
    use_chat_template: bool = False
    limit: int | None = None  # read at most this many training rows


@dataclass
class GFTConfig:
    """Every setting of a run. See README "Configuration" for the meaning of each field."""

    # what to train, on what
    method: str = "gft"
    model_path: str = ""
    output_dir: str = "runs/gft"
    data: DataConfig = field(default_factory=DataConfig)
    reward: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REWARD))
    # the group (GFT.md section 2): paper main setting 1 expert + 3 teacher + 4 self
    n_expert: int = 1
    n_teacher: int = 3
    n_self: int = 4
    # GAL + DCR (sections 4-6); tau 0.1 (1.5B) / 0.3 (7B) in the authors' scripts
    tau: float = 0.3
    normalize_std: bool = True
    adv_eps: float = 1e-6
    loss_agg: str = "token-mean"
    # GRPO baseline
    clip_eps: float = 0.2
    kl_coef: float = 0.0
    # optimisation (section 7)
    lr: float = 1e-6
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 1.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    # batching: one rollout batch = prompts_per_step groups; it is split into optimizer steps of
    # sequences_per_update sequences (None = the whole rollout batch), each accumulated over
    # micro-batches of micro_batch_size sequences
    prompts_per_step: int = 16
    sequences_per_update: int | None = None
    micro_batch_size: int = 8
    max_prompt_len: int = 512
    max_response_len: int = 256
    # rollouts
    temperature: float = 1.0
    top_p: float = 1.0
    # length of the run: max_steps optimizer steps, else `epochs` passes over the prompts
    max_steps: int | None = None
    epochs: float = 1.0
    seed: int = 0
    # evaluation: mean accuracy over eval_samples samples at eval_temperature (0 = only at the end)
    eval_interval: int = 0
    eval_samples: int = 16
    eval_temperature: float = 0.5
    eval_max_prompts: int | None = 200
    eval_batch_size: int = 64
    # KL to the start model on a fixed probe set (expert answers of kl_probe_size prompts); 0 = off
    kl_interval: int = 10
    kl_probe_size: int = 16
    # checkpoints under output_dir/checkpoints/step-N (0 = only when stopped)
    checkpoint_interval: int = 50
    keep_checkpoints: int = 3
    save_final: bool = True
    mixed_precision: str = "no"
    # group inspector (issue 8): group_sample_count groups every group_sample_interval steps
    group_sample_interval: int = 10
    group_sample_count: int = 2

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GFTConfig":
        """Build from a plain dict (as read from YAML/JSON); unknown keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError("config", d, "expected a mapping of settings")
        known = {f.name for f in fields(cls)}
        for key in d:
            if key not in known:
                raise ConfigError(key, d[key], f"unknown setting; known: {', '.join(sorted(known))}")
        kwargs = dict(d)
        data = kwargs.get("data", {})
        if isinstance(data, DataConfig):
            pass
        elif isinstance(data, dict):
            dknown = {f.name for f in fields(DataConfig)}
            for key in data:
                if key not in dknown:
                    raise ConfigError(f"data.{key}", data[key], f"unknown setting; known: {', '.join(sorted(dknown))}")
            kwargs["data"] = DataConfig(**data)
        elif isinstance(data, str):  # shorthand: data: path/to/train.jsonl
            kwargs["data"] = DataConfig(path=data)
        else:
            raise ConfigError("data", data, "expected a mapping (path, mapping, eval_path, ...)")
        if "adam_betas" in kwargs and isinstance(kwargs["adam_betas"], list):
            kwargs["adam_betas"] = tuple(kwargs["adam_betas"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict that from_dict turns back into an equal config."""
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        mapping = self.data.mapping
        if dataclasses.is_dataclass(mapping):
            d["data"]["mapping"] = dataclasses.asdict(mapping)
        return json.loads(json.dumps(d, default=str))

    # ------------------------------------------------------------------ derived values

    def group_counts(self) -> dict[str, int]:
        """Responses per source for this method (the method decides which sources take part)."""
        counts = {"expert": self.n_expert, "teacher": self.n_teacher, "self": self.n_self}
        if self.method in ("sft", "dft"):
            counts.update(teacher=0, self=0)
        elif self.method == "sft_mix":
            counts.update(self=0)
        elif self.method == "grpo":
            counts.update(expert=0, teacher=0)
        return counts

    @property
    def group_size(self) -> int:
        return sum(self.group_counts().values())

    @property
    def sequences_per_rollout(self) -> int:
        return self.prompts_per_step * self.group_size

    @property
    def update_size(self) -> int:
        """Sequences per optimizer step."""
        return self.sequences_per_update or self.sequences_per_rollout

    @property
    def updates_per_rollout(self) -> int:
        return self.sequences_per_rollout // self.update_size

    @property
    def grad_accum_steps(self) -> int:
        return self.update_size // self.micro_batch_size

    @property
    def uses_self_samples(self) -> bool:
        return self.group_counts()["self"] > 0

    def reward_fn(self):
        """The reward function of `reward` (built once: a reward model loads its weights)."""
        key = json.dumps(self.reward, sort_keys=True, default=str)
        cached = self.__dict__.get("_reward_cache")
        if cached is None or cached[0] != key:
            from gft_core.rewards import build_reward

            cached = (key, build_reward(self.reward))
            self.__dict__["_reward_cache"] = cached
        return cached[1]

    # ------------------------------------------------------------------ validation

    def validate(self, *, check_paths: bool = True) -> "GFTConfig":
        """Raise ConfigError for the first invalid value; return self when all are valid.

        Checks types and ranges, batch divisibility, the model directory and data files (when
        check_paths), the column mapping, and the reward spec (built once through build_reward).
        """
        _one_of("method", self.method, METHODS)
        _one_of("loss_agg", self.loss_agg, LOSS_AGGREGATIONS)
        _one_of("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _one_of("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if not (_is_number(self.tau) and 0.0 < self.tau <= 1.0):
            raise ConfigError("tau", self.tau, "must be in (0, 1]")
        for name in ("n_expert", "n_teacher", "n_self"):
            _int_at_least(name, getattr(self, name), 0)
        self._validate_group()
        for name in ("prompts_per_step", "micro_batch_size", "max_prompt_len", "max_response_len",
                     "eval_samples", "eval_batch_size", "keep_checkpoints"):
            _int_at_least(name, getattr(self, name), 1)
        for name in ("warmup_steps", "eval_interval", "kl_interval", "kl_probe_size",
                     "checkpoint_interval", "group_sample_interval", "group_sample_count"):
            _int_at_least(name, getattr(self, name), 0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError("seed", self.seed, "must be an integer")
        self._validate_batches()
        _positive("lr", self.lr)
        _at_least("weight_decay", self.weight_decay, 0.0)
        _positive("max_grad_norm", self.max_grad_norm)
        _positive("adv_eps", self.adv_eps)
        _positive("clip_eps", self.clip_eps)
        _at_least("kl_coef", self.kl_coef, 0.0)
        if (not isinstance(self.adam_betas, (tuple, list)) or len(self.adam_betas) != 2
                or not all(_is_number(b) and 0.0 <= b < 1.0 for b in self.adam_betas)):
            raise ConfigError("adam_betas", self.adam_betas, "must be two numbers in [0, 1)")
        _positive("temperature", self.temperature)
        _positive("eval_temperature", self.eval_temperature)
        if not (_is_number(self.top_p) and 0.0 < self.top_p <= 1.0):
            raise ConfigError("top_p", self.top_p, "must be in (0, 1]")
        if self.max_steps is not None:
            _int_at_least("max_steps", self.max_steps, 1)
        elif not (_is_number(self.epochs) and self.epochs > 0):
            raise ConfigError("epochs", self.epochs, "must be > 0 (or set max_steps)")
        if self.eval_max_prompts is not None:
            _int_at_least("eval_max_prompts", self.eval_max_prompts, 1)
        for name in ("normalize_std", "save_final"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "must be true or false")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            raise ConfigError("output_dir", self.output_dir, "must be a non-empty path")
        self._validate_data(check_paths)
        self._validate_reward()
        if check_paths:
            _check_model_dir(self.model_path)
        return self

    def _validate_group(self) -> None:
        counts = self.group_counts()
        if self.group_size == 0:
            name = {"sft": "n_expert", "dft": "n_expert", "grpo": "n_self"}.get(self.method, "n_expert + n_teacher + n_self")
            raise ConfigError(name, counts, f"group size is 0 for method {self.method!r}; "
                                            "it needs at least one response per prompt")
        if self.method == "grpo" and self.n_self < 2:
            raise ConfigError("n_self", self.n_self, "grpo needs at least 2 self samples per prompt for a group advantage")

    def _validate_batches(self) -> None:
        rollout = self.sequences_per_rollout
        if self.sequences_per_update is not None:
            _int_at_least("sequences_per_update", self.sequences_per_update, 1)
            if rollout % self.sequences_per_update:
                raise ConfigError(
                    "sequences_per_update", self.sequences_per_update,
                    f"must divide the rollout batch of prompts_per_step x group size = "
                    f"{self.prompts_per_step} x {self.group_size} = {rollout} sequences")
        if self.update_size % self.micro_batch_size:
            raise ConfigError(
                "micro_batch_size", self.micro_batch_size,
                f"must divide the {self.update_size} sequences of one optimizer step "
                "(gradient accumulation steps = sequences_per_update / micro_batch_size)")

    def _validate_data(self, check_paths: bool) -> None:
        d = self.data
        if not isinstance(d.path, str) or not d.path:
            raise ConfigError("data.path", d.path, "a training data file is required")
        if check_paths and not Path(d.path).is_file():
            raise ConfigError("data.path", d.path, "no such file")
        if d.eval_path is not None and check_paths and not Path(d.eval_path).is_file():
            raise ConfigError("data.eval_path", d.eval_path, "no such file")
        if not (_is_number(d.eval_fraction) and 0.0 <= d.eval_fraction < 1.0):
            raise ConfigError("data.eval_fraction", d.eval_fraction, "must be in [0, 1)")
        if d.limit is not None:
            _int_at_least("data.limit", d.limit, 1)
        if not isinstance(d.use_chat_template, bool):
            raise ConfigError("data.use_chat_template", d.use_chat_template, "must be true or false")
        resolve_mapping(d.mapping, "data.mapping")
        if d.eval_mapping is not None:
            resolve_mapping(d.eval_mapping, "data.eval_mapping")

    def _validate_reward(self) -> None:
        from gft_core.rewards import RewardSpecError

        if not isinstance(self.reward, dict) or "name" not in self.reward:
            raise ConfigError("reward", self.reward, 'expected {"name": ..., "params": {...}}')
        try:
            self.reward_fn()
        except RewardSpecError as e:
            message = str(e).removeprefix(f"{e.field}={e.value!r}: ")
            raise ConfigError(e.field, e.value, message) from None


def resolve_mapping(mapping: Any, field_name: str = "data.mapping"):
    """A ColumnMapping from a preset name, a dict of its fields, or a ColumnMapping."""
    from gft_core.data import PRESETS, ColumnMapping

    if isinstance(mapping, ColumnMapping):
        return mapping
    if isinstance(mapping, str):
        if mapping not in PRESETS:
            raise ConfigError(field_name, mapping, f"unknown preset; known: {', '.join(sorted(PRESETS))}")
        return PRESETS[mapping]
    if isinstance(mapping, dict):
        try:
            return ColumnMapping(**mapping)
        except TypeError as e:
            raise ConfigError(field_name, mapping, f"not a valid column mapping ({e})") from None
    raise ConfigError(field_name, mapping, "expected a preset name or a mapping of columns")


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> GFTConfig:
    """Read a YAML or JSON config file into a GFTConfig (not yet validated: call .validate())."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config", str(path), "no such file")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            d = json.loads(text)
        else:
            import yaml

            d = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - any parse error is a config error
        raise ConfigError("config", str(path), f"cannot parse: {e}") from None
    d = d or {}
    if overrides:
        d = {**d, **overrides}
    return GFTConfig.from_dict(d)


# ---------------------------------------------------------------------- helpers


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, value, f"must be one of {', '.join(allowed)}")


def _int_at_least(name: str, value: Any, lo: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < lo:
        raise ConfigError(name, value, f"must be an integer >= {lo}")


def _positive(name: str, value: Any) -> None:
    if not (_is_number(value) and value > 0):
        raise ConfigError(name, value, "must be a number > 0")


def _at_least(name: str, value: Any, lo: float) -> None:
    if not (_is_number(value) and value >= lo):
        raise ConfigError(name, value, f"must be a number >= {lo}")


def _check_model_dir(path: Any) -> None:
    """A local Hugging Face model directory: config.json plus weights (no hub downloads)."""
    if not isinstance(path, str) or not path:
        raise ConfigError("model_path", path, "a local model directory is required")
    p = Path(path)
    if not p.is_dir():
        raise ConfigError("model_path", path, "no such directory")
    if not (p / "config.json").is_file():
        raise ConfigError("model_path", path, "not a Hugging Face model directory (no config.json)")
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.bin")) + list(p.glob("*.safetensors.index.json"))
    if not weights:
        raise ConfigError("model_path", path, "no model weights (*.safetensors or *.bin) in the directory")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ConfigError("model_path", path, "no tokenizer files in the directory")
