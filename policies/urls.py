from __future__ import annotations

from django.urls import path

from policies import views

app_name = "policies"
urlpatterns = [
    path("", views.policy_list, name="list"),
    path("apply/", views.apply, name="apply"),
    path("<uuid:pk>/", views.policy_detail, name="detail"),
    path("<uuid:pk>/edit/", views.edit, name="edit"),
    path("<uuid:pk>/export/", views.export, name="export"),
    path("<uuid:pk>/drill/", views.drill, name="drill"),
    path("<uuid:pk>/delete/", views.delete, name="delete"),
    path("drills/<uuid:pk>/retry/", views.drill_action, {"action": "retry"}, name="drill-retry"),
    path("drills/<uuid:pk>/delete/", views.drill_action, {"action": "delete"}, name="drill-delete"),
    path("channels/", views.channel_create, name="channel-create"),
    path("channels/<uuid:pk>/secret/", views.channel_rotate_secret, name="channel-rotate-secret"),
    path("channels/<uuid:pk>/delete/", views.channel_delete, name="channel-delete"),
]
