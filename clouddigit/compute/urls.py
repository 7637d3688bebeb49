from __future__ import annotations

from django.urls import path

from clouddigit.compute import views

app_name = "compute"
urlpatterns = [
    path("vms/", views.vm_list, name="vm-list"),
    path("vms/<uuid:pk>/", views.vm_detail, name="vm-detail"),
    path("vms/<uuid:pk>/start/", views.vm_power, {"action": "start"}, name="vm-start"),
    path("vms/<uuid:pk>/stop/", views.vm_power, {"action": "stop"}, name="vm-stop"),
    path("vms/<uuid:pk>/retry/", views.vm_power, {"action": "retry"}, name="vm-retry"),
    path("vms/<uuid:pk>/delete/", views.vm_delete, name="vm-delete"),
    path("vms/<uuid:pk>/tags/", views.vm_tags, name="vm-tags"),
    path("volumes/", views.volume_list, name="volume-list"),
    path("volumes/create/", views.volume_create, name="volume-create"),
    path("volumes/<uuid:pk>/", views.volume_detail, name="volume-detail"),
    path("volumes/<uuid:pk>/attach/", views.volume_attach, name="volume-attach"),
    path("volumes/<uuid:pk>/detach/", views.volume_detach, name="volume-detach"),
    path("volumes/<uuid:pk>/resize/", views.volume_resize, name="volume-resize"),
    path("volumes/<uuid:pk>/retry/", views.volume_retry, name="volume-retry"),
    path("volumes/<uuid:pk>/delete/", views.volume_delete, name="volume-delete"),
    path("volumes/<uuid:pk>/tags/", views.volume_tags, name="volume-tags"),
]
