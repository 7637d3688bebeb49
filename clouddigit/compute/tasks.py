from __future__ import annotations

from celery import shared_task

from clouddigit.compute import work


@shared_task
def apply_power_state(vm_id: str) -> None:
    # A hypervisor error settles the row back with `last_error` set; the user sees it and retries.
    work.apply_power_state(vm_id)


@shared_task
def define_vm(vm_id: str) -> None:
    work.define_vm(vm_id)
