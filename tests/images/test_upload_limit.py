"""The console's upload without JavaScript (a multipart form with the file) stops reading at the size
limit: nothing past it is read from the connection or handed to the handler that writes the temporary
file, no image row is written, and the page says why."""

from __future__ import annotations

import io

import pytest
from django.core.files.uploadhandler import FileUploadHandler
from django.test.client import encode_multipart
from django.urls import reverse

from clouddigit.audit.models import AuditEntry
from images.models import Image

LIMIT = 256 * 1024
BOUNDARY = "cut-off-test-boundary"
PARSER_CHUNK = 64 * 1024  # what Django's multipart parser reads at a time
received_by_spy: list[int] = []


class SpyHandler(FileUploadHandler):
    """Stands where Django's own handlers (memory, temporary file) stand and records what reaches them,
    which is everything that would be written to disk."""

    def receive_data_chunk(self, raw_data, start):
        received_by_spy.append(len(raw_data))
        return raw_data

    def file_complete(self, file_size):
        return None


class CountingInput(io.BytesIO):
    """The request body as the server reads it from the connection, counting what was read."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size=-1):
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


@pytest.fixture
def small_limit(settings):
    settings.IMAGE_MAX_UPLOAD_BYTES = LIMIT
    settings.FILE_UPLOAD_HANDLERS = [
        f"{__name__}.SpyHandler",
        *settings.FILE_UPLOAD_HANDLERS,
    ]
    received_by_spy.clear()


def _post_file(client, prod, size: int):
    fields = {"project": str(prod.pk), "region": "bd-dha-1", "name": "too-big", "format": "raw"}
    upload = io.BytesIO(b"\xab" * size)
    upload.name = "disk.raw"
    body = encode_multipart(BOUNDARY, {**fields, "file": upload})
    stream = CountingInput(body)
    response = client.post(
        reverse("images:upload"),
        data=body,
        content_type=f"multipart/form-data; boundary={BOUNDARY}",
        **{"wsgi.input": stream},
    )
    return response, stream, len(body)


def test_a_file_announced_over_the_limit_is_refused_before_any_of_it_is_read(
    client, alice, prod, dha, small_limit
):
    client.force_login(alice)

    response, stream, body_size = _post_file(client, prod, 4 * LIMIT)

    assert response.status_code == 400
    assert "uploads are limited to" in response.content.decode()
    assert stream.bytes_read <= PARSER_CHUNK < body_size  # one read: the form's fields, not the file
    assert sum(received_by_spy) == 0
    assert not Image.objects.filter(name="too-big").exists()
    assert AuditEntry.objects.filter(action="image.import.start", outcome="refused").exists()


def test_a_file_growing_past_the_limit_is_cut_off_at_the_limit(client, alice, prod, dha, small_limit):
    """Within the allowance for the form's other fields the request's length cannot tell; the bytes
    counted while streaming do."""
    client.force_login(alice)

    response, _, _ = _post_file(client, prod, LIMIT + 1000)

    assert response.status_code == 400
    assert "uploads are limited to" in response.content.decode()
    assert sum(received_by_spy) <= LIMIT
    assert not Image.objects.filter(name="too-big").exists()


def test_a_file_within_the_limit_still_arrives_whole(client, alice, prod, dha, small_limit):
    client.force_login(alice)

    response, _, _ = _post_file(client, prod, LIMIT)

    # A raw file of 0xab bytes is accepted by inspection; the worker is not run here.
    assert sum(received_by_spy) == LIMIT
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Image.objects.get(name="too-big").upload_bytes == LIMIT
