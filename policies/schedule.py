"""When a policy's slots fall, in UTC, from its local times (BDT is Asia/Dhaka); and how the starts of
one slot spread over a window, deterministically per VM, so thousands of volumes never hit the backend
in the same second."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from policies.spec import PolicySpec, Slot


def _occurrences(slot: Slot, start: datetime, end: datetime) -> list[datetime]:
    zone = ZoneInfo(slot.tz_name)
    day = start.astimezone(zone).date() - timedelta(days=1)
    last = end.astimezone(zone).date() + timedelta(days=1)
    found = []
    while day <= last:
        if slot.weekday is None or day.weekday() == slot.weekday:
            at = datetime.combine(day, slot.at, tzinfo=zone).astimezone(UTC)
            if start < at <= end:
                found.append(at)
        day += timedelta(days=1)
    return found


def slots_between(spec: PolicySpec, start: datetime, end: datetime) -> list[tuple[datetime, str]]:
    """Every (UTC time, class) slot of the policy with start < time <= end, oldest first."""
    slots = [(at, "daily") for at in _occurrences(spec.daily, start, end)] if spec.daily else []
    slots += [(at, "weekly") for at in _occurrences(spec.weekly, start, end)] if spec.weekly else []
    return sorted(slots)


def spread(policy_id: object, vm_id: object, window: timedelta) -> timedelta:
    """How long after the slot this VM's snapshot starts: the same every time for the same VM."""
    digest = hashlib.sha256(f"{policy_id}:{vm_id}".encode()).digest()
    seconds = int(window.total_seconds())
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % seconds) if seconds > 0 else timedelta(0)
