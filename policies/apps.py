from __future__ import annotations

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "policies"
    verbose_name = "Snapshot policies"

    def ready(self) -> None:
        from clouddigit import operations
        from clouddigit.compute import hooks
        from policies import drills, scope, work
        from policies.models import Drill

        operations.register(Drill, active=[Drill.State.RUNNING], resume=drills.resume, give_up=work.give_up)
        hooks.register_tag_scope(scope.policy_scope_tags)
