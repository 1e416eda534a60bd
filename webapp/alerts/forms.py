"""The rule (new and edit) and new-webhook forms of the alerts page, checked by the same services as
the API (services.check_rule, services.check_webhook_url), so a bad value is the same field error."""
from __future__ import annotations

from django import forms

from . import services
from .models import AlertRule


class RuleForm(forms.ModelForm):
    metric = forms.ChoiceField(required=False, help_text="Empty for stalled and failed rules")

    class Meta:
        model = AlertRule
        fields = ["name", "metric", "condition", "window", "aggregation", "threshold", "baseline", "severity", "action"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["metric"].choices = [("", "–")] + [(m, m) for m in services.metric_names()]

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                services.check_rule(dict(data))
            except services.RuleError as e:
                self.add_error(e.field if e.field in self.fields else None, str(e))
        return data


class RuleEditForm(RuleForm):
    """An existing rule's settings (a built-in one keeps its key); on and muted too."""

    class Meta(RuleForm.Meta):
        fields = [*RuleForm.Meta.fields, "enabled", "muted"]


class WebhookForm(forms.Form):
    name = forms.CharField(max_length=120)
    url = forms.URLField(max_length=500, assume_scheme="https")

    def clean_url(self):
        try:
            return services.check_webhook_url(self.cleaned_data["url"])
        except services.RuleError as e:
            raise forms.ValidationError(str(e)) from None
