"""Thin tasks. The volume operations claim their row first (clouddigit/operations.py): a duplicate
delivery or a re-queue by the reconciler does nothing while another worker holds it."""

from __future__ import annotations

from celery import shared_task

from clouddigit.compute import services
from clouddigit.compute.models import Volume
from clouddigit.operations import claimed


@shared_task
def apply_power_state(vm_id: str) -> None:
    # A hypervisor error settles the row back with `last_error` set; the user sees it and retries.
    services.apply_power_state(vm_id)


@shared_task
def define_vm(vm_id: str) -> None:
    services.define_vm(vm_id)


@shared_task
def plug_in(volume_id: str) -> None:
    services.plug_in(volume_id)


def _volume_operation(volume_id: str, step) -> None:
    with claimed(Volume, volume_id) as claim:
        if not claim:
            return
        try:
            step(volume_id)
        except Exception as error:
            services.fail_volume_operation(volume_id, str(error))
            raise


@shared_task
def finish_detach(volume_id: str) -> None:
    _volume_operation(volume_id, services.finish_detach)


@shared_task
def finish_delete_volume(volume_id: str) -> None:
    _volume_operation(volume_id, services.finish_delete_volume)
