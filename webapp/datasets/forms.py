"""Forms of the dataset pages: upload, column mapping (with gft_core presets), eval split, new version."""
from __future__ import annotations

import dataclasses

from django import forms

from gft_core.config import MAX_PROMPT_TEXT
from gft_core.data import PRESETS

from .models import Dataset
from .services import (PROMPT_FORMAT_KEYS, UploadError, available_tokenizers, check_tokenizer, mapping_from,
                       prompt_format_from)
from .uploads import EXTENSIONS

ACCEPT = ",".join([*EXTENSIONS, ".gz"])
PRESET_CHOICES = [("", "Custom mapping")] + [(name, name) for name in PRESETS]


def preset_fields() -> dict[str, dict]:
    """The presets as form values, for the page's JavaScript to fill the mapping fields."""
    out = {}
    for name, m in PRESETS.items():
        d = dataclasses.asdict(m)
        teacher = d.pop("teacher")
        d["teacher"] = ", ".join(teacher) if isinstance(teacher, (list, tuple)) else (teacher or "")
        d["teacher_mode"] = "columns" if isinstance(teacher, (list, tuple)) else "list"
        out[name] = {k: ("" if v is None else v) for k, v in d.items()}
    return out


class MappingForm(forms.Form):
    """Column mapping, eval split and tokenizer: what describes a dataset version besides its file."""

    preset = forms.ChoiceField(choices=PRESET_CHOICES, required=False,
                               help_text="Fills the fields below; with the prompt column left empty, the preset is used as is.")
    prompt = forms.CharField(required=False, max_length=200, help_text="Column with the prompt (question).")
    expert = forms.CharField(required=False, max_length=200, help_text="Column with the expert answer (reference solution).")
    teacher = forms.CharField(required=False, max_length=500,
                              help_text="Teacher answers: one column holding a list of strings, or several columns separated by commas.")
    teacher_mode = forms.ChoiceField(
        choices=[("list", "one column holding a list of answers"), ("columns", "one answer per column")],
        initial="list", widget=forms.RadioSelect, required=False,
    )
    ground_truth = forms.CharField(required=False, max_length=200, help_text="Column with the final answer the reward checks.")
    ground_truth_extract = forms.ChoiceField(
        choices=[("raw", "the value as is"), ("gsm8k", "text after the last ####"), ("boxed", "content of the last \\boxed{}")],
        initial="raw",
    )
    ground_truth_fallback = forms.CharField(required=False, max_length=200,
                                            help_text="If the ground-truth column is empty in a row, take the last \\boxed{} of this column.")
    eval_split = forms.ChoiceField(choices=Dataset.EvalSplit.choices, initial=Dataset.EvalSplit.NONE, widget=forms.RadioSelect)
    eval_file = forms.FileField(required=False, widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}))
    eval_fraction = forms.FloatField(required=False, min_value=0.0, max_value=0.9, initial=0.05,
                                     widget=forms.NumberInput(attrs={"step": "0.01"}))
    eval_seed = forms.IntegerField(required=False, initial=0)
    tokenizer = forms.ChoiceField(required=False, help_text="Used for the token-length histograms of the report.")
    system_prompt = forms.CharField(required=False, max_length=MAX_PROMPT_TEXT, widget=forms.Textarea(attrs={"rows": 2}),
                                    help_text="A system message before every prompt (with the model's chat template; "
                                              "without one, it precedes the prompt after a blank line).")
    instruction_suffix = forms.CharField(required=False, max_length=MAX_PROMPT_TEXT,
                                         widget=forms.Textarea(attrs={"rows": 2}),
                                         help_text="Added after every prompt on its own line, e.g. “Please reason step "
                                                   "by step, and put your final answer within \\boxed{}.”")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tokenizer"].choices = available_tokenizers()

    def clean_tokenizer(self) -> str:
        try:
            return check_tokenizer(self.cleaned_data.get("tokenizer", ""))
        except UploadError as e:
            raise forms.ValidationError(str(e)) from None

    def clean(self) -> dict:
        data = super().clean()
        prompt = (data.get("prompt") or "").strip()
        if not prompt:
            if not data.get("preset"):
                self.add_error("prompt", "Name the prompt column, or choose a preset.")
                return data
            data["mapping"] = mapping_from(data["preset"])
        else:
            teacher_text = (data.get("teacher") or "").strip()
            columns = [c.strip() for c in teacher_text.split(",") if c.strip()]
            if not columns:
                teacher = None
            elif data.get("teacher_mode") == "columns" or len(columns) > 1:
                teacher = columns
            else:
                teacher = columns[0]
            try:
                data["mapping"] = mapping_from({
                    "prompt": prompt,
                    "expert": (data.get("expert") or "").strip() or None,
                    "teacher": teacher,
                    "ground_truth": (data.get("ground_truth") or "").strip() or None,
                    "ground_truth_extract": data.get("ground_truth_extract") or "raw",
                    "ground_truth_fallback": (data.get("ground_truth_fallback") or "").strip() or None,
                })
            except UploadError as e:
                self.add_error(None, str(e))
        split = data.get("eval_split")
        if split == Dataset.EvalSplit.FRACTION:
            fraction = data.get("eval_fraction")
            if fraction is None or not 0 < fraction < 1:
                self.add_error("eval_fraction", "Give a fraction between 0 and 1, e.g. 0.05.")
        if data.get("eval_seed") is None:
            data["eval_seed"] = 0
        data["prompt_format"] = prompt_format_from({k: data.get(k) or "" for k in PROMPT_FORMAT_KEYS})
        return data

    @staticmethod
    def initial_from(dataset: Dataset) -> dict:
        m = dataset.mapping
        teacher = m.get("teacher")
        return {
            "prompt": m.get("prompt", ""), "expert": m.get("expert") or "",
            "teacher": ", ".join(teacher) if isinstance(teacher, list) else (teacher or ""),
            "teacher_mode": "columns" if isinstance(teacher, list) else "list",
            "ground_truth": m.get("ground_truth") or "", "ground_truth_extract": m.get("ground_truth_extract", "raw"),
            "ground_truth_fallback": m.get("ground_truth_fallback") or "",
            "eval_split": dataset.eval_split, "eval_fraction": dataset.eval_fraction or 0.05,
            "eval_seed": dataset.eval_seed, "tokenizer": dataset.tokenizer,
            **{k: (dataset.prompt_format or {}).get(k, "") for k in PROMPT_FORMAT_KEYS},
        }


class UploadForm(MappingForm):
    name = forms.CharField(max_length=120)
    file = forms.FileField(widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
                           help_text="JSONL, Parquet or CSV, optionally gzipped (.jsonl.gz, ...).")
    allow_duplicate = forms.BooleanField(required=False, label="Upload even if the team has this exact file already")

    field_order = ["name", "file", "preset"]

    def clean(self) -> dict:
        data = super().clean()
        if data.get("eval_split") == Dataset.EvalSplit.FILE and not data.get("eval_file"):
            self.add_error("eval_file", "Choose the eval file, or another eval split.")
        return data


class NewVersionForm(MappingForm):
    file = forms.FileField(required=False, widget=forms.ClearableFileInput(attrs={"accept": ACCEPT}),
                           help_text="Leave empty to keep the current file.")
    field_order = ["file", "preset"]


class ValidateForm(forms.Form):
    tokenizer = forms.ChoiceField(required=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tokenizer"].choices = available_tokenizers()


class TeacherGenerateForm(forms.Form):
    """Generate teacher answers (webapp.datasets.teachers.submit_generation); bounds from gft_core.teachers."""

    from gft_core.teachers import MAX_K, MAX_NEW_TOKENS, MAX_RETRIES

    model = forms.ChoiceField(required=False, help_text="A model directory under MODEL_ROOTS (or the built-in tiny model).")
    run = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                 help_text="Or the final model of a finished run of your team.")
    k = forms.IntegerField(min_value=1, max_value=MAX_K, initial=4, label="Answers per prompt (K)")
    temperature = forms.FloatField(min_value=0.0, max_value=10.0, initial=0.7)
    top_p = forms.FloatField(min_value=1e-6, max_value=1.0, initial=1.0, label="Top-p")
    max_new_tokens = forms.IntegerField(min_value=1, max_value=MAX_NEW_TOKENS, initial=1024)
    use_chat_template = forms.BooleanField(required=False, initial=True, label="Chat template",
                                           help_text="The teacher model's chat template, when it has one; the "
                                                     "dataset's system prompt and instruction suffix apply either way.")
    reward_config = forms.TypedChoiceField(required=False, coerce=int, empty_value=None,
                                           help_text="Scores the answers (teacher accuracy) and filters them; default math_verify.")
    filter = forms.BooleanField(required=False, label="Keep only answers scoring >= threshold")
    threshold = forms.FloatField(initial=1.0, min_value=-1e6, max_value=1e6)
    max_retries = forms.IntegerField(min_value=0, max_value=MAX_RETRIES, initial=2, label="Retries (filter)")

    def __init__(self, *args, model_choices=(), run_choices=(), reward_choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "–")] + list(model_choices)
        self.fields["run"].choices = [("", "–")] + list(run_choices)
        self.fields["reward_config"].choices = [("", "math_verify (built in)")] + list(reward_choices)


class TeacherImportForm(forms.Form):
    file = forms.FileField(help_text="JSONL or Parquet: a key column (row = the dataset's row number, or prompt = the "
                                     "exact prompt) and answers (a list) or answer (one string).",
                           widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.json,.parquet,.gz"}))
