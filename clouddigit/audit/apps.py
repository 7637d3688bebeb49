from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "clouddigit.audit"
    label = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from clouddigit import lockout  # noqa: F401  (lock-outs after repeated sign-in failures)
        from clouddigit.audit import signals  # noqa: F401  (sign-in and sign-in failures)
