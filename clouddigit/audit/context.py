"""Who is asking from where: set per request by the middleware, read by the audit log.

A context variable rather than a parameter on every service: services take the acting user, and the
source address is a property of the request, not of the operation.
"""

from __future__ import annotations

from contextvars import ContextVar

from django.conf import settings

source_ip: ContextVar[str | None] = ContextVar("source_ip", default=None)


def client_ip(request) -> str | None:
    """REMOTE_ADDR, or the address the configured number of trusted proxies saw (X-Forwarded-For)."""
    proxies = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            return hops[-proxies]
    return request.META.get("REMOTE_ADDR") or None


class SourceIPMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = source_ip.set(client_ip(request))
        try:
            return self.get_response(request)
        finally:
            source_ip.reset(token)
