from __future__ import annotations

from django.apps import AppConfig


class SnapshotsConfig(AppConfig):
    name = "snapshots"
    verbose_name = "Snapshots"

    def ready(self) -> None:
        from clouddigit import operations
        from clouddigit.compute import dependents as volume_dependents
        from snapshots import dependents, services
        from snapshots.models import Restore, Snapshot

        operations.register(
            Snapshot,
            active=[Snapshot.State.CREATING, Snapshot.State.DELETING],
            resume=services.resume,
            give_up=services.give_up,
        )
        operations.register(
            Restore,
            active=[Restore.State.RESTORING],
            resume=services.resume_restore,
            give_up=services.give_up_restore,
        )
        volume_dependents.register(holding=dependents.holding, delete=dependents.delete_with)
