"""Thin tasks: each runs one worker step (`work.py`) on the region's hypervisor queue.

The long operations (create a volume or a VM, resize, detach, delete a volume or a VM) run through
`operations.run`: it claims the row in the state the step starts from and records a failure on the
row, so a duplicate delivery or a re-queue by the reconciler does nothing while another worker holds
it (clouddigit/operations.py).
"""

from __future__ import annotations

from celery import shared_task

from clouddigit.compute import work
from clouddigit.compute.models import VM, Volume
from clouddigit.operations import run


@shared_task
def apply_power_state(vm_id: str) -> None:
    # A hypervisor error settles the row back with `last_error` set; the user sees it and retries.
    work.apply_power_state(vm_id)


@shared_task
def define_vm(vm_id: str) -> None:
    work.define_vm(vm_id)


@shared_task
def finish_create_volume(volume_id: str) -> None:
    run(
        Volume,
        volume_id,
        state=Volume.State.CREATING,
        step=work.finish_create_volume,
        fail=work.fail_volume_operation,
    )


@shared_task
def finish_create_vm(vm_id: str) -> None:
    run(VM, vm_id, state=VM.State.CREATING, step=work.finish_create_vm, fail=work.fail_create_vm)


@shared_task
def finish_resize(volume_id: str) -> None:
    run(
        Volume,
        volume_id,
        state=Volume.State.RESIZING,
        step=work.finish_resize,
        fail=work.fail_volume_operation,
    )


@shared_task
def plug_in(volume_id: str) -> None:
    work.plug_in(volume_id)


@shared_task
def finish_detach(volume_id: str) -> None:
    run(
        Volume,
        volume_id,
        state=Volume.State.DETACHING,
        step=work.finish_detach,
        fail=work.fail_volume_operation,
    )


@shared_task
def finish_delete_volume(volume_id: str) -> None:
    run(
        Volume,
        volume_id,
        state=Volume.State.DELETING,
        step=work.finish_delete_volume,
        fail=work.fail_volume_operation,
    )


@shared_task
def finish_delete_vm(vm_id: str) -> None:
    run(VM, vm_id, state=VM.State.DELETING, step=work.finish_delete_vm, fail=work.fail_delete_vm)
