from __future__ import annotations

from django.urls import path

from snapshots import metrics_view

urlpatterns = [path("", metrics_view.metrics, name="metrics")]
