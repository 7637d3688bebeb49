from __future__ import annotations

from django.urls import path

from iam import views
from images import attestation_views

app_name = "iam"
urlpatterns = [
    path("", views.bindings, name="bindings"),
    path("grant/", views.grant, name="grant"),
    path("bindings/<uuid:pk>/revoke/", views.revoke, name="revoke"),
    path("users/<str:username>/", views.effective, name="effective"),
    path("signing-keys/", attestation_views.signing_keys, name="signing-keys"),
    path("signing-keys/register/", attestation_views.register_signing_key, name="signing-key-register"),
    path("signing-keys/<uuid:pk>/revoke/", attestation_views.revoke_signing_key, name="signing-key-revoke"),
]
