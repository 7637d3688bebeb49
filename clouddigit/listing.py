"""How every console list is built: the rows of the header's project and region, one FilterSet,
paginated, rendered as a page or (for HTMX) just its table."""

from __future__ import annotations

from django.core.paginator import Paginator

from clouddigit.htmx import render_page_or_fragment

PAGE_SIZE = 50


def in_scope(queryset, request):
    """The rows of the project and region chosen in the header's switchers."""
    scope = request.scope
    if not scope or scope.project is None:
        return queryset.none()
    queryset = queryset.filter(project=scope.project)
    if scope.region is not None:
        queryset = queryset.filter(region=scope.region)
    return queryset


def list_page(request, filterset, template: str, page_size: int = PAGE_SIZE, extra: dict | None = None):
    page = Paginator(filterset.qs, page_size).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"filter": filterset, "page": page, "query": query.urlencode(), **(extra or {})}
    return render_page_or_fragment(request, template, "table", context)
