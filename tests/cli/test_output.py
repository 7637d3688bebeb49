from __future__ import annotations

import pytest

from clouddigit.cli.output import Column, binary_size, cell, table


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"role": "db", "env": "prod"}, "env=prod,role=db"),
        ({}, "-"),
        (None, "-"),
        ("", "-"),
        (True, "true"),
        (["a", "b"], "a,b"),
        ("two words", "two_words"),
    ],
)
def test_a_cell_is_one_token(value, text):
    assert cell(value) == text


@pytest.mark.parametrize(
    ("size", "text"), [(512, "512B"), (2**30, "1GiB"), (3 * 2**29, "1.5GiB"), (2**50, "1024TiB")]
)
def test_sizes_are_binary_units_without_spaces(size, text):
    assert binary_size(size) == text


def test_a_table_aligns_columns_with_two_spaces_and_no_trailing_blanks():
    columns = [Column("ID", "id"), Column("NAME", "name"), Column("TAGS", "tags")]
    text = table([{"id": "1", "name": "a-long-name", "tags": {}}, {"id": "22", "name": "b"}], columns)
    assert text.splitlines() == [
        "ID  NAME         TAGS",
        "1   a-long-name  -",
        "22  b            -",
    ]
