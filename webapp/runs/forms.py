"""The launch form. It parses the inputs; webapp.runs.launch.build_config validates them
(gft_core's GFTConfig.validate() plus the web-level checks) and its errors land on the fields."""
from __future__ import annotations

from typing import Any

from django import forms

from gft_core.config import LR_SCHEDULES, METHODS, MIXED_PRECISION

from webapp.datasets.models import Dataset
from webapp.rewards.models import RewardConfig

from . import defaults, launch, modelpaths

METHOD_LABELS = {
    "gft": "GFT (group advantage + dynamic coefficient rectification)",
    "sft": "SFT (expert answers only)",
    "sft_mix": "SFT on expert + teacher answers",
    "dft": "DFT (token-probability weighted SFT)",
    "grpo": "GRPO (self samples only)",
    "gft_no_dcr": "GFT without DCR (ablation)",
    "gft_no_gal": "GFT without group advantage (ablation)",
}


class TagsField(forms.CharField):
    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            items = value
        else:
            items = (super().to_python(value) or "").split(",")
        return [str(t).strip()[:50] for t in items if str(t).strip()]

    def prepare_value(self, value: Any) -> str:
        return ", ".join(value) if isinstance(value, (list, tuple)) else (value or "")


class LaunchForm(forms.Form):
    """Every setting of a run, grouped as on the page; help text says what each one does."""

    name = forms.CharField(max_length=200, required=False, help_text="A name to find the run by; blank = method + dataset.")
    method = forms.ChoiceField(choices=[(m, METHOD_LABELS.get(m, m)) for m in METHODS],
                               help_text="GFT or one of the baselines; all train through the same loop.")
    model = forms.CharField(max_length=500, help_text="“tiny” for the built-in tiny model, or a local Hugging Face "
                            "model directory under one of the allowed model roots (MODEL_ROOTS).")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(),
                                     help_text="A dataset version of your team that passed validation.")
    eval_split = forms.ChoiceField(choices=defaults.EVAL_SPLITS, help_text="Held-out prompts for eval/accuracy.")
    eval_fraction = forms.FloatField(required=False, help_text="Share of training rows held out when the eval "
                                     "split is “fraction” (seeded by the run's seed), in [0, 1).")
    reward_config = forms.ModelChoiceField(queryset=RewardConfig.objects.none(),
                                           help_text="The reward version that scores every response, whatever its source.")
    n_expert = forms.IntegerField(label="Expert answers", help_text="Expert (dataset) answers per prompt in each group; paper: 1.")
    n_teacher = forms.IntegerField(label="Teacher answers", help_text="Teacher answers per prompt; at most what the "
                                   "dataset's rows offer. Paper: 3.")
    n_self = forms.IntegerField(label="Self samples", help_text="Samples of the current policy per prompt; paper: 4.")
    tau = forms.FloatField(label="τ (DCR threshold)", help_text="Tokens with probability below τ get their "
                           "coefficient rectified; in (0, 1]. Scripts: 0.1 (1.5B), 0.3 (7B).")
    lr = forms.FloatField(label="Learning rate", help_text="AdamW learning rate, > 0. Paper: 1e-6 constant; the tiny "
                          "model needs a larger one.")
    lr_schedule = forms.ChoiceField(choices=[(s, s) for s in LR_SCHEDULES], help_text="Learning-rate schedule after warm-up.")
    warmup_steps = forms.IntegerField(help_text="Linear warm-up, optimizer steps (0 = none).")
    prompts_per_step = forms.IntegerField(help_text="Prompts per rollout batch (each becomes one group). Paper: 128.")
    sequences_per_update = forms.IntegerField(required=False, help_text="Sequences per optimizer step; must divide "
                                              "prompts × group size. Blank = the whole rollout batch. Paper: 256.")
    micro_batch_size = forms.IntegerField(help_text="Sequences per forward/backward pass (per GPU); gradient "
                                          "accumulation = sequences per update / this.")
    max_prompt_len = forms.IntegerField(help_text="Prompt tokens kept (left-truncated). Paper: 1,024.")
    max_response_len = forms.IntegerField(help_text="Response tokens generated / trained. Paper: 2,048.")
    temperature = forms.FloatField(help_text="Sampling temperature of the self samples, > 0. Paper: 1.0.")
    max_steps = forms.IntegerField(required=False, help_text="Optimizer steps to train; blank = use epochs.")
    epochs = forms.FloatField(help_text="Passes over the training prompts when max steps is blank. Paper: 1.")
    seed = forms.IntegerField(help_text="Seeds data order, sampling and the eval split.")
    eval_interval = forms.IntegerField(help_text="Evaluate every this many steps (0 = only at the end).")
    checkpoint_interval = forms.IntegerField(help_text="Save a checkpoint every this many steps (0 = only when "
                                             "stopped). Resume continues from the latest one.")
    mixed_precision = forms.ChoiceField(choices=[(p, p) for p in MIXED_PRECISION],
                                        help_text="bf16 on recent GPUs; “no” on CPU.")
    num_gpus = forms.IntegerField(label="GPUs", help_text="GPUs of one worker machine; more than 1 starts the trainer "
                                  "with accelerate launch.")
    queue = forms.ChoiceField(choices=(), help_text="Celery queue; workers listening on it pick the run up in order.")
    tags = TagsField(required=False, help_text="Comma-separated labels for filtering.")

    SECTIONS = (
        ("Run", ("name", "method", "model", "tags")),
        ("Data and reward", ("dataset", "eval_split", "eval_fraction", "reward_config")),
        ("Group", ("n_expert", "n_teacher", "n_self", "tau")),
        ("Optimisation", ("lr", "lr_schedule", "warmup_steps", "prompts_per_step", "sequences_per_update",
                          "micro_batch_size", "max_prompt_len", "max_response_len", "temperature")),
        ("Length, evaluation, checkpoints", ("max_steps", "epochs", "seed", "eval_interval", "checkpoint_interval")),
        ("Hardware", ("mixed_precision", "num_gpus", "queue")),
    )

    def __init__(self, *args, team, **kwargs):
        kwargs.setdefault("initial", defaults.defaults())
        super().__init__(*args, **kwargs)
        self.team = team
        self.fields["dataset"].queryset = Dataset.objects.filter(team=team).order_by("name", "-version")
        self.fields["reward_config"].queryset = RewardConfig.objects.filter(team=team, archived=False)
        self.fields["queue"].choices = [(q, q) for q in launch.queue_choices()]
        self.model_choices = modelpaths.model_choices()
        self.plan: launch.LaunchPlan | None = None

    def sections(self):
        return [(title, [self[name] for name in names]) for title, names in self.SECTIONS]

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:  # a value that did not even parse: gft_core would only repeat it
            return data
        try:
            self.plan = launch.build_config(self.team, data)
        except launch.LaunchError as e:
            for field, messages in e.errors.items():
                for message in messages:
                    self.add_error(None if field not in self.fields else field, message)
        return data
