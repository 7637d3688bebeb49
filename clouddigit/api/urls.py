from __future__ import annotations

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from clouddigit.api.errors import not_found
from clouddigit.api.token import TokenView
from clouddigit.audit.api import AuditEntryViewSet
from clouddigit.compute.api import ProjectViewSet, RegionViewSet, VolumeViewSet
from clouddigit.security import csp_override
from iam.api import RoleBindingViewSet
from images.api import ImageLimitViewSet, ImageViewSet, VMLaunchViewSet
from images.attestation_api import ImagePolicyViewSet, SigningKeyViewSet
from images.storage_api import StorageQuotaViewSet
from policies.api import DrillViewSet, PolicyViewSet
from snapshots.api import RestoreViewSet, SnapshotLimitViewSet, SnapshotViewSet
from snapshots.replication_api import ReplicationView


class Router(DefaultRouter):
    # No `.json` suffix routes: JSON is negotiated by Accept alone (see URL_FORMAT_OVERRIDE in settings).
    include_format_suffixes = False


router = Router()
router.register("projects", ProjectViewSet, basename="project")
router.register("regions", RegionViewSet, basename="region")
router.register("compute/vms", VMLaunchViewSet, basename="vm")
router.register("compute/volumes", VolumeViewSet, basename="volume")
router.register("compute/snapshots", SnapshotViewSet, basename="snapshot")
router.register("compute/restores", RestoreViewSet, basename="restore")
router.register("compute/snapshot-limits", SnapshotLimitViewSet, basename="snapshot-limit")
router.register("compute/images", ImageViewSet, basename="image")
router.register("compute/image-limits", ImageLimitViewSet, basename="image-limit")
router.register("compute/image-policies", ImagePolicyViewSet, basename="image-policy")
router.register("compute/storage-quotas", StorageQuotaViewSet, basename="storage-quota")
router.register("compute/snapshot-policies", PolicyViewSet, basename="snapshot-policy")
router.register("compute/restore-drills", DrillViewSet, basename="drill")
router.register("iam/role-bindings", RoleBindingViewSet, basename="role-binding")
router.register("iam/signing-keys", SigningKeyViewSet, basename="signing-key")
router.register("audit/entries", AuditEntryViewSet, basename="audit-entry")

app_name = "api"
urlpatterns = [
    path("auth/token/", TokenView.as_view(), name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view loads its start-up script from a URL instead of inlining it; Swagger UI still
    # styles its own elements inline, so only this page allows inline styles.
    path(
        "docs/",
        csp_override({"style-src": ["'self'", "'unsafe-inline'"]})(
            SpectacularSwaggerSplitView.as_view(url_name="api:schema")
        ),
        name="docs",
    ),
    path("compute/replication/", ReplicationView.as_view(), name="replication-list"),
    path("", include(router.urls)),
    re_path(r"", not_found),
]
