from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from clouddigit import views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("scope/", views.switch_scope, name="switch-scope"),
    path("status/", views.status, name="status"),
    path("compute/", include("clouddigit.compute.urls")),
    path("snapshots/", include("snapshots.urls")),
    path("images/", include("images.urls")),
    path("policies/", include("policies.urls")),
    path("iam/", include("iam.urls")),
    path("audit/", include("clouddigit.audit.urls")),
    path("api/v1/", include("clouddigit.api.urls")),
    path("metrics", include("snapshots.metrics_urls")),
    path("admin/", admin.site.urls),
]
