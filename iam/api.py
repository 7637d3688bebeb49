"""REST API for role bindings: list who has which role where, grant (create) and revoke (delete)."""

from __future__ import annotations

import django_filters
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.response import Response

from clouddigit.access import project_by_reference
from clouddigit.compute.models import Account, Project
from clouddigit.errors import InvalidRequest
from iam import services
from iam.models import RoleBinding
from iam.roles import ROLE_CHOICES, ROLES


class RoleBindingSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    group = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    account = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    project = serializers.StringRelatedField(read_only=True, allow_null=True)
    permissions = serializers.SerializerMethodField()

    class Meta:
        model = RoleBinding
        fields = [
            "id",
            "role",
            "user",
            "group",
            "account",
            "project",
            "permissions",
            "granted_by",
            "created_at",
        ]

    def get_permissions(self, binding) -> list[str]:
        return sorted(ROLES[binding.role].permissions)


class GrantSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLE_CHOICES)
    user = serializers.CharField(required=False, allow_blank=True, default="", help_text="username")
    group = serializers.CharField(required=False, allow_blank=True, default="", help_text="group name")
    account = serializers.SlugField(required=False, help_text="account slug; implied by an account/project")
    project = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="account/project or a project id; empty for the whole account",
    )


class RoleBindingFilter(django_filters.FilterSet):
    role = django_filters.ChoiceFilter(choices=ROLE_CHOICES, empty_label="any")
    user = django_filters.CharFilter(field_name="user__username", label="User")
    group = django_filters.CharFilter(field_name="group__name", label="Group")
    account = django_filters.CharFilter(field_name="account__slug")
    project = django_filters.CharFilter(method="filter_project", help_text="account/project or a project id")

    class Meta:
        model = RoleBinding
        fields = ["role", "user", "group", "account", "project"]

    def filter_project(self, queryset, name, value):
        return queryset.filter(project__in=Project.objects.by_reference(value))


def resolve_scope(user, account_slug: str | None, project_ref: str) -> tuple[Account, Project | None]:
    """The account and project a grant names, looked up among what `user` may see (else a clear error)."""
    project = None
    if project_ref:
        project = project_by_reference(user, project_ref)
        if account_slug and project.account.slug != account_slug:
            raise InvalidRequest(f"Project {project} is not in account {account_slug}.", field="project")
        return project.account, project
    if not account_slug:
        raise InvalidRequest("Name the account (or a project) the role applies to.", field="account")
    account = Account.objects.visible_to(user).filter(slug=account_slug).first()
    if account is None:
        raise InvalidRequest(f"There is no account {account_slug!r} that you can see.", field="account")
    return account, None


class RoleBindingViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = RoleBindingSerializer
    filterset_class = RoleBindingFilter

    def get_queryset(self):
        return RoleBinding.objects.visible_to(self.request.user).select_related(
            "user", "group", "account", "project__account"
        )

    def get_serializer_class(self):
        return GrantSerializer if self.action == "create" else RoleBindingSerializer

    def create(self, request, *args, **kwargs):
        """Grant a role: to a user or a group, on a project or a whole account."""
        grant = GrantSerializer(data=request.data)
        grant.is_valid(raise_exception=True)
        data = grant.validated_data
        account, project = resolve_scope(request.user, data.get("account"), data["project"])
        binding = services.grant_role(
            actor=request.user,
            role=data["role"],
            account=account,
            project=project,
            username=data["user"],
            group_name=data["group"],
        )
        return Response(RoleBindingSerializer(binding).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        """Revoke a role binding."""
        services.revoke_role(actor=request.user, binding=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
