"""One way for every console action: run the service, show its refusal where the user acted, record the
refusal once, redirect after success; ask before destroying; and settle polling.

A failed action answers the page again with the error at the form (or above the page for a button
without a form), with the service's status (400, 403, 409...) for htmx and plain posts alike. htmx is
told in base.html (`responseHandling`) to swap 4xx answers, and `HX-Retarget: body` puts the page in
place of the one the user acted on, so the address bar keeps the page's URL. A plain post without
JavaScript shows the same page at the form's URL, as any Django form does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import resolve
from django.utils.http import url_has_allowed_host_and_scheme

from clouddigit.audit.log import record_invalid_form, record_refusal
from clouddigit.errors import PermissionRefused, ServiceError
from clouddigit.htmx import redirect_after_post, wants_fragment

# htmx adds this to every post a `partials/confirm_form.html` button sends, once the user said yes in
# its dialog; a post without it (no JavaScript) is answered with a page that asks first.
CONFIRMED = "confirmed"


class ConfirmForm(forms.Form):
    """The typed name that destroying data asks for (`partials/typed_confirm.html`). Not required here:
    the service checks it and its refusal says what to type, in the console, the API and the CLI."""

    confirm = forms.CharField(required=False, label="Type the name to confirm")


def act(
    request,
    *,
    action: str,
    target: Any,
    run: Callable[[], Any],
    page: Callable[[], HttpResponse],
    then: str | Callable[[Any], str],
    success: str | Callable[[Any], str] = "",
    form=None,
    confirm: str = "",
) -> HttpResponse:
    """`run` calls the service (reading `form.cleaned_data` once valid); `page` renders the page the
    user acted on, showing `form`; `then` is where success goes (or makes it from the result); the
    audit log gets `action` on `target` for a refusal the service did not log itself. `confirm` is the
    question a destructive action without a typed name asks first."""
    if confirm and request.POST.get(CONFIRMED) != "yes":
        return _ask(request, confirm, then if isinstance(then, str) else "")
    if form is not None and not form.is_valid():
        record_invalid_form(actor=request.user, action=action, target=target, form=form)
        return _failed(request, page, 400)
    try:
        result = run()
    except ServiceError as error:
        record_refusal(actor=request.user, action=action, target=target, error=error)
        if form is not None and not isinstance(error, PermissionRefused):
            form.add_error(error.field if error.field in form.fields else None, error.shown)
        else:
            # A refusal of permission is about the user, not the form (which they may not even see).
            messages.error(request, error.shown)
        return _failed(request, page, error.status)
    text = success(result) if callable(success) else success
    if text:
        messages.success(request, text)
    return redirect_after_post(request, then(result) if callable(then) else then)


def page_at(request, url: str, **forms) -> HttpResponse:
    """The page at `url`, as its own view renders it, showing `forms` (a refused form, by the name its
    panel looks for) in place of fresh ones. An app's panel on another app's page (a template tag of the
    panel's app) posts to its own app's view; that view's `act(page=...)` shows the refusal on the page
    the user acted on with this, without importing the other app's views. The panel's tag finds the
    form with `posted_form`, and the navigation shows the page's section (base.html)."""
    match = resolve(url)
    request.panel_forms = forms
    request.shown_page = match
    return match.func(request, *match.args, **match.kwargs)


def posted_form(context, name: str):
    """The refused form `name` that `page_at` passes to a panel on the page, else None."""
    return getattr(context.get("request"), "panel_forms", {}).get(name)


def _failed(request, page: Callable[[], HttpResponse], status: int) -> HttpResponse:
    response = page()
    response.status_code = status
    if request.htmx:
        # The answer is the whole page: it replaces the page, not the form that was posted.
        response["HX-Retarget"] = "body"
        response["HX-Reswap"] = "innerHTML"
    return response


def _ask(request, question: str, back: str) -> HttpResponse:
    """Without JavaScript there is no dialog: a page asks, and posts the same form again with yes."""
    referer = request.headers.get("Referer", "")
    if url_has_allowed_host_and_scheme(referer, {request.get_host()}, request.is_secure()):
        back = referer
    fields = [
        (name, value)
        for name, values in request.POST.lists()
        for value in values
        if name not in {"csrfmiddlewaretoken", CONFIRMED}
    ]
    context = {"question": question, "action": request.path, "fields": fields, "back": back}
    return render(request, "confirm.html", context)


def settle(request, response: HttpResponse, *, settled: bool) -> HttpResponse:
    """A polled status fragment: once what it watches has settled, stop polling (286) and reload the
    page, so every panel the operation changed (sizes, actions, restores) is shown as it is now."""
    if settled and wants_fragment(request):
        response.status_code = 286
        response["HX-Refresh"] = "true"
    return response
