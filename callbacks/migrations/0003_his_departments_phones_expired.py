from __future__ import annotations

import django.db.models.deletion
import django.db.models.functions.text
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("callbacks", "0002_worklist_retry_at"),
        ("contactcenter", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="discharge",
            name="his_department_code",
            field=models.CharField(blank=True, max_length=40),
        ),
        migrations.AddField(
            model_name="discharge",
            name="his_department_name",
            field=models.CharField(blank=True, max_length=120),
        ),
        migrations.AddField(
            model_name="discharge",
            name="his_department_system",
            field=models.CharField(blank=True, max_length=200),
        ),
        migrations.AddField(
            model_name="discharge",
            name="phone_as_sent",
            field=models.CharField(blank=True, max_length=80),
        ),
        migrations.AddField(
            model_name="discharge",
            name="phone_needs_review",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="discharge",
            name="phone_region",
            field=models.CharField(blank=True, max_length=2),
        ),
        migrations.AlterField(
            model_name="callbacktask",
            name="status",
            field=models.CharField(
                choices=[
                    ("scheduled", "Scheduled"),
                    ("open", "Open"),
                    ("in_progress", "In progress"),
                    ("completed", "Completed"),
                    ("unreachable", "Unreachable"),
                    ("cancelled", "Cancelled"),
                    ("excluded", "Excluded"),
                    ("expired", "Expired"),
                ],
                default="scheduled",
                max_length=12,
            ),
        ),
        migrations.CreateModel(
            name="DepartmentCodeMapping",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "system",
                    models.CharField(
                        blank=True,
                        help_text="The code system, for FHIR serviceType codes that name one; empty for HL7, REST and CSV codes, and to match the code from any system.",
                        max_length=200,
                    ),
                ),
                (
                    "code",
                    models.CharField(help_text="The code as the HIS sends it (letter case is ignored).", max_length=40),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "department",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="his_department_codes",
                        to="contactcenter.team",
                    ),
                ),
            ],
            options={
                "verbose_name": "HIS department code",
                "ordering": ["system", "code"],
                "constraints": [
                    models.UniqueConstraint(
                        models.F("system"),
                        django.db.models.functions.text.Upper("code"),
                        name="his_department_code_unique",
                        violation_error_message="This HIS code is already mapped.",
                    )
                ],
            },
        ),
    ]
