from django.db import migrations, models


LZ4 = """
DO $$ BEGIN
  EXECUTE 'ALTER TABLE runs_run ALTER COLUMN config SET COMPRESSION lz4, '
          'ALTER COLUMN summary SET COMPRESSION lz4, ALTER COLUMN metric_range SET COMPRESSION lz4';
EXCEPTION WHEN OTHERS THEN RAISE NOTICE 'lz4 compression unavailable: %', SQLERRM;
END $$;
"""


class Migration(migrations.Migration):

    dependencies = [
        ('runs', '0005_run_effective_group'),
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
        # The run table sorts 10,000 runs by a value inside these jsonb columns: rows over 2 kB
        # store them compressed, and lz4 decompresses about twice as fast as the default pglz
        # (bench/runtable.py). A server built without lz4 keeps pglz.
        migrations.RunSQL(LZ4, migrations.RunSQL.noop),
    ]
