"""The project storage quota (images.storage) as a line on the pages whose contents count against it:
the image catalogue and the snapshot list."""

from __future__ import annotations

from django import template

from images import storage

register = template.Library()


@register.inclusion_tag("images/partials/storage_quota.html")
def storage_quota(project):
    used = storage.usage(project)
    return {
        "used": used,
        "used_text": storage.size_text(used.used_bytes),
        "limit_text": storage.size_text(used.limit_bytes),
        "snapshots_text": storage.size_text(used.snapshot_bytes),
        "images_text": storage.size_text(used.image_bytes),
    }
