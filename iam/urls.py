from __future__ import annotations

from django.urls import path

from iam import views

app_name = "iam"
urlpatterns = [
    path("", views.bindings, name="bindings"),
    path("grant/", views.grant, name="grant"),
    path("bindings/<uuid:pk>/revoke/", views.revoke, name="revoke"),
    path("users/<str:username>/", views.effective, name="effective"),
]
