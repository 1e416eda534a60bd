"""Forms of the evaluation pages: a suite (benchmarks + generation settings), "Evaluate" on a run
or a base model, a reference row, and the leaderboard's settings (compare page, dashboards).

Bounds repeat gft_core's EvalSettings ones so the browser refuses bad input early; the service
(EvalSettings.from_dict) stays the judge and its error is shown on the field it names.
"""
from __future__ import annotations

from django import forms

from gft_core.config import MAX_PROMPT_TEXT
from gft_core.evaluation import EvalSettings
from gft_core.rewards import REWARDS

DEFAULTS = EvalSettings()

PICKS = (("best", "best checkpoint"), ("final", "final checkpoint"))


class SuiteForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    benchmarks = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple,
                                           help_text="Benchmark datasets (datasets marked for evaluation)")
    k = forms.IntegerField(min_value=1, max_value=1024, initial=DEFAULTS.k, label="k (samples per problem)")
    temperature = forms.FloatField(min_value=0.0, max_value=10.0, initial=DEFAULTS.temperature, help_text="0 = greedy")
    top_p = forms.FloatField(min_value=0.0, max_value=1.0, initial=DEFAULTS.top_p, label="top-p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=131072, initial=DEFAULTS.max_new_tokens)
    # the prompt format: blank = the model's own (a run's training settings; for a base model the
    # defaults: chat template on, no system prompt or suffix)
    use_chat_template = forms.NullBooleanField(
        required=False, label="Chat template",
        widget=forms.Select(choices=[("", "the model's (the run's setting; on for a base model)"),
                                     ("true", "on"), ("false", "off")]))
    system_prompt = forms.CharField(required=False, strip=False, max_length=MAX_PROMPT_TEXT,
                                    widget=forms.Textarea(attrs={"rows": 2}),
                                    help_text="Blank: the run's (its dataset's), none for a base model")
    instruction_suffix = forms.CharField(required=False, strip=False, max_length=MAX_PROMPT_TEXT,
                                         help_text="Blank: the run's (its dataset's), none for a base model")
    reward = forms.ChoiceField(initial=DEFAULTS.reward["name"], help_text="How an answer is scored against the ground truth")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, initial=DEFAULTS.seed)

    SETTINGS = ("k", "temperature", "top_p", "max_new_tokens", "use_chat_template", "seed")
    TEXTS = ("system_prompt", "instruction_suffix")  # blank = unset (None)

    def __init__(self, *args, benchmarks, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["benchmarks"].choices = [(str(d.pk), f"{d.name} v{d.version}") for d in benchmarks]
        self.fields["reward"].choices = [(name, name) for name in REWARDS
                                         if REWARDS[name].needs_ground_truth] or [(n, n) for n in REWARDS]

    def clean_top_p(self) -> float:
        top_p = self.cleaned_data["top_p"]
        if top_p <= 0:
            raise forms.ValidationError("top-p must be above 0 (and at most 1).")
        return top_p

    def clean_benchmarks(self) -> list[int]:
        return [int(v) for v in self.cleaned_data["benchmarks"]]

    def eval_settings(self) -> dict:
        """The EvalSettings dict the suite stores."""
        d = self.cleaned_data
        out = {name: d[name] for name in self.SETTINGS}
        out.update({name: d[name] or None for name in self.TEXTS})
        out["reward"] = {"name": d["reward"], "params": {}}
        return out


class EvaluateForm(forms.Form):
    """Evaluate a run's checkpoint (run page) or a base model (model_path, on the suites page)."""

    suite = forms.TypedChoiceField(coerce=int)
    step = forms.TypedChoiceField(coerce=int, required=False, label="Checkpoint")
    model_path = forms.CharField(max_length=500, required=False, label="Base model")

    def __init__(self, *args, suites, steps=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["suite"].choices = [(s.pk, str(s)) for s in suites]
        self.fields["step"].choices = [(s, label) for s, label in (steps or [])]


class ReferenceForm(forms.Form):
    model = forms.CharField(max_length=200)
    method = forms.CharField(max_length=100)
    benchmark = forms.CharField(max_length=120)
    metric = forms.CharField(max_length=50, initial="accuracy")
    value = forms.FloatField(min_value=-1e6, max_value=1e6, help_text="As reported (accuracy in percent)")
    source = forms.CharField(max_length=300, required=False)


class LeaderboardForm(forms.Form):
    """?lb_suite=&lb_pick=&lb_baseline= on the compare page; the same names are saved with a dashboard."""

    lb_suite = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Suite")
    lb_pick = forms.ChoiceField(choices=PICKS, required=False, initial="best", label="Checkpoint")
    lb_baseline = forms.TypedChoiceField(coerce=int, required=False, empty_value=None, label="Baseline run")

    def __init__(self, *args, suites, runs, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["lb_suite"].choices = [(s.pk, str(s)) for s in suites]
        self.fields["lb_baseline"].choices = [("", "none")] + [(r.pk, f"#{r.pk} {r.name}") for r in runs]

    def settings(self) -> dict:
        """{"suite": id|None, "pick": "best"|"final", "baseline": run id|None}; bad values fall back."""
        d = self.cleaned_data if self.is_valid() else {}
        return {"suite": d.get("lb_suite"), "pick": d.get("lb_pick") or "best", "baseline": d.get("lb_baseline")}
