"""Run configuration: GFTConfig (+ DataConfig), loaded from YAML/JSON and validated up front.

Every invalid value raises ConfigError(field, value, message) before any model is loaded, so a
run that starts is a run that can train. Defaults follow docs/GFT.md section 7 where they make sense
(lr, weight decay, clipping, group composition, temperature, eval settings); sizes default small
enough for a CPU (users of real models raise them: the paper uses 128 prompts per step, 256
sequences per optimizer step, 1,024 / 2,048 prompt / response tokens).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from gft_core.errors import ConfigError
from gft_core.fields import FieldSpec, check_value, config_diff, field_specs, is_number, setting
from gft_core.methods import METHODS as METHOD_TABLE
from gft_core.methods import Method, MethodNames, get_method

METHODS: tuple[str, ...] = MethodNames(METHOD_TABLE)  # the names, in launch-form order (the table: gft_core.methods)
LR_SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine")
MIXED_PRECISION: tuple[str, ...] = ("no", "fp16", "bf16")
LOSS_AGGREGATIONS: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")
LORA_EXPORTS: tuple[str, ...] = ("merged", "adapter")
DEFAULT_REWARD: dict[str, Any] = {"name": "math_verify", "params": {}}
MAX_INTERVAL = 1_000_000
MAX_SEED = 2**32 - 1
MAX_PROMPT_TEXT = 4000  # data.system_prompt / data.instruction_suffix

__all__ = ["ConfigError", "DataConfig", "FIELDS", "FieldSpec", "GFTConfig", "LAUNCH_FIELDS", "METHODS",
           "check_field", "config_diff", "load_config", "resolve_mapping"]


def _uses(source: str) -> Callable[[Method], bool]:
    return lambda m: source in m.sources


def _grpo(m: Method) -> bool:
    return m.uses_old_logprobs


# ---------------------------------------------------------------------- the configuration


@dataclass
class DataConfig:
    """Where the prompts come from and how the columns map (a preset name or a ColumnMapping dict)."""

    path: str = setting("", label="Training data", help="The training data file (JSONL, JSON, CSV or Parquet).")
    mapping: Any = "toy"  # preset name (data.PRESETS) or a dict of ColumnMapping fields
    eval_path: str | None = setting(None, label="Evaluation data", help="A held-out data file; else eval_fraction of the training file is held out.")
    eval_fraction: float = setting(0.0, min=0.0, max=1.0, max_exclusive=True,
                                   help="Share of training rows held out for evaluation (seeded by the run's seed), in [0, 1).")
    eval_mapping: Any = None  # defaults to `mapping`
    # the prompt format (gft_core.policy.PromptFormat): on by default as in the paper's code; a
    # tokenizer without a chat template (the built-in tiny model) gets the plain prompt
    use_chat_template: bool = setting(True, help="Wrap each prompt in the tokenizer's chat template when it has "
                                                 "one (else the plain prompt is used).")
    system_prompt: str = setting("", help="A system message before each prompt (the dataset's setting).")
    instruction_suffix: str = setting("", help="Text after each prompt on its own line, e.g. “Please reason step by "
                                               "step, and put your final answer within \\boxed{}.”")
    limit: int | None = setting(None, min=1, max=100_000_000, label="Row limit", help="Read at most this many training rows.")

    @property
    def prompt_format(self):
        """The PromptFormat every prompt of the run is encoded with."""
        from gft_core.policy import PromptFormat

        return PromptFormat(self.use_chat_template, self.system_prompt, self.instruction_suffix)


@dataclass
class GFTConfig:
    """Every setting of a run. See README "Configuration" for the meaning of each field."""

    # what to train, on what
    method: str = setting("gft", choices=METHODS, section="Run",
                          help="GFT or one of the baselines; all train through the same loop.")
    model_path: str = setting("", help="A local Hugging Face model directory.")
    output_dir: str = setting("runs/gft", help="Where checkpoints and the final model are written.")
    data: DataConfig = field(default_factory=DataConfig)
    reward: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REWARD))
    # the group (docs/GFT.md section 2): paper main setting 1 expert + 3 teacher + 4 self
    n_expert: int = setting(1, min=0, max=64, section="Group", label="Expert answers", used_by=_uses("expert"),
                            help="Expert (dataset) answers per prompt in each group; paper: 1.")
    n_teacher: int = setting(3, min=0, max=64, section="Group", label="Teacher answers", used_by=_uses("teacher"),
                             help="Teacher answers per prompt; at most what the dataset's rows offer. Paper: 3.")
    n_self: int = setting(4, min=0, max=256, section="Group", label="Self samples", used_by=_uses("self"),
                          help="Samples of the current policy per prompt; paper: 4.")
    # GAL + DCR (sections 4-6); tau 0.1 (1.5B) / 0.3 (7B) in the authors' scripts
    tau: float = setting(0.3, min=0.0, min_exclusive=True, max=1.0, section="Group", label="τ (DCR threshold)",
                         used_by=lambda m: m.uses_tau,
                         help="Tokens with probability below τ get their coefficient rectified; in (0, 1]. "
                              "Scripts: 0.1 (1.5B), 0.3 (7B).")
    normalize_std: bool = setting(True, help="Divide group advantages by the group's reward standard deviation.")
    adv_eps: float = setting(1e-6, min=0.0, min_exclusive=True, max=1.0,
                             label="Advantage ε", help="Added to the group's standard deviation in the advantage, > 0.")
    loss_agg: str = setting("token-mean", choices=LOSS_AGGREGATIONS, label="Loss aggregation",
                            help="How per-token losses reduce to one number.")
    # GRPO baseline
    clip_eps: float = setting(0.2, min=0.0, min_exclusive=True, max=10.0, used_by=_grpo,
                              label="GRPO clip ε",
                              help="GRPO's ratio clipping range, > 0.")
    kl_coef: float = setting(0.0, min=0.0, max=100.0, used_by=_grpo,
                             label="KL coefficient",
                             help="GRPO's KL penalty to the start model (0 = off).")
    # optimisation (section 7)
    lr: float = setting(1e-6, min=0.0, min_exclusive=True, max=1.0, section="Optimisation", label="Learning rate",
                        help="AdamW learning rate, > 0. Paper: 1e-6 constant; the tiny model needs a larger one.")
    weight_decay: float = setting(0.01, min=0.0, max=10.0, help="AdamW weight decay, >= 0.")
    adam_betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = setting(1.0, min=0.0, min_exclusive=True, max=1e6, label="Gradient clipping",
                                  help="Gradient clipping norm, > 0.")
    lr_schedule: str = setting("constant", choices=LR_SCHEDULES, section="Optimisation",
                               help="Learning-rate schedule after warm-up.")
    warmup_steps: int = setting(0, min=0, max=1_000_000, section="Optimisation",
                                help="Linear warm-up, optimizer steps (0 = none).")
    # batching: one rollout batch = prompts_per_step groups; it is split into optimizer steps of
    # sequences_per_update sequences (None = the whole rollout batch), each accumulated over
    # micro-batches of micro_batch_size sequences
    prompts_per_step: int = setting(16, min=1, max=8192, section="Optimisation",
                                    help="Prompts per rollout batch (each becomes one group). Paper: 128.")
    sequences_per_update: int | None = setting(None, min=1, max=8192 * 384, section="Optimisation",
                                               help="Sequences per optimizer step; must divide prompts × group size. "
                                                    "Blank = the whole rollout batch. Paper: 256.")
    micro_batch_size: int = setting(8, min=1, max=4096, section="Optimisation",
                                    help="Sequences per forward/backward pass (per GPU); gradient accumulation = "
                                         "sequences per update / this.")
    max_prompt_len: int = setting(512, min=1, max=131072, section="Optimisation",
                                  help="Prompt tokens kept (left-truncated). Paper: 1,024.")
    max_response_len: int = setting(256, min=1, max=131072, section="Optimisation",
                                    help="Response tokens generated / trained. Paper: 2,048.")
    # rollouts
    temperature: float = setting(1.0, min=0.0, min_exclusive=True, max=10.0, section="Optimisation",
                                 used_by=_uses("self"),
                                 help="Sampling temperature of the self samples, > 0. Paper: 1.0.")
    top_p: float = setting(1.0, min=0.0, min_exclusive=True, max=1.0, label="Top-p", used_by=_uses("self"),
                           help="Nucleus sampling of the self samples, in (0, 1].")
    # length of the run: max_steps optimizer steps, else `epochs` passes over the prompts
    max_steps: int | None = setting(None, min=1, max=1_000_000, section="Length, evaluation, checkpoints",
                                    help="Optimizer steps to train; blank = use epochs.")
    epochs: float = setting(1.0, min=0.0, min_exclusive=True, max=10_000.0, section="Length, evaluation, checkpoints",
                            help="Passes over the training prompts when max steps is blank. Paper: 1.")
    seed: int = setting(0, min=0, max=MAX_SEED, section="Length, evaluation, checkpoints",
                        help="Seeds data order, sampling and the eval split.")
    # evaluation: mean accuracy over eval_samples samples at eval_temperature (0 = only at the end)
    eval_interval: int = setting(0, min=0, max=MAX_INTERVAL, section="Length, evaluation, checkpoints",
                                 help="Evaluate every this many steps (0 = only at the end).")
    eval_samples: int = setting(16, min=1, max=1024, help="Samples per held-out prompt for eval/accuracy.")
    eval_temperature: float = setting(0.5, min=0.0, min_exclusive=True, max=10.0,
                                      help="Sampling temperature of the evaluation, > 0.")
    eval_max_prompts: int | None = setting(200, min=1, max=1_000_000,
                                           help="Held-out prompts evaluated at most (blank = all).")
    eval_batch_size: int = setting(64, min=1, max=4096, help="Prompts per generation batch (rollouts and evaluation).")
    # KL to the start model on a fixed probe set (expert answers of kl_probe_size prompts); 0 = off
    kl_interval: int = setting(10, min=0, max=MAX_INTERVAL, label="KL interval",
                               help="Measure the KL to the start model every this many steps (0 = off).")
    kl_probe_size: int = setting(16, min=0, max=4096, label="KL probe size",
                                 help="Prompts whose expert answers probe the KL to the start model.")
    # checkpoints under output_dir/checkpoints/step-N (0 = only when stopped)
    checkpoint_interval: int = setting(50, min=0, max=MAX_INTERVAL, section="Length, evaluation, checkpoints",
                                       help="Save a checkpoint every this many steps (0 = only when stopped). "
                                            "Resume continues from the latest one.")
    keep_checkpoints: int = setting(3, min=1, max=100, help="Checkpoints kept on disk (the oldest are removed).")
    save_final: bool = setting(True, help="Save the trained model under output_dir/final at the end.")
    # LoRA through PEFT (gft_core/lora.py); rank 0 = every parameter trains
    lora_rank: int = setting(0, min=0, max=4096, section="LoRA", label="LoRA rank",
                             help="Train low-rank adapters of this rank instead of every weight (0 = full "
                                  "fine-tuning). At most the model's hidden size.")
    lora_alpha: float = setting(16.0, min=0.0, min_exclusive=True, max=65536.0, section="LoRA", label="LoRA alpha",
                                help="Adapter scaling: the update is alpha / rank x B A.")
    lora_dropout: float = setting(0.0, min=0.0, max=0.9, section="LoRA", label="LoRA dropout",
                                  help="Dropout on the adapters' input, in [0, 0.9].")
    lora_target_modules: str = setting("auto", section="LoRA", label="LoRA target modules",
                                       help="“auto” (attention and MLP projections of the model's family) or "
                                            "module names separated by commas, e.g. q_proj,v_proj.")
    lora_export: str = setting("merged", choices=LORA_EXPORTS, section="LoRA", label="LoRA final model",
                               help="The final model: adapters merged into full weights, or the adapter alone "
                                    "(small; evaluation and later stages load it onto its base).")
    mixed_precision: str = setting("no", choices=MIXED_PRECISION, section="Hardware",
                                   help="bf16 on recent GPUs; “no” on CPU. Master weights stay float32.")
    gradient_checkpointing: bool = setting(False, section="Hardware", label="Activation checkpointing",
                                           help="Recompute activations in the backward pass: less memory, ~30% "
                                                "more compute per step.")
    # group inspector (issue 8): group_sample_count groups every group_sample_interval steps
    group_sample_interval: int = setting(10, min=0, max=MAX_INTERVAL,
                                         help="Record groups for the inspector every this many steps (0 = off).")
    group_sample_count: int = setting(2, min=0, max=8192, help="Groups recorded each time.")
    # issue 17: a benchmark suite evaluated at every eval_interval and at the end (plain data,
    # gft_core.evaluation.check_eval_suite; the web app fills it from an EvalSuite version)
    eval_suite: dict | None = setting(None, help="Benchmarks (path, mapping) and EvalSettings evaluated during "
                                                 "training; results go to the sink's log_evaluation.")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GFTConfig":
        """Build from a plain dict (as read from YAML/JSON); unknown keys raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError("config", d, "expected a mapping of settings")
        if "recipe" in d:  # a named preset (gft_core.recipes) under the explicit settings
            from gft_core.recipes import apply_recipe

            rest = {k: v for k, v in d.items() if k != "recipe"}
            d = apply_recipe(d["recipe"], rest)
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

    @property
    def method_spec(self) -> Method:
        """This run's entry of the method table (ConfigError if the method is unknown)."""
        return get_method(self.method)

    def group_counts(self) -> dict[str, int]:
        """Responses per source for this method (the method decides which sources take part)."""
        sources = self.method_spec.sources
        counts = {"expert": self.n_expert, "teacher": self.n_teacher, "self": self.n_self}
        return {source: n if source in sources else 0 for source, n in counts.items()}

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

        Checks every setting of FIELDS (type, bounds, choices, nullability), then the rules that
        tie settings together: the group size of the method, batch divisibility, the data files
        and column mapping, the reward spec (built once through build_reward) and, when
        check_paths, the model directory and data files on disk.
        """
        for name in FIELDS:
            check_field(name, _get_dotted(self, name))
        if (not isinstance(self.adam_betas, (tuple, list)) or len(self.adam_betas) != 2
                or not all(is_number(b) and 0.0 <= b < 1.0 for b in self.adam_betas)):
            raise ConfigError("adam_betas", self.adam_betas, "must be two numbers in [0, 1)")
        if not self.output_dir:
            raise ConfigError("output_dir", self.output_dir, "must be a non-empty path")
        self._validate_group()
        self._validate_batches()
        self._validate_data(check_paths)
        self._validate_reward()
        from gft_core.evaluation import check_eval_suite

        check_eval_suite(self.eval_suite)
        if check_paths:
            _check_model_dir(self.model_path)
        return self

    def _validate_group(self) -> None:
        method = self.method_spec
        if self.group_size == 0:
            names = [f"n_{source}" for source in method.sources]
            raise ConfigError(" + ".join(names) if len(names) > 1 else names[0], self.group_counts(),
                              f"group size is 0 for method {self.method!r}; "
                              "it needs at least one response per prompt")
        if self.n_self < method.min_self:
            raise ConfigError("n_self", self.n_self, f"{method.name} needs at least {method.min_self} self samples "
                                                     "per prompt for a group advantage")

    def _validate_batches(self) -> None:
        rollout = self.sequences_per_rollout
        if self.sequences_per_update is not None and rollout % self.sequences_per_update:
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
        if not d.path:
            raise ConfigError("data.path", d.path, "a training data file is required")
        if check_paths and not Path(d.path).is_file():
            raise ConfigError("data.path", d.path, "no such file")
        if d.eval_path is not None and check_paths and not Path(d.eval_path).is_file():
            raise ConfigError("data.eval_path", d.eval_path, "no such file")
        resolve_mapping(d.mapping, "data.mapping")
        for name in ("system_prompt", "instruction_suffix"):
            if len(getattr(d, name)) > MAX_PROMPT_TEXT:
                raise ConfigError(f"data.{name}", getattr(d, name)[:40] + "...", f"at most {MAX_PROMPT_TEXT} characters")
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


FIELDS: dict[str, FieldSpec] = {**field_specs(GFTConfig), **field_specs(DataConfig, "data.")}
LAUNCH_FIELDS: tuple[str, ...] = tuple(name for name, spec in FIELDS.items() if spec.section)


def check_field(name: str, value: Any) -> Any:
    """`value` if it is a valid value of setting `name` (FIELDS); else ConfigError naming it."""
    spec = FIELDS.get(name)
    if spec is None:
        raise ConfigError(name, value, "unknown setting")
    return check_value(spec, value)


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


def _get_dotted(obj: Any, name: str) -> Any:
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _check_model_dir(path: Any) -> None:
    """A local Hugging Face model directory: config.json plus weights (no hub downloads)."""
    if not isinstance(path, str) or not path:
        raise ConfigError("model_path", path, "a local model directory is required")
    p = Path(path)
    if not p.is_dir():
        raise ConfigError("model_path", path, "no such directory")
    from gft_core.lora import adapter_base, is_adapter_dir

    if is_adapter_dir(p):  # a LoRA run's adapter export: its base must be a model directory
        base = adapter_base(p)
        if Path(base).resolve() == p.resolve() or is_adapter_dir(base):
            raise ConfigError("model_path", path, f"the adapter's base {base!r} is not a full model directory")
        _check_model_dir(base)
        return
    if not (p / "config.json").is_file():
        raise ConfigError("model_path", path, "not a Hugging Face model directory (no config.json)")
    weights = list(p.glob("*.safetensors")) + list(p.glob("*.bin")) + list(p.glob("*.safetensors.index.json"))
    if not weights:
        raise ConfigError("model_path", path, "no model weights (*.safetensors or *.bin) in the directory")
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise ConfigError("model_path", path, "no tokenizer files in the directory")
