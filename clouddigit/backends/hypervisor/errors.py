"""HypervisorError and the wrapping of libvirt's errors into it, with a hint at what to do next.

Also silences libvirt's own printing of every error to stderr, once, when the package is imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import libvirt

from .specs import DomainSpec


def _ignore_libvirt_error(_ctx: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; ours are raised instead."""


libvirt.registerErrorHandler(_ignore_libvirt_error, None)


class HypervisorError(Exception):
    """A libvirt call failed. The message names the host URI, the domain and what to do next."""

    def __init__(self, message: str, *, uri: str = "", domain: str = "", code: int | None = None):
        super().__init__(message)
        self.message = message
        self.uri = uri
        self.domain = domain
        self.code = code


def _hint(code: int | None) -> str:
    unreachable = {"VIR_ERR_SYSTEM_ERROR", "VIR_ERR_NO_CONNECT", "VIR_ERR_RPC", "VIR_ERR_INVALID_CONN"}
    hints = [
        (
            unreachable,
            "Check that libvirtd runs on that host and that this worker can reach it (network, SSH key "
            "or TLS certificate); the task's retry reconnects.",
        ),
        ({"VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED"}, "Check this worker's credentials for that host."),
        (
            {"VIR_ERR_OPERATION_INVALID"},
            "The domain is not in a state that allows this; compare `virsh domstate` on the host with "
            "the VM's status in the console.",
        ),
        (
            {"VIR_ERR_AGENT_UNRESPONSIVE"},
            "Check qemu-guest-agent inside the guest (`systemctl status qemu-guest-agent`).",
        ),
        (
            {"VIR_ERR_NO_SUPPORT", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_CONFIG_UNSUPPORTED"},
            "The libvirt driver on that host does not support this; check the host's libvirt version "
            "and driver.",
        ),
        (
            {"VIR_ERR_INVALID_ARG"},
            "That host's libvirt driver refused the call's arguments (often flags it does not support).",
        ),
        ({"VIR_ERR_OPERATION_TIMEOUT"}, "The host is busy; retry later."),
        ({"VIR_ERR_XML_ERROR", "VIR_ERR_XML_DETAIL"}, "The host rejected the definition; see the detail."),
    ]
    for names, text in hints:
        if code is not None and code in {getattr(libvirt, name, None) for name in names}:
            return text
    return "See libvirtd's log on that host."


@contextmanager
def _libvirt_errors(action: str, uri: str, spec: DomainSpec | None = None) -> Iterator[None]:
    try:
        yield
    except libvirt.libvirtError as exc:
        raise _wrap(exc, action, uri, spec) from exc


def _wrap(exc: libvirt.libvirtError, action: str, uri: str, spec: DomainSpec | None) -> HypervisorError:
    code = exc.get_error_code()
    where = f"on host {uri}"
    if spec is not None:
        where += f" for domain '{spec.name}' ({spec.uuid})"
    detail = exc.get_error_message() or str(exc)
    return HypervisorError(
        f"{action} failed {where}: {detail}. {_hint(code)}",
        uri=uri,
        domain=spec.name if spec else "",
        code=code,
    )
