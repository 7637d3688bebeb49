"""The snapshot policy as the spec writes it in YAML, parsed and checked with the line of every mistake.

    name: acme-prod-default
    schedule:
      daily: 02:00 BDT
      weekly: Sun 03:00 BDT
    retention:
      daily: 7
      weekly: 4
    scope:
      vm_tags: ['env=prod']
    application_consistent: true
    notify_channel: slack-ops
    when_stopped: skip
    copy_to:
      - region: bd-ctg-1
        retention: {daily: 7, weekly: 4}

`copy_to` copies every snapshot the policy takes into another region, where the copies keep their own
retention (AWS DLM's cross-region copy rule). The regions are checked against the catalogue when the
policy is applied (`services.apply_policy`), not here: parsing needs no database.

The document is read as YAML nodes, not as Python values, so that `02:00` stays a time (YAML 1.1 would
make it the number 120) and every error can name its line and field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

import yaml
from django.core.exceptions import ValidationError

from clouddigit.compute.models import parse_tag
from clouddigit.errors import InvalidRequest

ZONES = {"BDT": "Asia/Dhaka", "UTC": "UTC"}
WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
TIME_RE = re.compile(r"^(?:(?P<day>[A-Za-z]{3}) )?(?P<hour>\d{2}):(?P<minute>\d{2}) (?P<zone>[A-Z]{3})$")


class PolicyError(InvalidRequest):
    code = "InvalidPolicy"


@dataclass(frozen=True)
class Slot:
    """When a schedule fires: a local time, on one weekday (weekly) or every day (daily)."""

    at: time
    zone: str  # the name written in the policy, e.g. BDT
    weekday: int | None = None  # 0 = Monday

    @property
    def tz_name(self) -> str:
        return ZONES[self.zone]

    def __str__(self) -> str:
        day = f"{WEEKDAYS[self.weekday]} " if self.weekday is not None else ""
        return f"{day}{self.at:%H:%M} {self.zone}"


@dataclass(frozen=True)
class CopyRule:
    """Copy every snapshot the policy takes to `region`; keep the newest N copies per VM and class there."""

    region: str
    keep_daily: int
    keep_weekly: int


@dataclass(frozen=True)
class PolicySpec:
    name: str
    daily: Slot | None
    weekly: Slot | None
    keep_daily: int
    keep_weekly: int
    vm_tags: tuple[tuple[str, str], ...]
    application_consistent: bool = True
    notify_channel: str = ""
    when_stopped: str = "skip"
    copy_to: tuple[CopyRule, ...] = ()

    def to_yaml(self) -> str:
        """The canonical text of the policy: what `export` prints and `apply` accepts back."""
        schedule = {key: str(slot) for key, slot in (("daily", self.daily), ("weekly", self.weekly)) if slot}
        document = {
            "name": self.name,
            "schedule": schedule,
            "retention": {"daily": self.keep_daily, "weekly": self.keep_weekly},
            "scope": {"vm_tags": [f"{key}={value}" for key, value in self.vm_tags]},
            "application_consistent": self.application_consistent,
            "notify_channel": self.notify_channel,
            "when_stopped": self.when_stopped,
        }
        if self.copy_to:
            document["copy_to"] = [
                {"region": rule.region, "retention": {"daily": rule.keep_daily, "weekly": rule.keep_weekly}}
                for rule in self.copy_to
            ]
        return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)


def _error(node: yaml.Node, where: str, problem: str) -> PolicyError:
    return PolicyError(f"line {node.start_mark.line + 1}: {where}: {problem}", field=where)


def _mapping(node: yaml.Node, where: str, allowed: set[str], required: set[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise _error(node, where or "policy", "must be a mapping of keys to values")
    found: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = key_node.value
        path = f"{where}.{key}" if where else key
        if key not in allowed:
            raise _error(key_node, path, f"unknown field; the fields here are {', '.join(sorted(allowed))}")
        if key in found:
            raise _error(key_node, path, "appears twice")
        found[key] = value_node
    for key in sorted(required - set(found)):
        raise _error(node, f"{where}.{key}" if where else key, "is required")
    return found


def _scalar(node: yaml.Node, where: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _error(node, where, "must be a single value")
    return str(node.value).strip()


def _count(node: yaml.Node, where: str) -> int:
    text = _scalar(node, where)
    if not text.isdigit() or not 0 <= int(text) <= 1000:
        raise _error(node, where, f"must be a whole number from 0 to 1000, not {text!r}")
    return int(text)


def _boolean(node: yaml.Node, where: str) -> bool:
    text = _scalar(node, where).lower()
    if text not in {"true", "false"}:
        raise _error(node, where, f"must be true or false, not {text!r}")
    return text == "true"


def _slot(node: yaml.Node, where: str, weekly: bool) -> Slot:
    text = _scalar(node, where)
    example = "Sun 03:00 BDT" if weekly else "02:00 BDT"
    match = TIME_RE.match(text)
    if not match or bool(match["day"]) != weekly:
        raise _error(node, where, f"write it like {example!r}, not {text!r}")
    hour, minute, zone = int(match["hour"]), int(match["minute"]), match["zone"]
    if hour > 23 or minute > 59:
        raise _error(node, where, f"{hour:02d}:{minute:02d} is not a time of day")
    if zone not in ZONES:
        raise _error(node, where, f"unknown time zone {zone!r}; use {' or '.join(ZONES)} (BDT is Asia/Dhaka)")
    weekday = None
    if weekly:
        day = match["day"].capitalize()
        if day not in WEEKDAYS:
            raise _error(node, where, f"unknown weekday {match['day']!r}; use one of {', '.join(WEEKDAYS)}")
        weekday = WEEKDAYS.index(day)
    return Slot(time(hour, minute), zone, weekday)


def _tags(node: yaml.Node, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(node, yaml.SequenceNode) or not node.value:
        raise _error(node, where, "must be a list of key=value tags, e.g. ['env=prod']")
    tags = []
    for item in node.value:
        try:
            tags.append(parse_tag(_scalar(item, where)))
        except ValidationError as error:
            raise _error(item, where, error.messages[0]) from None
    return tuple(tags)


def _copy_rules(node: yaml.Node, where: str) -> tuple[CopyRule, ...]:
    example = "[{region: bd-ctg-1, retention: {daily: 7, weekly: 4}}]"
    if not isinstance(node, yaml.SequenceNode):
        raise _error(node, where, f"must be a list of copy rules, e.g. {example}")
    rules: list[CopyRule] = []
    for index, item in enumerate(node.value):
        at = f"{where}[{index}]"
        fields = _mapping(item, at, {"region", "retention"}, {"region", "retention"})
        region = _scalar(fields["region"], f"{at}.region")
        if not NAME_RE.match(region):
            raise _error(
                fields["region"], f"{at}.region", f"write a region's name, e.g. bd-ctg-1, not {region!r}"
            )
        if region in {rule.region for rule in rules}:
            raise _error(
                fields["region"], f"{at}.region", f"{region} has a copy rule already; keep one per region"
            )
        retention = _mapping(fields["retention"], f"{at}.retention", {"daily", "weekly"}, set())
        rules.append(
            CopyRule(
                region=region,
                keep_daily=_count(retention["daily"], f"{at}.retention.daily") if "daily" in retention else 0,
                keep_weekly=_count(retention["weekly"], f"{at}.retention.weekly")
                if "weekly" in retention
                else 0,
            )
        )
    return tuple(rules)


def parse(text: str) -> PolicySpec:
    """The policy in `text`, or a PolicyError naming the line and the field at fault."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        raise PolicyError(f"{line}not valid YAML: {getattr(error, 'problem', error)}", field="yaml") from None
    if root is None:
        raise PolicyError("The policy is empty.", field="yaml")
    top = _mapping(
        root,
        "",
        {
            "name",
            "schedule",
            "retention",
            "scope",
            "application_consistent",
            "notify_channel",
            "when_stopped",
            "copy_to",
        },
        {"name", "schedule", "retention", "scope"},
    )
    name = _scalar(top["name"], "name")
    if not NAME_RE.match(name):
        raise _error(top["name"], "name", "use lower-case letters, digits and '-' (up to 63)")
    schedule = _mapping(top["schedule"], "schedule", {"daily", "weekly"}, set())
    if not schedule:
        raise _error(top["schedule"], "schedule", "needs daily, weekly or both")
    retention = _mapping(top["retention"], "retention", {"daily", "weekly"}, set())
    scope = _mapping(top["scope"], "scope", {"vm_tags"}, {"vm_tags"})
    when_stopped = _scalar(top["when_stopped"], "when_stopped") if "when_stopped" in top else "skip"
    if when_stopped not in {"skip", "force"}:
        raise _error(top["when_stopped"], "when_stopped", f"must be skip or force, not {when_stopped!r}")
    spec = PolicySpec(
        name=name,
        daily=_slot(schedule["daily"], "schedule.daily", weekly=False) if "daily" in schedule else None,
        weekly=_slot(schedule["weekly"], "schedule.weekly", weekly=True) if "weekly" in schedule else None,
        keep_daily=_count(retention["daily"], "retention.daily") if "daily" in retention else 0,
        keep_weekly=_count(retention["weekly"], "retention.weekly") if "weekly" in retention else 0,
        vm_tags=_tags(scope["vm_tags"], "scope.vm_tags"),
        application_consistent=(
            _boolean(top["application_consistent"], "application_consistent")
            if "application_consistent" in top
            else True
        ),
        notify_channel=_scalar(top["notify_channel"], "notify_channel") if "notify_channel" in top else "",
        when_stopped=when_stopped,
        copy_to=_copy_rules(top["copy_to"], "copy_to") if "copy_to" in top else (),
    )
    for cls, slot, keep in (
        ("daily", spec.daily, spec.keep_daily),
        ("weekly", spec.weekly, spec.keep_weekly),
    ):
        if slot and keep == 0:
            raise _error(
                top["retention"], f"retention.{cls}", f"a {cls} schedule needs a {cls} retention of 1 or more"
            )
        for index, rule in enumerate(spec.copy_to):
            if slot and getattr(rule, f"keep_{cls}") == 0:
                raise _error(
                    top["copy_to"].value[index],
                    f"copy_to[{index}].retention.{cls}",
                    f"a {cls} schedule needs a {cls} retention of 1 or more for its copies in {rule.region}",
                )
    return spec
