from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("dashboards", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="dashboard",
            name="leaderboard",
            field=models.JSONField(blank=True, default=dict,
                                   help_text="Leaderboard settings: suite id, pick (best|final), baseline run id"),
        ),
    ]
