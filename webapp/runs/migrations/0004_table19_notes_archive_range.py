from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0003_run_eval_suite'),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='metric_range',
            field=models.JSONField(blank=True, default=dict, help_text='[min, max] of each metric over the run (kept by the sink)'),
        ),
        migrations.AddField(
            model_name='run',
            name='notes',
            field=models.TextField(blank=True, max_length=20000),
        ),
        migrations.AddField(
            model_name='run',
            name='archived_at',
            field=models.DateTimeField(blank=True, help_text='Hidden from the run table while set', null=True),
        ),
    ]
