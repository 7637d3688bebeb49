"""One view serves a page and its fragment: the server picks the fragment, never the client."""

from __future__ import annotations

from django.shortcuts import render


def render_page_or_fragment(request, template: str, fragment: str, context: dict):
    if request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#{fragment}", context)
    return render(request, template, context)
