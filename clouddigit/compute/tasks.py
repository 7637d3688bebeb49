"""Thin tasks. The volume operations claim their row first (clouddigit/operations.py): a duplicate
delivery or a re-queue by the reconciler does nothing while another worker holds it."""

from __future__ import annotations

from celery import shared_task

from clouddigit.compute import services
from clouddigit.compute.models import VM, Volume
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


def _operation(model, pk: str, step, fail) -> None:
    """Run one step of a long operation on a claimed row; a failure is recorded on the row, then raised."""
    with claimed(model, pk) as claim:
        if not claim:
            return
        try:
            step(pk)
        except Exception as error:
            fail(pk, str(error))
            raise


@shared_task
def finish_detach(volume_id: str) -> None:
    _operation(Volume, volume_id, services.finish_detach, services.fail_volume_operation)


@shared_task
def finish_delete_volume(volume_id: str) -> None:
    _operation(Volume, volume_id, services.finish_delete_volume, services.fail_volume_operation)


@shared_task
def finish_delete_vm(vm_id: str) -> None:
    _operation(VM, vm_id, services.finish_delete_vm, services.fail_delete_vm)
