"""`manage.py publish_image`: publish a stock or Cloud Digit hardened image in one or every region."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from clouddigit.compute.models import Region
from clouddigit.errors import ServiceError
from images import services
from images.models import Image


class Command(BaseCommand):
    help = "Publish a stock or hardened image from a file, through the same inspection as uploads."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--name", required=True)
        parser.add_argument("--format", required=True, help="qcow2, raw, vmdk, vhd, vhdx or iso")
        parser.add_argument("--slot", choices=[Image.Slot.STOCK, Image.Slot.HARDENED], default="stock")
        parser.add_argument("--region", action="append", help="a region (repeat); default: every region")
        parser.add_argument("--description", default="")
        parser.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
        parser.add_argument("--openscap-score", type=float, help="hardened images: the OpenSCAP score")

    def handle(self, *args, path: Path, region, tag, **options):
        tags = dict(pair.split("=", 1) for pair in tag if "=" in pair)
        regions = Region.objects.filter(pk__in=region) if region else Region.objects.all()
        for target in regions:
            try:
                image = services.publish_platform_image(
                    slot=options["slot"],
                    region=target,
                    name=options["name"],
                    path=path,
                    declared_format=options["format"],
                    description=options["description"],
                    tags=tags,
                    openscap_score=options["openscap_score"],
                )
            except ServiceError as error:
                raise CommandError(str(error)) from error
            self.stdout.write(f"{image.name} in {target}: {image.get_state_display()} ({image.id})")
