from __future__ import annotations

from django import template
from django.utils.html import format_html_join
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def tag_chips(tags: dict) -> str:
    """key=value tags as chips; a filter rather than an include because list pages call it per row."""
    if not tags:
        return mark_safe('<span class="muted">—</span>')
    return format_html_join("", '<span class="tag">{}={}</span>', sorted(tags.items()))
