"""The "New pipeline" page: one launch form per stage (the launch fields, generated from gft_core)."""
from __future__ import annotations

from django import forms

from webapp.runs.forms import LaunchForm


class PipelineForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Blank = the stages' methods, e.g. SFT -> GFT.")


class StageForm(LaunchForm):
    """A stage's launch inputs. Only parsed here: webapp.pipelines.services validates the stages
    together (a later stage against the model it will start from), its errors land back here."""

    def clean(self) -> dict:
        return forms.Form.clean(self)
