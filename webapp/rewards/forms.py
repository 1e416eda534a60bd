"""Reward config forms, generated from gft_core.rewards.describe_rewards().

A config is a weighted sum of terms; each term picks a registered reward and fills its typed
parameters. The fields of every reward exist in each term form (named "<reward>__<param>"); the
page shows those of the chosen reward, and only those are read.
"""
from __future__ import annotations

import json

from django import forms

from gft_core.rewards import REWARDS, describe_rewards, needs_ground_truth

from .services import MAX_SAMPLE, RewardConfigError, check_spec, spec_from_terms, terms_from_spec

COMBINATOR = "weighted_sum"


def term_rewards() -> list[dict]:
    """The registry as the form shows it: every reward but the combinator, which the form itself is."""
    return [r for r in describe_rewards() if r["name"] != COMBINATOR]


def _param_field(reward: str, p: dict) -> forms.Field:
    choices = next((q.choices for q in REWARDS[reward].params if q.name == p["name"]), None)
    common = {"required": False, "help_text": p["help"], "label": p["name"]}
    if choices:
        return forms.ChoiceField(choices=[(c, c) for c in choices], initial=p["default"], **common)
    if p["type"] == "bool":
        return forms.BooleanField(initial=p["default"], **common)
    if p["type"] == "int":
        return forms.IntegerField(initial=p["default"], **common)
    if p["type"] == "float":
        return forms.FloatField(initial=p["default"], widget=forms.NumberInput(attrs={"step": "any"}), **common)
    return forms.CharField(initial=p["default"], max_length=1000, **common)


class TermForm(forms.Form):
    reward = forms.ChoiceField()
    weight = forms.FloatField(initial=1.0, widget=forms.NumberInput(attrs={"step": "any"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rewards = term_rewards()
        self.fields["reward"].choices = [(r["name"], r["name"]) for r in rewards]
        self.param_groups: list[tuple[dict, list[str]]] = []
        for r in rewards:
            names = []
            for p in r["params"]:
                if p["type"] in ("int", "float", "bool", "str"):
                    fname = f"{r['name']}__{p['name']}"
                    self.fields[fname] = _param_field(r["name"], p)
                    names.append(fname)
            self.param_groups.append((r, names))

    def groups(self):
        """(reward description, bound fields) pairs for the template."""
        return [(r, [self[n] for n in names]) for r, names in self.param_groups]

    def clean(self) -> dict:
        data = super().clean()
        reward = data.get("reward")
        if not reward:
            return data
        info = next(r for r in term_rewards() if r["name"] == reward)
        params = {}
        for p in info["params"]:
            fname = f"{reward}__{p['name']}"
            if fname not in self.fields:
                continue
            value = data.get(fname)
            if p["type"] != "bool" and value in (None, ""):
                if p["required"]:
                    self.add_error(fname, f"{reward} needs {p['name']}.")
                    continue
                if p["default"] in (None, ""):
                    continue
                value = p["default"]
            params[p["name"]] = value
        data["term"] = {"name": reward, "weight": data.get("weight") if data.get("weight") is not None else 1.0, "params": params}
        return data

    @staticmethod
    def initial_for(term: dict) -> dict:
        initial = {"reward": term["name"], "weight": term.get("weight", 1.0)}
        for k, v in (term.get("params") or {}).items():
            initial[f"{term['name']}__{k}"] = v
        return initial


TermFormSet = forms.formset_factory(TermForm, extra=0, min_num=1, validate_min=True, max_num=8, validate_max=True)


class RewardConfigForm(forms.Form):
    name = forms.CharField(max_length=120)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    spec_json = forms.CharField(
        required=False, label="Advanced: spec as JSON", widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text='Overrides the terms above when filled, e.g. {"name": "math_verify", "params": {"rel_tol": 0.0001}}. Data only, never code.',
    )

    def __init__(self, *args, terms: TermFormSet, **kwargs):
        super().__init__(*args, **kwargs)
        self.terms = terms

    def is_valid(self) -> bool:
        # Both parts are always validated so every error shows at once.
        valid = super().is_valid()
        spec_given = bool(self.cleaned_data.get("spec_json", "").strip()) if hasattr(self, "cleaned_data") else False
        terms_valid = self.terms.is_valid()
        if not valid or (not spec_given and not terms_valid):
            return False
        try:
            spec = json.loads(self.cleaned_data["spec_json"]) if spec_given else spec_from_terms(
                [f.cleaned_data["term"] for f in self.terms.forms if f.cleaned_data.get("term")])
            self.cleaned_data["spec"] = check_spec(spec)
        except json.JSONDecodeError as e:
            # Some messages end in "at" ("Unterminated string starting at"): no "at at line".
            self.add_error("spec_json", f"Not valid JSON: {e.msg.removesuffix(' at')} at line {e.lineno}, "
                                        f"column {e.colno}.")
        except RecursionError:
            self.add_error("spec_json", "The JSON nests too deeply.")
        except RewardConfigError as e:
            self.add_error("spec_json" if spec_given else None, str(e))
        return not self.errors


def term_formset(data=None, spec: dict | None = None) -> TermFormSet:
    if data is not None:
        return TermFormSet(data, prefix="terms")
    terms = terms_from_spec(spec) if spec else [{"name": "math_verify", "weight": 1.0, "params": {}}]
    return TermFormSet(prefix="terms", initial=[TermForm.initial_for(t) for t in terms or []])


class RewardTestForm(forms.Form):
    dataset = forms.ModelChoiceField(queryset=None, empty_label=None)
    sample_size = forms.IntegerField(min_value=1, max_value=MAX_SAMPLE, initial=100,
                                     help_text=f"Rows sampled (seeded) from the dataset, at most {MAX_SAMPLE}.")
    seed = forms.IntegerField(initial=0)
    response = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4}), label="Paste a response",
                               help_text="Scored too, against its own ground truth below.")
    response_ground_truth = forms.CharField(required=False, max_length=2000, label="Its ground truth",
                                            help_text="Required with a pasted response when the reward compares "
                                                      "with a ground truth; the sampled rows' are not used.")

    def __init__(self, *args, datasets, spec: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["dataset"].queryset = datasets
        self.spec = spec

    def clean(self):
        data = super().clean()
        if (data.get("response", "").strip() and not data.get("response_ground_truth", "").strip()
                and self.spec is not None and needs_ground_truth(self.spec)):
            self.add_error("response_ground_truth", "The pasted response needs its own ground truth: this reward "
                                                    "compares the answer with one.")
        return data
