from __future__ import annotations

from django.apps import AppConfig


class ImagesConfig(AppConfig):
    name = "images"
    verbose_name = "Custom images"

    def ready(self) -> None:
        from clouddigit import operations
        from images import processing, services
        from images.models import Image

        operations.register(
            Image, active=[Image.State.PROCESSING], resume=services.resume, give_up=processing.give_up
        )
