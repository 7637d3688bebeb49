"""The image app's domain errors, raised by the request side (`services`) and the worker side
(`processing`) alike; each carries the spec's code."""

from __future__ import annotations

from clouddigit.errors import ServiceError


class ImageUploadFailed(ServiceError):
    code = "ImageUploadFailed"
    status = 400


class ImagePromoteFailed(ServiceError):
    code = "ImagePromoteFailed"
    status = 409


class ImageQuotaExceeded(ServiceError):
    code = "ImageQuotaExceeded"
    status = 409
