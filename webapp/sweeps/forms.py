"""The new-sweep form: the launch form's fields (the base of every trial) plus the search."""
from __future__ import annotations

from typing import Any

import yaml
from django import forms

from webapp.runs.forms import LaunchForm

from . import spaces

PARAMETERS_HELP = ("YAML: a list per setting for a grid (tau: [0.1, 0.3, 0.5]); for random / TPE also ranges "
                   "(lr: {low: 1.0e-5, high: 1.0e-3, log: true}) and choices (method: [gft, sft]). "
                   "Any bounded launch setting; these override the fields below.")


class SweepForm(LaunchForm):
    sweep_name = forms.CharField(max_length=spaces.NAME_MAX, label="Sweep name")
    strategy = forms.ChoiceField(choices=[("grid", "Grid"), ("random", "Random"), ("tpe", "Bayesian (TPE)")])
    parameters = forms.CharField(widget=forms.Textarea(attrs={"rows": 5, "cols": 60}), help_text=PARAMETERS_HELP)
    runs = forms.IntegerField(min_value=1, max_value=spaces.MAX_RUNS, required=False, label="Budget: runs",
                              help_text="Runs in all (a grid: blank = its size).")
    parallel = forms.IntegerField(min_value=1, max_value=spaces.MAX_PARALLEL, initial=1, label="Runs in parallel")
    target = forms.CharField(max_length=200, initial=spaces.DEFAULT_TARGET,
                             help_text="A metric key (eval/accuracy, reward/mean, loss) or eval:<benchmark>/<metric>.")
    direction = forms.ChoiceField(choices=[("max", "max"), ("min", "min")])
    mode = forms.ChoiceField(choices=[("final", "final value"), ("best", "best value")], label="Target value")
    pruner = forms.ChoiceField(choices=[(p, p) for p in spaces.PRUNERS], required=False,
                               help_text="Stops trials whose target falls behind (median / Hyperband), from live metrics.")
    sweep_seed = forms.IntegerField(min_value=0, initial=0, label="Sampler seed")

    SWEEP_FIELDS = ("sweep_name", "strategy", "parameters", "runs", "parallel", "target", "direction", "mode",
                    "pruner", "sweep_seed")

    def sweep_fields(self):
        return [self[name] for name in self.SWEEP_FIELDS]

    def clean_parameters(self) -> dict:
        try:
            value = yaml.safe_load(self.cleaned_data["parameters"])
        except yaml.YAMLError as e:
            raise forms.ValidationError(f"Not YAML: {e}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("A mapping of settings to vary.")
        return value

    def sweep_data(self) -> dict[str, Any]:
        """The inputs of services.create_sweep (the base without the varied settings)."""
        d = self.cleaned_data
        params = d["parameters"]
        base = {k: (v.pk if hasattr(v, "pk") else v) for k, v in d.items()
                if k not in self.SWEEP_FIELDS and k not in params and k != "name"}
        budget = {"parallel": d["parallel"], **({"runs": d["runs"]} if d.get("runs") else {})}
        return {"name": d["sweep_name"], "strategy": d["strategy"], "base": base, "parameters": params,
                "budget": budget, "target": {"metric": d["target"], "direction": d["direction"], "mode": d["mode"]},
                "pruner": d.get("pruner") or "none", "seed": d["sweep_seed"]}
