"""Forms of the account pages."""
from __future__ import annotations

from django import forms

# Lifetimes offered on the Tokens page, in days ("" = never expires).
TOKEN_LIFETIMES = [("", "never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]
TOKEN_SCOPES = [("read-write", "read and write"), ("read-only", "read only (GET)")]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, strip=True)
    expires_in_days = forms.TypedChoiceField(choices=TOKEN_LIFETIMES, coerce=int, empty_value=None, required=False)
    scope = forms.ChoiceField(choices=TOKEN_SCOPES, required=False)

    def clean_name(self) -> str:
        return self.cleaned_data["name"] or "cli"


class RevokeTokenForm(forms.Form):
    revoke = forms.IntegerField(min_value=1, max_value=2**63 - 1)
