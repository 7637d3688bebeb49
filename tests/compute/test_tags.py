from __future__ import annotations

import pytest


@pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "tab\there", "del\x7f"])
def test_a_tag_value_with_control_characters_is_refused(alice, data_volume, run, value):
    from clouddigit.errors import InvalidRequest
    from snapshots import services as snapshots

    snapshot = run(snapshots.create_snapshot, actor=alice, volume=data_volume, name="tagged")
    with pytest.raises(InvalidRequest, match="control characters"):
        snapshots.set_tags(actor=alice, snapshot=snapshot, add={"env": value})
    snapshot.refresh_from_db()
    assert "env" not in snapshot.tags
