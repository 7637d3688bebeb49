from __future__ import annotations

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

register = template.Library()


@register.filter
def tag_chips(tags: dict) -> str:
    """key=value tags as chips; a filter rather than an include because list pages call it per row."""
    if not tags:
        return mark_safe('<span class="muted">—</span>')
    return format_html_join("", '<span class="tag">{}={}</span>', sorted(tags.items()))


@register.filter
def sparkline(values, size: str = "240x40") -> str:
    """A tiny inline SVG line of `values` (oldest first), e.g. the time-to-restore trend."""
    points = [float(value) for value in values if value is not None]
    if len(points) < 2:
        return ""
    width, height = (int(part) for part in size.split("x"))
    low, high = min(points), max(points)
    span = (high - low) or 1.0
    step = width / (len(points) - 1)
    coords = " ".join(
        f"{index * step:.1f},{height - 2 - (value - low) / span * (height - 4):.1f}"
        for index, value in enumerate(points)
    )
    return format_html(
        '<svg class="spark" width="{}" height="{}" viewBox="0 0 {} {}" role="img" '
        'aria-label="trend from {} to {}">'
        '<polyline fill="none" stroke="currentColor" stroke-width="2" points="{}"/></svg>',
        width,
        height,
        width,
        height,
        f"{points[0]:.2f} s",
        f"{points[-1]:.2f} s",
        coords,
    )
