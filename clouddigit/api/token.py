from __future__ import annotations

from rest_framework.authtoken.views import ObtainAuthToken


class TokenView(ObtainAuthToken):
    """POST username and password, get the user's API token.

    DRF passes its own Request to authenticate(); django-axes marks the request it is given when it
    refuses a locked-out sign-in, and only Django's HttpRequest reaches its middleware, which turns
    that mark into the lock-out answer. So the serializer gets the HttpRequest.
    """

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "request": self.request._request}
