from __future__ import annotations

import pytest

from clouddigit.backends import volumes
from clouddigit.compute import services as compute
from iam.services import grant_role

MiB = 2**20


@pytest.fixture
def run(django_capture_on_commit_callbacks):
    """Run a service and the tasks it queues (eagerly, in this process), as a worker would."""

    def call(service, **kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            result = service(**kwargs)
        if hasattr(result, "refresh_from_db") and type(result).objects.filter(pk=result.pk).exists():
            result.refresh_from_db()  # what the tasks wrote
        return result

    return call


@pytest.fixture
def operator(django_user_model, prod):
    django_user_model.objects.create_user("olga")
    grant_role(actor=None, role="snapshot.operator", account=prod.account, project=prod, username="olga")
    return django_user_model.objects.get(username="olga")


@pytest.fixture
def snap_admin(django_user_model, prod):
    django_user_model.objects.create_user("sam")
    grant_role(actor=None, role="snapshot.admin", account=prod.account, project=prod, username="sam")
    return django_user_model.objects.get(username="sam")


@pytest.fixture
def data_volume(prod, dha):
    volume = compute.create_volume(actor=None, project=prod, region=dha, name="data-01", size_bytes=16 * MiB)
    volumes.write_pattern(volume.path, 0, 4 * MiB, 0x11)
    return volume
