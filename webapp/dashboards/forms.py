"""Saving a comparison as a team dashboard."""
from __future__ import annotations

from django import forms

from webapp.evaluations.forms import PICKS
from webapp.runs.charts import CHARTS

from . import services

XMODES = ("step", "wall", "relative")  # charts.js: the x axes a chart can use


class DashboardForm(forms.Form):
    name = forms.CharField(max_length=120)
    runs = forms.CharField(help_text="Run ids, comma separated, in display order")
    charts = forms.MultipleChoiceField(choices=[(c["id"], c["title"]) for c in CHARTS], required=False,
                                       help_text="Charts to show; none = all")
    smoothing = forms.FloatField(min_value=0.0, max_value=0.999, required=False, initial=0.0)
    # The rest of the chart toolbar, as shown when saving (charts.js keeps these hidden inputs current).
    logscale = forms.BooleanField(required=False)
    xmode = forms.ChoiceField(choices=[(m, m) for m in XMODES], required=False)
    sync = forms.BooleanField(required=False)
    # The leaderboard's settings (webapp.evaluations.forms.LeaderboardForm uses the same names);
    # a suite that is not the team's is ignored when the dashboard is shown.
    lb_suite = forms.IntegerField(min_value=1, max_value=2**31 - 1, required=False)
    lb_pick = forms.ChoiceField(choices=PICKS, required=False)
    lb_baseline = forms.IntegerField(min_value=1, max_value=2**31 - 1, required=False)

    def __init__(self, *args, team, user, instance=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.team, self.user, self.instance = team, user, instance

    def clean_runs(self) -> list[int]:
        return services.validate_run_ids(self.user, self.team, self.cleaned_data["runs"])

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if services.name_taken(self.team, name, exclude=self.instance):
            raise forms.ValidationError("Your team already has a dashboard with this name.")
        return name

    def clean_smoothing(self) -> float:
        return self.cleaned_data.get("smoothing") or 0.0

    def clean(self) -> dict:
        data = super().clean()
        baseline = data.get("lb_baseline")
        if baseline is not None and baseline not in (data.get("runs") or []):
            self.add_error("lb_baseline", "The baseline must be one of the dashboard's runs.")
        return data
