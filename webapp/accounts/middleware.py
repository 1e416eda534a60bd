from __future__ import annotations

from .scoping import user_teams

SESSION_KEY = "current_team_id"


class CurrentTeamMiddleware:
    """Sets request.team: the team chosen in the team switcher, else the user's first team."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.team = None
        if getattr(request, "user", None) is not None and request.user.is_authenticated:
            teams = user_teams(request.user).order_by("name")
            chosen = request.session.get(SESSION_KEY)
            request.team = (chosen and teams.filter(pk=chosen).first()) or teams.first()
        return self.get_response(request)
