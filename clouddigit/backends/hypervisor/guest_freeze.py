"""Guest filesystem freeze through qemu-guest-agent: `freeze`, `thaw` and the `frozen` context.

Every agent call is bounded in time (`_run_bounded`): an agent that does not answer makes a snapshot
crash-consistent, never a stuck worker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import libvirt

from .domains import ensure_domain
from .errors import HypervisorError, _libvirt_errors, _wrap
from .specs import DomainSpec

logger = logging.getLogger(__name__)

AGENT_NOT_RESPONDING = "guest agent not responding"

Consistency = Literal["application", "crash"]


@dataclass(frozen=True)
class FreezeResult:
    """What a freeze attempt achieved; `reason` says why it is only crash-consistent."""

    frozen: bool
    consistency: Consistency
    reason: str = ""
    filesystems: int = 0
    elapsed_seconds: float = 0.0


@dataclass
class _Outcome:
    finished: bool
    value: Any = None
    error: BaseException | None = None


def _run_bounded(
    call: Callable[[], Any], timeout_seconds: float, name: str, on_late_success: Callable[[Any], None]
) -> _Outcome:
    """Run a blocking libvirt call in a daemon thread and wait at most `timeout_seconds` for it.

    libvirt releases the GIL during the call, so the caller can give up on it; the call itself
    cannot be cancelled. If it succeeds after the caller gave up, `on_late_success` undoes it.
    A daemon thread (not a ThreadPoolExecutor, whose workers are joined at exit) so that a call
    that never returns cannot keep the worker process from exiting.
    """
    lock = threading.Lock()
    done = threading.Event()
    outcome = _Outcome(finished=False)
    abandoned = False

    def run() -> None:
        try:
            value, error = call(), None
        except BaseException as exc:  # noqa: BLE001 - handed over to the caller
            value, error = None, exc
        with lock:
            outcome.finished, outcome.value, outcome.error = True, value, error
            late = abandoned
        done.set()
        if late and error is None:
            on_late_success(value)

    threading.Thread(target=run, name=name, daemon=True).start()
    done.wait(timeout_seconds)
    with lock:
        if not outcome.finished:
            abandoned = True
        return _Outcome(outcome.finished, outcome.value, outcome.error)


def _set_agent_timeout(dom: libvirt.virDomain, timeout_seconds: float) -> None:
    # qemu (libvirt >= 5.10) then fails the agent call itself instead of waiting forever; the setting
    # stays on the domain in libvirtd. The test driver refuses it; the thread bound still applies.
    set_timeout = getattr(dom, "agentSetResponseTimeout", None)
    if set_timeout is None:
        return
    try:
        set_timeout(max(1, math.ceil(timeout_seconds)), 0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            raise


def _freeze_domain(dom: libvirt.virDomain, timeout_seconds: float, where: str) -> FreezeResult:
    started = time.monotonic()

    def thaw_late_freeze(_count: Any) -> None:
        logger.error("fsFreeze of %s returned after the timeout; thawing the guest", where)
        try:
            dom.fsThaw()
        except libvirt.libvirtError:
            logger.exception("thawing %s after a late fsFreeze failed; run `virsh domfsthaw`", where)

    outcome = _run_bounded(dom.fsFreeze, timeout_seconds, f"fsFreeze {where}", thaw_late_freeze)
    elapsed = time.monotonic() - started
    if not outcome.finished:
        logger.warning("fsFreeze of %s gave no answer within %ss", where, timeout_seconds)
        return FreezeResult(False, "crash", AGENT_NOT_RESPONDING, elapsed_seconds=elapsed)
    if isinstance(outcome.error, libvirt.libvirtError):
        reason = outcome.error.get_error_message() or str(outcome.error)
        logger.warning("fsFreeze of %s failed: %s", where, reason)
        return FreezeResult(False, "crash", reason, elapsed_seconds=elapsed)
    if outcome.error is not None:
        raise outcome.error
    return FreezeResult(True, "application", "", int(outcome.value or 0), elapsed)


def _thaw_domain(dom: libvirt.virDomain, timeout_seconds: float, uri: str, spec: DomainSpec) -> int:
    outcome = _run_bounded(dom.fsThaw, timeout_seconds, f"fsThaw {spec.name}", lambda _count: None)
    if not outcome.finished:
        raise HypervisorError(
            f"thaw failed on host {uri} for domain '{spec.name}' ({spec.uuid}): the guest agent gave "
            f"no answer within {timeout_seconds}s and the guest's filesystems may still be frozen. Run "
            "`virsh domfsthaw` on the host and check qemu-guest-agent in the guest.",
            uri=uri,
            domain=spec.name,
        )
    if isinstance(outcome.error, libvirt.libvirtError):
        raise _wrap(outcome.error, "thaw", uri, spec) from outcome.error
    if outcome.error is not None:
        raise outcome.error
    return int(outcome.value or 0)


def freeze(uri: str, spec: DomainSpec, timeout_seconds: float) -> FreezeResult:
    """Freeze the guest's filesystems through qemu-guest-agent, waiting at most `timeout_seconds`.

    Never raises for agent trouble: the result says whether the guest is frozen (application
    consistency) or why not (crash consistency). A stopped domain cannot be frozen.
    """
    dom = ensure_domain(uri, spec)
    with _libvirt_errors("freeze", uri, spec):
        if not dom.isActive():
            return FreezeResult(False, "crash", "domain is not running")
        _set_agent_timeout(dom, timeout_seconds)
    return _freeze_domain(dom, timeout_seconds, f"{spec.name} on {uri}")


def thaw(uri: str, spec: DomainSpec, timeout_seconds: float) -> int:
    """Thaw the guest's filesystems; returns how many were thawed. Raises `HypervisorError` on failure."""
    dom = ensure_domain(uri, spec)
    return _thaw_domain(dom, timeout_seconds, uri, spec)


@contextmanager
def frozen(uri: str, spec: DomainSpec, timeout_seconds: float) -> Iterator[FreezeResult]:
    """Freeze for the body, thaw on exit (also when the body raises) if the freeze succeeded.

        with frozen(uri, spec, 10) as result:
            take the snapshot
        record result.consistency and result.reason on the snapshot

    A failed thaw after a successful body raises `HypervisorError` (a frozen guest is an outage);
    after a failed body it is added as a note to the body's exception.
    """
    result = freeze(uri, spec, timeout_seconds)
    try:
        yield result
    except BaseException as body_error:
        if result.frozen:
            try:
                thaw(uri, spec, timeout_seconds)
            except HypervisorError as thaw_error:
                logger.error("%s", thaw_error)
                body_error.add_note(str(thaw_error))
        raise
    if result.frozen:
        thaw(uri, spec, timeout_seconds)
