from __future__ import annotations

from django.urls import path

from snapshots import replication_views, views

app_name = "snapshots"
urlpatterns = [
    path("", views.snapshot_list, name="list"),
    path("replication/", replication_views.replication_page, name="replication"),
    path("<uuid:pk>/", views.snapshot_detail, name="detail"),
    path("<uuid:pk>/restore-volume/", views.restore_volume, name="restore-volume"),
    path("<uuid:pk>/restore-vm/", views.restore_vm, name="restore-vm"),
    path("<uuid:pk>/rollback/", views.rollback, name="rollback"),
    path("<uuid:pk>/delete/", views.delete, name="delete"),
    path("<uuid:pk>/retry/", views.retry, name="retry"),
    path("<uuid:pk>/copy/", views.copy, name="copy"),
    path("<uuid:pk>/tags/", views.tag, name="tag"),
    path("<uuid:pk>/hold/", views.hold, name="hold"),
    path("restores/<uuid:pk>/retry/", views.restore_action, {"action": "retry"}, name="restore-retry"),
    path("restores/<uuid:pk>/delete/", views.restore_action, {"action": "delete"}, name="restore-delete"),
    path("of-vm/<uuid:pk>/", views.create_for_vm, name="create-for-vm"),
    path("of-volume/<uuid:pk>/", views.create_for_volume, name="create-for-volume"),
    path("of-volume/<uuid:pk>/limit/", views.raise_volume_limit, name="raise-volume-limit"),
]
