from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("callbacks", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="callbacktask",
            name="retry_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
