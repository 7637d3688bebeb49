from __future__ import annotations

from django.apps import AppConfig


class SnapshotsConfig(AppConfig):
    name = "snapshots"
    verbose_name = "Snapshots"

    def ready(self) -> None:
        from clouddigit import operations
        from clouddigit.compute import hooks
        from snapshots import dependents, services, work
        from snapshots.models import Restore, Snapshot

        operations.register(
            Snapshot,
            active=[Snapshot.State.CREATING, Snapshot.State.DELETING],
            resume=services.resume,
            give_up=work.give_up,
        )
        operations.register(
            Restore,
            active=[Restore.State.RESTORING],
            resume=services.resume_restore,
            give_up=work.give_up_restore,
        )
        hooks.register_vm_delete_check(services.vm_delete_blocker)
        hooks.register_volume_dependent(holding=dependents.holding, delete=dependents.delete_with)
