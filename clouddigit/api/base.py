"""What every viewset shares: pagination, validated input, and looking up what a request names."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination

from clouddigit.compute.models import Region
from clouddigit.errors import InvalidRequest, NotFound


def _whole_number(text: str) -> int | None:
    # ASCII digits only: int() also takes "+3", " 3", "3_0" and other scripts' digits.
    return int(text) if text.isascii() and text.isdigit() else None


class Pagination(PageNumberPagination):
    """`?page=` and `?page_size=` are whole numbers within bounds; anything else is a 400 naming the
    parameter (DRF would quietly use the default page size, and answer 404 for a page of "abc")."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return self.page_size
        size = _whole_number(text)
        if size is None or not 1 <= size <= self.max_page_size:
            raise InvalidRequest(
                f"page_size must be a whole number from 1 to {self.max_page_size}.", field="page_size"
            )
        return size

    def get_page_number(self, request, paginator) -> int:
        number = _whole_number(request.query_params.get(self.page_query_param, "1"))
        if number is None or number < 1:
            raise InvalidRequest("page must be a whole number from 1.", field="page")
        if number > paginator.num_pages:  # an empty list still has its (empty) page 1
            raise NotFound(f"There is no page {number}: the last page is {paginator.num_pages}.")
        return number

    def get_schema_operation_parameters(self, view) -> list[dict]:
        bounds = {"page": {"minimum": 1}, "page_size": {"minimum": 1, "maximum": self.max_page_size}}
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"] = {"type": "integer", **bounds[parameter["name"]]}
        return parameters


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, with two differences. A refused value's message is passed on as Django
    rendered it: django-filter %-formats every message a second time, so a value with a `%` in it, which
    our messages quote back, was a 500. And a filter that was renamed (the FilterSet's `renamed`, old
    name -> new) is refused naming its new name, rather than ignored: a client still sending it would
    take the unfiltered list for the filtered one."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        for old, new in getattr(filterset, "renamed", {}).items():
            if old in request.query_params:
                value = request.query_params[old]
                raise InvalidRequest(f"The {old} filter is now called {new}: send ?{new}={value}.", field=old)
        if not filterset.is_valid():
            raise ValidationError({name: list(errors) for name, errors in filterset.errors.items()})
        return filterset.qs


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
