"""What every viewset shares: pagination, validated input, and looking up what a request names."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination

from clouddigit.compute.models import Region
from clouddigit.errors import InvalidRequest


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def valid_data(serializer_class, request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def visible_or_400(queryset, pk, *, field: str, what: str):
    """The object `pk` names among what the caller may see (None when not asked for), else a 400."""
    if pk is None:
        return None
    found = queryset.filter(pk=pk).first()
    if found is None:
        raise InvalidRequest(f"There is no {what} {pk} that you can see.", field=field)
    return found


def region_named(slug: str, field: str = "region") -> Region:
    region = Region.objects.filter(pk=slug).first()
    if region is None:
        known = ", ".join(Region.objects.values_list("pk", flat=True))
        raise InvalidRequest(f"There is no region {slug!r}; choose one of {known}.", field=field)
    return region
