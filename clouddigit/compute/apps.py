from __future__ import annotations

from django.apps import AppConfig


class ComputeConfig(AppConfig):
    name = "clouddigit.compute"
    label = "compute"
    verbose_name = "Compute inventory"
