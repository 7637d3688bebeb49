import secrets

from django.db import migrations, models


def give_webhooks_a_secret(apps, schema_editor):
    """Existing webhook channels get a secret too; their owners rotate it to learn it."""
    NotificationChannel = apps.get_model("policies", "NotificationChannel")
    for channel in NotificationChannel.objects.filter(kind="webhook", secret=""):
        channel.secret = secrets.token_hex(32)
        channel.save(update_fields=["secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0005_retention_only"),
    ]

    operations = [
        migrations.AddField(
            model_name="notificationchannel",
            name="secret",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.RunPython(give_webhooks_a_secret, migrations.RunPython.noop),
    ]
