"""`python manage.py add_benchmarks "Team" [--preset math500 ...] [--user NAME]`: create the team's
benchmark datasets from the presets (settings.BENCHMARK_DATA); existing ones are left as they are."""
from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.models import Team
from webapp.evaluations import benchmarks


class Command(BaseCommand):
    help = "Create a team's benchmark datasets (purpose evaluation) from the benchmark presets."

    def add_arguments(self, parser) -> None:
        parser.add_argument("team", help="team name or slug")
        parser.add_argument("--preset", action="append", dest="presets",
                            help="a preset name (repeatable); default: every preset whose file is there")
        parser.add_argument("--user", help="username recorded as creator (default: none)")

    def handle(self, *args, team: str, presets: list[str] | None, user: str | None, **options) -> None:
        found = Team.objects.filter(name=team).first() or Team.objects.filter(slug=team).first()
        if found is None:
            raise CommandError(f"No team named {team!r}.")
        creator = None
        if user:
            creator = get_user_model().objects.filter(username=user).first()
            if creator is None:
                raise CommandError(f"No user {user!r}.")
        try:
            added = benchmarks.add_benchmarks(found, creator, presets)
        except benchmarks.BenchmarkError as exc:
            raise CommandError(str(exc)) from None
        for dataset, created in added:
            what = "created (validating in the background)" if created else f"already there ({dataset.status})"
            self.stdout.write(f"{dataset.name}: dataset #{dataset.pk} {what}")
