"""One view serves a page and its fragment: the server picks the fragment, never the client."""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import redirect, render


def wants_fragment(request) -> bool:
    """An htmx GET (a poll, a picker) is answered with the fragment it swaps. A post answered with a
    page (a refusal shown on the page, clouddigit.console.page_at) always gets the whole page."""
    return request.method == "GET" and bool(request.htmx) and not request.htmx.boosted


def render_page_or_fragment(request, template: str, fragment: str, context: dict):
    if wants_fragment(request):
        return render(request, f"{template}#{fragment}", context)
    return render(request, template, context)


def redirect_after_post(request, url: str):
    """Post/redirect/get. An HTMX post is told where to go with HX-Location instead: a 302 would be
    followed inside the XHR and the header lost."""
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Location"] = url
        return response
    return redirect(url)
