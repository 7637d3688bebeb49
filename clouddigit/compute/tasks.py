from __future__ import annotations

from celery import shared_task

from clouddigit.compute import services


@shared_task
def apply_power_state(vm_id: str) -> None:
    # A hypervisor error settles the row back with `last_error` set; the user sees it and retries.
    services.apply_power_state(vm_id)


@shared_task
def define_vm(vm_id: str) -> None:
    services.define_vm(vm_id)
