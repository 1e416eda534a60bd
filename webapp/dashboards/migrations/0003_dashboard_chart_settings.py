from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("dashboards", "0002_dashboard_leaderboard"),
    ]

    operations = [
        migrations.AddField(
            model_name="dashboard",
            name="chart_settings",
            field=models.JSONField(blank=True, default=dict,
                                   help_text="Chart toolbar: log (bool), xmode (step|wall|relative), sync (bool)"),
        ),
    ]
