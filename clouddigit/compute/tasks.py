from __future__ import annotations

from celery import shared_task

from clouddigit.compute import services
from clouddigit.compute.models import VM
from clouddigit.operations import claimed


@shared_task
def apply_power_state(vm_id: str) -> None:
    # A hypervisor error settles the row back with `last_error` set; the user sees it and retries.
    services.apply_power_state(vm_id)


@shared_task
def define_vm(vm_id: str) -> None:
    services.define_vm(vm_id)


@shared_task
def finish_delete_vm(vm_id: str) -> None:
    """Claims the VM's row (clouddigit.operations), so a duplicate delivery does nothing."""
    with claimed(VM, vm_id) as claim:
        if not claim:
            return
        try:
            services.finish_delete_vm(vm_id)
        except Exception as error:
            services.fail_delete_vm(vm_id, str(error))
            raise
