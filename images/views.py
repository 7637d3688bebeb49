"""Console pages for images: the catalogue, an image's page and its actions, the upload (the browser PUTs
the file straight to disk), promotion from a snapshot's page, and creating a VM from an image.
Every action calls the same service as the API and the CLI; none writes a model itself."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from clouddigit.access import can, project_by_reference
from clouddigit.audit.log import form_errors, record_invalid_form, record_refusal
from clouddigit.compute.models import Project, Region
from clouddigit.compute.permissions import Perm
from clouddigit.console import act, page_at, settle
from clouddigit.errors import InvalidRequest, ServiceError
from clouddigit.htmx import redirect_after_post, render_page_or_fragment
from clouddigit.listing import PAGE_SIZE, in_scope
from images import launch, services
from images.filters import ImageFilter
from images.forms import (
    CopyForm,
    DeprecateForm,
    LaunchForm,
    LimitForm,
    PromoteForm,
    ShareForm,
    TagsForm,
    UploadForm,
    VisibilityForm,
    region_choices,
)
from images.models import Image
from snapshots.models import Snapshot

BUSY = {Image.State.UPLOADING, Image.State.PROCESSING}


def _scope_project(request) -> Project | None:
    return request.scope.project if request.scope else None


def _project_named(request, reference: str | None) -> Project:
    """The project a form was shown for (it says so), not whatever the switcher says now in another tab."""
    try:
        return project_by_reference(request.user, reference or "")
    except InvalidRequest:
        raise Http404("No such project, or you may not see it.") from None


# --- Catalogue ---------------------------------------------------------------------------------------


@login_required
def catalogue_page(request):
    return _catalogue_page(request)


def _catalogue_page(request, limit_form: LimitForm | None = None, status: int = 200):
    """The three slots (stock, hardened, the project's custom images) or the images shared with the
    user, in the header's project and region, filtered alike."""
    project = _scope_project(request)
    region = request.scope.region if request.scope else None
    shared = request.GET.get("shared") == "1"
    base = Image.objects.shared_with(request.user) if shared else Image.objects.visible_to(request.user)
    filterset = ImageFilter(request.GET, queryset=base.select_related("project__account"))
    images, platform = filterset.qs, []
    if shared:
        custom = images.filter(region=region) if region else images
    else:
        custom = in_scope(images, request)
        published = images.filter(project__isnull=True)
        platform = list(
            (published.filter(region=region) if region else published).order_by("name", "region_id")
        )
    page = Paginator(custom.order_by("name", "region_id"), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filter": filterset,
        "shared": shared,
        "stock": [image for image in platform if image.slot == Image.Slot.STOCK],
        "hardened": [image for image in platform if image.slot == Image.Slot.HARDENED],
        "page": page,
        "query": query.urlencode(),
        "can_upload": project is not None and can(request.user, Perm.PUBLISH_IMAGES, project),
    }
    if project is not None and not page.paginator.count:
        # Promoting starts from a snapshot's page: a publisher who sees no snapshots is told why.
        context["can_see_snapshots"] = can(request.user, Perm.VIEW_SNAPSHOTS, project)
    if project is not None and not shared:
        can_raise = can(request.user, Perm.MANAGE_IMAGE_QUOTAS, project)
        context.update(
            quota_used=Image.objects.counting_against_quota(project).count(),
            quota_limit=services.image_limit(project),
            can_raise=can_raise,
            limit_form=limit_form or (LimitForm(initial={"project": project.pk}) if can_raise else None),
        )
    response = render_page_or_fragment(request, "images/catalogue.html", "table", context)
    response.status_code = status
    return response


@login_required
@require_POST
def raise_limit(request):
    project = _project_named(request, request.POST.get("project"))
    form = LimitForm(request.POST)
    return act(
        request,
        action="image.quota.raise",
        target=project,
        run=lambda: services.raise_image_limit(
            actor=request.user,
            project=project,
            limit=form.cleaned_data["limit"],
            ticket=form.cleaned_data["ticket"],
        ),
        page=lambda: _catalogue_page(request, limit_form=form),
        form=form,
        success=lambda result: f"{project} may now keep {form.cleaned_data['limit']} custom images.",
        then=reverse("images:catalogue"),
    )


# --- One image ---------------------------------------------------------------------------------------


def visible_images(user):
    return (
        Image.objects.visible_to(user)
        .for_display()
        .select_related("region", "source_snapshot", "copied_from")
    )


def _input_kept(image: Image) -> bool:
    """A failed upload's file is removed with its failure: only a new upload under its name helps."""
    return image.source != Image.Source.UPLOAD or image.upload_path.exists()


def detail_context(request, image: Image, **forms) -> dict:
    project = image.project
    can_publish = project is not None and can(request.user, Perm.PUBLISH_IMAGES, project)
    can_share = project is not None and can(request.user, Perm.SHARE_IMAGES, project)
    other_region = next((slug for slug, _ in region_choices() if slug != image.region_id), "")
    lost = image.state == Image.State.PROCESSING and image.lease_expired
    return {
        "image": image,
        "shares": image.shares.all(),
        "can_publish": can_publish,
        "can_share": can_share,
        "busy": image.state in BUSY,
        "lost": lost,
        "retryable": lost or (image.state == Image.State.FAILED and _input_kept(image)),
        "tags_form": forms.get("tags_form") or TagsForm(initial={"tags": TagsForm.text_of(image.tags)}),
        "visibility_form": forms.get("visibility_form")
        or VisibilityForm(initial={"visibility": image.visibility}),
        "share_form": forms.get("share_form") or ShareForm(),
        "deprecate_form": forms.get("deprecate_form") or DeprecateForm(),
        "copy_form": forms.get("copy_form") or CopyForm(initial={"region": other_region}),
    }


@login_required
def image_detail(request, pk):
    image = get_object_or_404(visible_images(request.user), pk=pk)
    response = render_page_or_fragment(
        request, "images/detail.html", "status", detail_context(request, image)
    )
    return settle(request, response, settled=image.state not in BUSY)


def _on_image(request, pk, *, action: str, run, success, form=None, form_key="", then=None, confirm=""):
    """An action from an image's page: its errors show on that page, at the form used."""
    image = get_object_or_404(visible_images(request.user), pk=pk)
    forms = {form_key: form} if form is not None else {}
    return act(
        request,
        action=action,
        target=image,
        run=lambda: run(image),
        page=lambda: render(request, "images/detail.html", detail_context(request, image, **forms)),
        success=lambda result: success(image, result),
        then=then or reverse("images:detail", args=[image.pk]),
        form=form,
        confirm=confirm.format(image=image),
    )


@login_required
@require_POST
def set_tags(request, pk):
    form = TagsForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.tag",
        run=lambda image: services.set_tags(actor=request.user, image=image, tags=form.cleaned_data["tags"]),
        success=lambda image, result: f"Tags of {image.name} updated.",
        form=form,
        form_key="tags_form",
    )


@login_required
@require_POST
def set_visibility(request, pk):
    form = VisibilityForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.visibility",
        run=lambda image: services.set_visibility(
            actor=request.user, image=image, visibility=form.cleaned_data["visibility"]
        ),
        success=lambda image, result: f"{image.name} is now visible to: {result.get_visibility_display()}.",
        form=form,
        form_key="visibility_form",
    )


@login_required
@require_POST
def share(request, pk):
    form = ShareForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.share",
        run=lambda image: services.share_image(
            actor=request.user,
            image=image,
            project=services.sibling_project(image, form.cleaned_data["project"]),
        ),
        success=lambda image, result: f"{image.name} is shared with {result.project}.",
        form=form,
        form_key="share_form",
    )


@login_required
@require_POST
def unshare(request, pk):
    form = ShareForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.unshare",
        run=lambda image: services.unshare_image(
            actor=request.user,
            image=image,
            project=services.sibling_project(image, form.cleaned_data["project"]),
        ),
        success=lambda image, result: (
            f"{image.name} is no longer shared with {form.cleaned_data['project']}."
        ),
        form=form,
        form_key="share_form",
    )


@login_required
@require_POST
def deprecate(request, pk):
    form = DeprecateForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.deprecate",
        run=lambda image: services.deprecate_image(
            actor=request.user, image=image, at=form.cleaned_data["at"], note=form.cleaned_data["note"]
        ),
        success=lambda image, result: (
            f"{image.name} is deprecated from {result.deprecated_at:%Y-%m-%d %H:%M} UTC: the "
            "VM-create picker hides it; running VMs are not affected."
        ),
        form=form,
        form_key="deprecate_form",
    )


@login_required
@require_POST
def copy(request, pk):
    form = CopyForm(request.POST)
    return _on_image(
        request,
        pk,
        action="image.copy",
        run=lambda image: services.copy_image(
            actor=request.user,
            image=image,
            region=Region.objects.get(pk=form.cleaned_data["region"]),
            project=services.sibling_project(image, form.cleaned_data["project"])
            if form.cleaned_data["project"]
            else None,
            name=form.cleaned_data["name"],
        ),
        success=lambda image, result: (
            f"Copying {image.name} to {result.project} ({result.region_id}) as {result.name}."
        ),
        form=form,
        form_key="copy_form",
        then=lambda result: reverse("images:detail", args=[result.pk]),
    )


# Buttons without a form on an image's page: (service, audit action, message, question asked first).
IMAGE_BUTTONS = {
    "undeprecate": (
        services.undeprecate_image,
        "image.undeprecate",
        "{image.name} is no longer deprecated.",
        "",
    ),
    "retry": (
        services.retry_image,
        "image.retry",
        "Queued {image.name} again: it is processed from its start.",
        "",
    ),
    "delete": (
        services.delete_image,
        "image.delete",
        "Deleted image {image.name}; VMs created from it keep their own copy.",
        "Delete image {image.name}? VMs created from it keep their own copy.",
    ),
}


@login_required
@require_POST
def image_button(request, pk, action):
    service, audit_action, success, confirm = IMAGE_BUTTONS[action]
    return _on_image(
        request,
        pk,
        action=audit_action,
        run=lambda image: service(actor=request.user, image=image),
        success=lambda image, result: success.format(image=image),
        then=reverse("images:catalogue") if action == "delete" else None,
        confirm=confirm,
    )


# --- Upload ------------------------------------------------------------------------------------------


def _wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def _upload_page(
    request, form: UploadForm, project: Project | None, error: str = "", hint: str = "", status: int = 200
):
    context = {
        "form": form,
        "project": project,
        "error": error,
        "hint": hint,
        "can_upload": project is not None and can(request.user, Perm.PUBLISH_IMAGES, project),
        "max_upload_bytes": services.max_upload_bytes(),
    }
    return render(request, "images/upload.html", context, status=status)


# The upload form's other fields (project, name, description, tags...) fit in far less than this.
FORM_FIELDS_ALLOWANCE = 64 * 1024


class UploadLimit(FileUploadHandler):
    """First of the upload handlers of the form without JavaScript: it stops the request's parsing at
    the size limit, before the handlers after it (memory, temporary file) receive a byte past it. A
    request whose length already says the file is too large is stopped before any of the file is read.
    The connection is not drained: what the client still sends is never read."""

    def __init__(self, request, limit: int):
        super().__init__(request)
        self.limit = limit
        self.request_length = 0
        self.received = 0
        self.refused_size: int | None = None

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request_length = content_length

    def new_file(self, *args, **kwargs):
        super().new_file(*args, **kwargs)
        if self.request_length > self.limit + FORM_FIELDS_ALLOWANCE:
            self._refuse(self.request_length)

    def receive_data_chunk(self, raw_data, start):
        self.received += len(raw_data)
        if self.received > self.limit:
            self._refuse(self.received)
        return raw_data

    def file_complete(self, file_size):
        return None

    def _refuse(self, size: int):
        self.refused_size = size
        raise StopUpload(connection_reset=True)


@csrf_exempt  # the handler goes in before the CSRF check reads the form; `_upload` checks CSRF
@login_required
@require_http_methods(["GET", "POST"])
def upload(request):
    limit = UploadLimit(request, services.max_upload_bytes())
    request.upload_handlers.insert(0, limit)
    return _upload(request, limit)


@csrf_protect
def _upload(request, limit: UploadLimit):
    """GET: the form. POST: `start_import`; from the page's script (Accept: application/json) the
    answer says where to PUT the file; without JavaScript the file came with the form and is stored
    here (Django has streamed it to a temporary file, up to the size limit)."""
    if request.method == "GET":
        project = _scope_project(request)
        region = request.scope.region if request.scope else None
        initial = {"project": project.pk if project else "", "region": region.slug if region else None}
        return _upload_page(request, UploadForm(initial=initial), project)
    project = _project_named(request, request.POST.get("project"))
    posted = request.POST
    if limit.refused_size is not None:  # the file was cut off: `start_import` refuses its size
        posted = posted.copy()
        posted["size_bytes"] = str(limit.refused_size)
    form = UploadForm(posted, request.FILES)
    if not form.is_valid():
        record_invalid_form(actor=request.user, action="image.import.start", target=project, form=form)
        if _wants_json(request):
            field = next(iter(form.errors))
            body = {"code": "InvalidRequest", "message": form_errors(form), "field": field}
            return JsonResponse(body, status=400)
        return _upload_page(request, form, project, status=400)
    data, upload_file = form.cleaned_data, form.cleaned_data["file"]
    image = None
    try:
        image = services.start_import(
            actor=request.user,
            project=project,
            region=Region.objects.get(pk=data["region"]),
            name=data["name"],
            declared_format=data["format"],
            size_bytes=upload_file.size if upload_file else data["size_bytes"],
            description=data["description"],
            tags=form.tags,
        )
        if upload_file is not None:
            with upload_file.open("rb") as stream:
                image = services.receive_upload(
                    actor=request.user, image=image, stream=stream, length=upload_file.size
                )
    except ServiceError as error:
        record_refusal(actor=request.user, action="image.import.start", target=project, error=error)
        if _wants_json(request):
            return JsonResponse(error.as_dict(), status=error.status)
        if image is not None:
            image.refresh_from_db()
        hint = image.hint if image is not None else ""
        return _upload_page(request, form, project, error=error.message, hint=hint, status=error.status)
    detail_url = reverse("images:detail", args=[image.pk])
    if _wants_json(request):
        body = {
            "id": str(image.pk),
            "name": image.name,
            "upload_url": reverse("images:file", args=[image.pk]),
            "detail_url": detail_url,
        }
        return JsonResponse(body, status=201)
    messages.success(request, f"Received {image.name}: it is being converted, checksummed and stored.")
    return redirect_after_post(request, detail_url)


@login_required
@require_http_methods(["PUT"])
def upload_file(request, pk):
    """The image file as the raw request body, streamed to disk by `receive_upload` a chunk at a time
    (the request is file-like). CSRF is checked from the X-CSRFToken header; the body is never read
    into memory, so request.body and request.POST are not touched here."""
    images = Image.objects.visible_to(request.user).filter(project__isnull=False)
    image = get_object_or_404(images.select_related("project__account"), pk=pk)
    length = request.META.get("CONTENT_LENGTH", "")
    try:
        image = services.receive_upload(
            actor=request.user,
            image=image,
            stream=request,
            length=int(length) if length.isdigit() else None,
        )
    except ServiceError as error:
        record_refusal(actor=request.user, action="image.import.upload", target=image, error=error)
        image.refresh_from_db()
        return JsonResponse({**error.as_dict(), "hint": image.hint}, status=error.status)
    image.refresh_from_db()
    body = {
        "id": str(image.pk),
        "state": image.state,
        "step": image.step,
        "detail_url": reverse("images:detail", args=[image.pk]),
    }
    return JsonResponse(body, status=202)


# --- Promote (a form on the snapshot's page) ---------------------------------------------------------


@login_required
@require_POST
def promote(request, snapshot_pk):
    """The form of this app's panel on a snapshot's page (templatetags/image_panels.py): a refusal is
    shown there, at the form, by `page_at`."""
    snapshot = get_object_or_404(
        Snapshot.objects.visible_to(request.user).select_related("project__account", "region"), pk=snapshot_pk
    )
    form = PromoteForm(request.POST, disks=snapshot.disks.all())
    return act(
        request,
        action="image.promote",
        target=snapshot,
        run=lambda: services.promote_snapshot(
            actor=request.user,
            snapshot=snapshot,
            name=form.cleaned_data["name"],
            device=form.cleaned_data.get("device", ""),
            description=form.cleaned_data["description"],
        ),
        page=lambda: page_at(request, reverse("snapshots:detail", args=[snapshot.pk]), promote_form=form),
        form=form,
        success=lambda image: f"Promoting {snapshot.name} to image {image.name}.",
        then=lambda image: reverse("images:detail", args=[image.pk]),
    )


# --- Create a VM from an image ----------------------------------------------------------------------


def _where(request, data) -> tuple[Project | None, Region | None]:
    """The project (the form's, else the header's) and region (the form's, else the header's, else the
    default one) that the picker is for."""
    project = _project_named(request, data["project"]) if data.get("project") else _scope_project(request)
    region = Region.objects.filter(pk=data.get("region") or "").first()
    if region is None:
        scoped = request.scope.region if request.scope else None
        region = scoped or Region.objects.filter(pk=settings.DEFAULT_REGION).first() or Region.objects.first()
    return project, region


def _launch_page(
    request, form: LaunchForm, project, region, *, why: str = "", status: int = 200, fragment=""
):
    show_deprecated = form["show_deprecated"].value() in (True, "on", "true", "1")
    images = launch.picker(request.user, project, region, show_deprecated) if project and region else []
    context = {
        "form": form,
        "project": project,
        "region": region,
        "images": images,
        "selected": str(form["image"].value() or ""),
        "why": why,
        "reasons": launch.why_missing(request.user, project, region, why)
        if why and project and region
        else [],
        "can_launch": project is not None and can(request.user, Perm.OPERATE_VMS, project),
    }
    if fragment:
        return render_page_or_fragment(request, "images/launch.html", fragment, context)
    return render(request, "images/launch.html", context, status=status)


def _launch_form(request, project, region) -> LaunchForm:
    initial = {key: value for key, value in request.GET.items() if key in LaunchForm.base_fields}
    initial.update(project=project.pk if project else "", region=region.slug if region else "")
    if "show_deprecated" in initial:
        initial["show_deprecated"] = True
    return LaunchForm(initial=initial)


@login_required
@require_http_methods(["GET", "POST"])
def launch_page(request):
    """GET: the form, or (HTMX) just the image picker for the chosen region and "Show deprecated".
    POST: create the VM with `launch.launch_vm`."""
    if request.method == "POST":
        return _launch(request)
    project, region = _where(request, request.GET)
    return _launch_page(request, _launch_form(request, project, region), project, region, fragment="picker")


@login_required
def why_missing(request):
    """ "Why is my image missing?": each image of that name or id, why the picker leaves it out and the
    fix. HTMX gets the answer alone; without JavaScript the whole page comes back with it."""
    project, region = _where(request, request.GET)
    form = _launch_form(request, project, region)
    why = request.GET.get("why", "").strip()
    return _launch_page(request, form, project, region, why=why, fragment="why")


def _launch(request):
    project = _project_named(request, request.POST.get("project"))
    form = LaunchForm(request.POST)
    region = Region.objects.filter(pk=request.POST.get("region") or "").first()

    chosen = {}

    def run():
        data = form.cleaned_data
        assert region is not None  # the form checked it is one of the regions
        image = chosen["image"] = launch.image_named(request.user, project, region, data["image"])
        try:
            return launch.launch_vm(
                actor=request.user,
                project=project,
                region=region,
                image=image,
                name=data["name"],
                flavor=data["flavor"],
                vpc=data["vpc"],
                boot_size_bytes=form.boot_size_bytes,
                tags=data["tags"],
                start=data["start"],
            )
        except ServiceError as error:
            if error.field == "boot_size_bytes":
                error.field = "boot_gib"  # the form asks in GiB
            raise

    return act(
        request,
        action="compute.vm.create-from-image",
        target=project,
        run=run,
        page=lambda: _launch_page(request, form, project, region),
        form=form,
        success=lambda vm: f"Creating VM {vm.name} from image {chosen['image'].name}.",
        then=lambda vm: reverse("compute:vm-detail", args=[vm.pk]),
    )
