"""Console pages that belong to no single app: scope switchers and the backend status page."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from clouddigit.context import SESSION_PROJECT, SESSION_REGION
from clouddigit.health import backend_health
from clouddigit.models import Heartbeat

HEARTBEAT_STALE_AFTER = timedelta(seconds=90)


@login_required
def home(request):
    return redirect("compute:vm-list")


@login_required
@require_POST
def switch_scope(request):
    scope = request.scope
    project = request.POST.get("project")
    if project is not None and any(str(p.pk) == project for p in scope.projects):
        request.session[SESSION_PROJECT] = project
    region = request.POST.get("region")
    if region is not None:
        request.session[SESSION_REGION] = region if any(r.slug == region for r in scope.regions) else ""
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    # Filters and page numbers belong to the previous scope.
    return redirect(target.split("?", 1)[0])


@login_required
def status(request):
    now = timezone.now()
    heartbeats = {beat.name: beat for beat in Heartbeat.objects.all()}
    worker = heartbeats.get("worker")
    context = {
        "checks": backend_health(),
        "worker": worker,
        "worker_alive": bool(worker and now - worker.last_seen < HEARTBEAT_STALE_AFTER),
        "broker_url": settings.CELERY_BROKER_URL.split("@")[-1],
    }
    return render(request, "status.html", context)
