from __future__ import annotations

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Snapshot policies"

    def ready(self) -> None:
        from clouddigit import operations
        from policies import drills, work
        from policies.models import Drill

        operations.register(Drill, active=[Drill.State.RUNNING], resume=drills.resume, give_up=work.give_up)
