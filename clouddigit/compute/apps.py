from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "clouddigit.compute"
    label = "compute"
    verbose_name = "Compute inventory"

    def ready(self) -> None:
        from clouddigit import operations
        from clouddigit.compute import services, work
        from clouddigit.compute.models import VM, Volume

        operations.register(
            Volume,
            active=[Volume.State.DETACHING, Volume.State.DELETING],
            resume=services.resume_volume_operation,
            give_up=work.give_up_volume_operation,
        )
        operations.register(
            VM,
            active=[VM.State.DELETING],
            resume=services.resume_delete_vm,
            give_up=work.give_up_delete_vm,
        )
