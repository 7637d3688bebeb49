from __future__ import annotations

from django.urls import path

from images import attestation_views, views

app_name = "images"
urlpatterns = [
    path("", views.catalogue_page, name="catalogue"),
    path("limit/", views.raise_limit, name="raise-limit"),
    path("upload/", views.upload, name="upload"),
    path("launch/", views.launch_page, name="launch"),
    path("launch/why-missing/", views.why_missing, name="why-missing"),
    path("promote/<uuid:snapshot_pk>/", views.promote, name="promote"),
    path("policy/", attestation_views.image_policy, name="policy"),
    path("policy/set/", attestation_views.set_image_policy, name="policy-set"),
    path("<uuid:pk>/", views.image_detail, name="detail"),
    path("<uuid:pk>/file/", views.upload_file, name="file"),
    path("<uuid:pk>/tags/", views.set_tags, name="tags"),
    path("<uuid:pk>/visibility/", views.set_visibility, name="visibility"),
    path("<uuid:pk>/share/", views.share, name="share"),
    path("<uuid:pk>/unshare/", views.unshare, name="unshare"),
    path("<uuid:pk>/deprecate/", views.deprecate, name="deprecate"),
    path("<uuid:pk>/undeprecate/", views.image_button, {"action": "undeprecate"}, name="undeprecate"),
    path("<uuid:pk>/copy/", views.copy, name="copy"),
    path("<uuid:pk>/retry/", views.image_button, {"action": "retry"}, name="retry"),
    path("<uuid:pk>/delete/", views.image_button, {"action": "delete"}, name="delete"),
    path("<uuid:pk>/attest/", attestation_views.attest, name="attest"),
]
