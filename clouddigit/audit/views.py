from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator

from clouddigit.audit.export import csv_response
from clouddigit.audit.filters import AuditFilter
from clouddigit.audit.models import AuditEntry
from clouddigit.htmx import render_page_or_fragment


def _filtered(request) -> AuditFilter:
    entries = AuditEntry.objects.visible_to(request.user).select_related("account", "project__account")
    return AuditFilter(request.GET, queryset=entries)


@login_required
def entries(request):
    filterset = _filtered(request)
    page = Paginator(filterset.qs, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"filter": filterset, "page": page, "query": query.urlencode()}
    return render_page_or_fragment(request, "audit/entries.html", "table", context)


@login_required
def export(request):
    return csv_response(_filtered(request).qs)
