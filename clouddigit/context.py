"""The project and region a console user is looking at (the switchers in the header).

Kept in the session; a project the user can no longer see falls back to the first visible one.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.functional import SimpleLazyObject

from clouddigit.compute.models import Project, Region

SESSION_PROJECT = "scope_project"
SESSION_REGION = "scope_region"


@dataclass
class Scope:
    projects: list[Project]
    project: Project | None
    regions: list[Region]
    region: Region | None  # None: all regions


def build_scope(request) -> Scope | None:
    if not request.user.is_authenticated:
        return None
    projects = list(Project.objects.visible_to(request.user).select_related("account"))
    wanted = request.session.get(SESSION_PROJECT)
    project = next((p for p in projects if str(p.pk) == wanted), projects[0] if projects else None)
    regions = list(Region.objects.all())
    wanted_region = request.session.get(SESSION_REGION)
    region = next((r for r in regions if r.slug == wanted_region), None)
    return Scope(projects=projects, project=project, regions=regions, region=region)


class ScopeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.scope = SimpleLazyObject(lambda: build_scope(request))
        return self.get_response(request)


def scope(request) -> dict:
    return {"scope": getattr(request, "scope", None)}
