from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import Membership
from webapp.accounts.services import ensure_team, invite


class Command(BaseCommand):
    help = "Create a team if needed and add a user to it (creating the user with a one-time password)."

    def add_arguments(self, parser):
        parser.add_argument("team", help="Team name (created if it does not exist)")
        parser.add_argument("username")
        parser.add_argument("--email", default="")
        parser.add_argument("--role", default=Membership.Role.MEMBER, choices=Membership.Role.values)
        parser.add_argument("--password", help="Password for a new user (default: a random one, printed)")

    def handle(self, *args, **opts):
        team = ensure_team(opts["team"])
        try:
            user, password = invite(team, opts["username"], email=opts["email"], role=opts["role"],
                                    password=opts["password"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"{user.username} is {opts['role']} of team '{team.name}'.")
        if password and not opts["password"]:
            self.stdout.write(f"One-time password: {password}")
