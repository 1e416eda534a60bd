from .scoping import user_teams


def teams(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"teams": user_teams(user).order_by("name"), "current_team": getattr(request, "team", None)}
