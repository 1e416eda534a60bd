"""The launch form. Its config fields are generated from gft_core's list of settings
(webapp.runs.launchfields); webapp.runs.launch.build_config validates the whole (gft_core's
GFTConfig.validate() plus the web-level checks) and its errors land on the fields."""
from __future__ import annotations

from typing import Any

from django import forms

from gft_core.config import FIELDS, LAUNCH_FIELDS, FieldSpec

from webapp.datasets.models import Dataset
from webapp.evaluations.models import EvalSuite
from webapp.rewards.models import RewardConfig

from . import defaults, launch, launchfields, modelpaths


class TagsField(forms.CharField):
    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, (list, tuple)):
            items = value
        else:
            items = (super().to_python(value) or "").split(",")
        return [str(t).strip()[:launchfields.TAG_MAX_LENGTH] for t in items if str(t).strip()]

    def prepare_value(self, value: Any) -> str:
        return ", ".join(value) if isinstance(value, (list, tuple)) else (value or "")


def config_field(spec: FieldSpec) -> forms.Field:
    """The form field of one gft_core setting (label, help, choices, bounds, check_field)."""
    field = launchfields.setting_field(
        spec, choice=forms.ChoiceField, boolean=forms.BooleanField, integer=forms.IntegerField,
        number=forms.FloatField, text=forms.CharField, error=forms.ValidationError,
        label=spec.label, help_text=spec.help, required=not spec.nullable and spec.type is not bool)
    if spec.min_exclusive:
        field.widget.attrs["data-min-exclusive"] = "true"
    return field


class LaunchForm(forms.Form):
    """Every setting of a run, grouped as on the page; help text says what each one does."""

    # Web-only inputs (the gft_core settings are added below, from LAUNCH_FIELDS).
    name = forms.CharField(max_length=launchfields.NAME_MAX_LENGTH, required=False,
                           help_text="A name to find the run by; blank = method + dataset.")
    model = forms.CharField(max_length=500, required=False, help_text="“tiny” for the built-in tiny model, or a local Hugging Face "
                            "model directory under one of the allowed model roots (MODEL_ROOTS).")
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.none(),
                                     help_text="A dataset version of your team that passed validation.")
    eval_split = forms.ChoiceField(choices=defaults.EVAL_SPLITS, help_text="Held-out prompts for eval/accuracy.")
    reward_config = forms.ModelChoiceField(queryset=RewardConfig.objects.none(),
                                           help_text="The reward version that scores every response, whatever its source.")
    eval_suite = forms.ModelChoiceField(queryset=EvalSuite.objects.none(), required=False, label="Eval suite",
                                        help_text="Optional: benchmarks evaluated on the run's own worker at every "
                                                  "eval interval and at the end (the Evaluation tab).")
    queue = forms.ChoiceField(choices=(), help_text="Celery queue; workers listening on it pick the run up in order.")
    init_from_run = forms.IntegerField(required=False, min_value=1, max_value=launchfields.MAX_ID,
                                       label="Start from run", help_text=launchfields.INIT_FROM_RUN_HELP)
    init_from_step = forms.IntegerField(required=False, min_value=1, max_value=launchfields.MAX_ID,
                                        label="Start step", help_text=launchfields.INIT_FROM_STEP_HELP)
    tags = TagsField(required=False, help_text="Comma-separated labels for filtering.")
    recipe = forms.ChoiceField(choices=(), required=False, help_text=launchfields.RECIPE_HELP)
    skip_fields: tuple[str, ...] = ()  # fields the page does not lay out (a later pipeline stage: the model)

    def __init__(self, *args, team, **kwargs):
        kwargs.setdefault("initial", defaults.defaults())
        super().__init__(*args, **kwargs)
        for name in LAUNCH_FIELDS:
            self.fields[name] = config_field(FIELDS[name])
        # Web-only inputs whose bounds come from gft_core or the settings.
        self.fields["eval_fraction"] = eval_fraction = config_field(FIELDS["data.eval_fraction"])
        eval_fraction.required = False
        eval_fraction.help_text += " Used when the eval split is “fraction”."
        self.fields["num_gpus"] = forms.IntegerField(label="GPUs", help_text=launchfields.gpu_help(),
                                                     **launchfields.gpu_bounds())
        self.team = team
        self.fields["dataset"].queryset = Dataset.objects.filter(team=team, purpose=Dataset.Purpose.TRAIN).order_by(
            "name", "-version")  # benchmarks are for evaluation, not training
        self.fields["reward_config"].queryset = RewardConfig.objects.filter(team=team, archived=False)
        self.fields["eval_suite"].queryset = EvalSuite.objects.filter(team=team, archived=False)
        self.fields["queue"].choices = [(q, q) for q in launch.queue_choices()]
        self.fields["recipe"].choices = [("", "None: the defaults below"), *launchfields.recipe_choices()]
        self.recipes = launchfields.recipe_table()
        self.model_choices = modelpaths.model_choices()
        self.plan: launch.LaunchPlan | None = None

    def sections(self):
        """(title, [bound field, ...]) per fieldset; each bound field carries `used_by`: the
        methods that read it (the page hides it for the others), or None for every method."""
        out = []
        for title, names in launchfields.sections():
            bound = []
            for name in names:
                if name in self.skip_fields:
                    continue
                field = self[name]
                spec = FIELDS.get(name)
                field.used_by = launchfields.used_by_methods(spec) if spec and spec.used_by else None
                bound.append(field)
            out.append((title, bound))
        return out

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:  # a value that did not even parse: gft_core would only repeat it
            return data
        # A field left as the form offered it takes the recipe's value once the recipe is chosen here
        # (a clone offers its run's values, recipe included: they stay).
        if data.get("recipe") and "recipe" in self.changed_data:
            for name in launchfields.recipe_launch_values(data["recipe"]):
                if name not in self.changed_data:
                    data.pop(name, None)
        try:
            self.plan = launch.build_config(self.team, data)
        except launch.LaunchError as e:
            for field, messages in e.errors.items():
                for message in messages:
                    self.add_error(None if field not in self.fields else field, message)
        return data
