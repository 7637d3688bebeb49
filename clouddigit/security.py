"""Content-Security-Policy for every response (Django 5.2 has no CSP of its own; Django 6 does).

The policy is SECURE_CSP, a dict of directive -> sources, the shape of Django 6's setting so that moving
to its middleware changes no policy. A view that needs a different policy (Swagger UI) says so with
`csp_override`; a response that already carries the header keeps it.
"""

from __future__ import annotations

import functools

from django.conf import settings

HEADER = "Content-Security-Policy"


def policy(directives: dict[str, list[str]]) -> str:
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault(HEADER, policy(settings.SECURE_CSP))
        return response


def csp_override(directives: dict[str, list[str]]):
    """The view's responses carry SECURE_CSP with these directives replaced."""

    def decorate(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            response = view(request, *args, **kwargs)
            response.headers[HEADER] = policy({**settings.SECURE_CSP, **directives})
            return response

        return wrapper

    return decorate
