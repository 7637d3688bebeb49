from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "clouddigit.compute"
    label = "compute"
    verbose_name = "Compute inventory"

    def ready(self) -> None:
        from django.db.models import Q

        from clouddigit import operations
        from clouddigit.compute import services, work
        from clouddigit.compute.models import VM, Volume

        operations.register(
            Volume,
            active=[
                Volume.State.CREATING,
                Volume.State.RESIZING,
                Volume.State.DETACHING,
                Volume.State.DELETING,
            ],
            resume=services.resume_volume_operation,
            give_up=work.give_up_volume_operation,
            # A VM's new boot volume is the VM's operation; a restored volume (on a snapshot's layer) is
            # its restore's.
            where=~Q(state=Volume.State.CREATING) | Q(vm=None, backing_layer=None),
        )
        operations.register(
            VM,
            active=[VM.State.CREATING, VM.State.DELETING],
            resume=services.resume_vm_operation,
            give_up=work.give_up_vm_operation,
        )
