"""The policy YAML as the spec writes it: parsed, exported and parsed back, and every mistake named by
its line and field."""

from __future__ import annotations

from datetime import time

import pytest

from policies.spec import PolicyError, Slot, parse

# Verbatim from the spec.
EXAMPLE = """\
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
"""


def test_the_spec_example_parses_as_written():
    spec = parse(EXAMPLE)

    assert spec.name == "acme-prod-default"
    assert spec.daily == Slot(time(2, 0), "BDT") and spec.daily.tz_name == "Asia/Dhaka"
    assert spec.weekly == Slot(time(3, 0), "BDT", weekday=6)  # Sunday
    assert (spec.keep_daily, spec.keep_weekly) == (7, 4)
    assert spec.vm_tags == (("env", "prod"),)
    assert spec.application_consistent is True
    assert spec.notify_channel == "slack-ops"
    assert spec.when_stopped == "skip"  # the default


def test_export_parses_back_to_the_same_policy():
    spec = parse(EXAMPLE)
    exported = spec.to_yaml()

    assert parse(exported) == spec
    assert parse(exported).to_yaml() == exported
    assert "daily: 02:00 BDT" in exported  # a time, not the sexagesimal number YAML 1.1 would make of it


def _with(old: str, new: str) -> str:
    assert old in EXAMPLE
    return EXAMPLE.replace(old, new, 1)


def bad(case: str, text: str, line: int, field: str, problem: str):
    return pytest.param(text, line, field, problem, id=case)


BAD = [
    bad("bad time", _with("02:00 BDT", "25:00 BDT"), 3, "schedule.daily", "25:00 is not a time of day"),
    bad(
        "time not HH:MM ZONE",
        _with("02:00 BDT", "2am BDT"),
        3,
        "schedule.daily",
        "write it like '02:00 BDT', not '2am BDT'",
    ),
    bad(
        "unknown zone",
        _with("Sun 03:00 BDT", "Sun 03:00 PST"),
        4,
        "schedule.weekly",
        "unknown time zone 'PST'",
    ),
    bad("unknown field", EXAMPLE + "keep_forever: true\n", 12, "keep_forever", "unknown field"),
    bad(
        "unknown nested field", _with("  weekly: 4", "  monthly: 4"), 7, "retention.monthly", "unknown field"
    ),
    bad("missing scope", _with("scope:\n  vm_tags: ['env=prod']\n", ""), 1, "scope", "is required"),
    bad(
        "non-number retention",
        _with("daily: 7", "daily: seven"),
        6,
        "retention.daily",
        "must be a whole number from 0 to 1000, not 'seven'",
    ),
    bad("bad tag", _with("'env=prod'", "'env'"), 9, "scope.vm_tags", "Tag 'env' must look like key=value"),
    bad(
        "when_stopped other than skip/force",
        EXAMPLE + "when_stopped: wait\n",
        12,
        "when_stopped",
        "must be skip or force, not 'wait'",
    ),
    bad(
        "weekly without a day",
        _with("Sun 03:00 BDT", "03:00 BDT"),
        4,
        "schedule.weekly",
        "write it like 'Sun 03:00 BDT', not '03:00 BDT'",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "problem"), BAD)
def test_a_mistake_is_named_by_its_line_and_field(text, line, field, problem):
    with pytest.raises(PolicyError) as raised:
        parse(text)
    assert raised.value.message.startswith(f"line {line}: {field}: {problem}"), raised.value.message
    assert raised.value.field == field
    assert raised.value.code == "InvalidPolicy"


def test_bad_yaml_is_named_by_its_line():
    with pytest.raises(PolicyError) as raised:
        parse(_with("  daily: 7\n", "\tdaily: 7\n"))
    assert raised.value.message.startswith("line 6: not valid YAML: found character '\\t'")
    assert raised.value.field == "yaml"


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_an_empty_policy_is_refused(text):
    with pytest.raises(PolicyError) as raised:
        parse(text)
    assert (raised.value.message, raised.value.field) == ("The policy is empty.", "yaml")
