from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from clouddigit.access import can
from clouddigit.compute.models import Account
from clouddigit.compute.permissions import Perm
from clouddigit.console import act
from iam import services
from iam.api import RoleBindingFilter
from iam.forms import GrantForm
from iam.models import RoleBinding
from iam.roles import ROLES


def _accounts(user):
    """Accounts whose bindings the user may list: those it administers or audits."""
    return (
        Account.objects.holding(user, Perm.MANAGE_ROLES) | Account.objects.holding(user, Perm.VIEW_AUDIT)
    ).distinct()


def _current_account(request):
    accounts = list(_accounts(request.user))
    wanted = request.GET.get("account") or request.POST.get("account")
    if wanted is None and request.scope and request.scope.project:
        wanted = request.scope.project.account.slug
    return accounts, next((a for a in accounts if a.slug == wanted), accounts[0] if accounts else None)


@login_required
def bindings(request, form: GrantForm | None = None, status: int = 200):
    accounts, account = _current_account(request)
    queryset = RoleBinding.objects.visible_to(request.user).select_related(
        "user", "group", "account", "project"
    )
    if account is not None:
        queryset = queryset.filter(account=account)
    filterset = RoleBindingFilter(request.GET, queryset=queryset)
    page = Paginator(filterset.qs, 100).get_page(request.GET.get("page"))
    can_grant = account is not None and can(request.user, Perm.MANAGE_ROLES, account)
    if form is None and can_grant:
        form = GrantForm(account=account)
    context = {
        "accounts": accounts,
        "account": account,
        "filter": filterset,
        "page": page,
        "form": form,
        "can_grant": can_grant,
        "roles": ROLES.values(),
    }
    return render(request, "iam/bindings.html", context, status=status)


@login_required
@require_POST
def grant(request):
    _, account = _current_account(request)
    if account is None:
        raise Http404("You administer no account.")
    form = GrantForm(request.POST, account=account)
    return act(
        request,
        action="iam.role.grant",
        target=account,
        run=lambda: services.grant_role(
            actor=request.user,
            role=form.cleaned_data["role"],
            account=account,
            project=form.project,
            username=form.cleaned_data["user"],
            group_name=form.cleaned_data["group"],
        ),
        page=lambda: bindings(request, form=form),
        form=form,
        success=lambda binding: f"Granted {binding}.",
        then=f"{reverse('iam:bindings')}?account={account.slug}",
    )


@login_required
@require_POST
def revoke(request, pk):
    binding = get_object_or_404(RoleBinding.objects.visible_to(request.user), pk=pk)
    account = binding.account
    return act(
        request,
        action="iam.role.revoke",
        target=binding,
        run=lambda: services.revoke_role(actor=request.user, binding=binding),
        page=lambda: bindings(request),
        success=f"Revoked {binding.role} from {binding.principal_label} on {binding.scope_label}.",
        then=f"{reverse('iam:bindings')}?account={account.slug}",
        confirm=f"Revoke {binding.role} from {binding.principal_label} on {binding.scope_label}?",
    )


@login_required
def effective(request, username):
    """A user's roles per project and what they add up to, as far as the viewer may see."""
    visible_accounts = {account.pk for account in _accounts(request.user)}
    # Only the viewer and the users of accounts the viewer administers or audits: any other name is the
    # same 404, whether or not such a user exists.
    users = get_user_model().objects.filter(
        Q(pk=request.user.pk) | Q(account_memberships__account__in=visible_accounts)
    )
    user = get_object_or_404(users.distinct(), username=username)
    rows = [
        row
        for row in services.effective_roles(user)
        if user == request.user or row["project"].account_id in visible_accounts
    ]
    return render(request, "iam/effective.html", {"subject": user, "rows": rows})
