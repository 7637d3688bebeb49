from __future__ import annotations

from django.contrib.auth.decorators import login_required

from clouddigit.audit.export import csv_response
from clouddigit.audit.filters import AuditFilter
from clouddigit.audit.models import AuditEntry
from clouddigit.listing import list_page


def _filtered(request) -> AuditFilter:
    entries = AuditEntry.objects.visible_to(request.user).select_related("account", "project__account")
    return AuditFilter(request.GET, queryset=entries)


@login_required
def entries(request):
    return list_page(request, _filtered(request), "audit/entries.html", page_size=100)


@login_required
def export(request):
    return csv_response(_filtered(request).qs)
