"""Training rows as typed columns: inline rows, CSV, Parquet and JSON lines, under limits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.ml import churn_csv
from workers.ml.data import (
    BOOLEAN,
    CATEGORY,
    NUMBER,
    DataError,
    DataTooLarge,
    Limits,
    format_of,
    from_file,
    from_rows,
)

LIMITS = Limits(max_rows=1000, max_columns=10, max_decoded_bytes=1 << 20)


def test_inline_rows_become_typed_columns_with_missing_values() -> None:
    """Numbers, booleans and strings get their kind; an absent key or null is missing."""
    table = from_rows(
        [{"a": 1, "b": True, "c": "x"}, {"a": 2.5, "c": None}, {"b": False, "c": "y"}], LIMITS
    )
    assert table.kinds == {"a": NUMBER, "b": BOOLEAN, "c": CATEGORY}
    assert table.columns["a"][:2].tolist() == [1.0, 2.5]
    assert math.isnan(table.columns["a"][2])
    assert math.isnan(table.columns["b"][1])
    assert table.columns["c"].tolist() == ["x", None, "y"]


def test_a_column_mixing_numbers_and_strings_is_refused_naming_it() -> None:
    """A column holding 1 and "one" has no kind; the error names the column."""
    with pytest.raises(DataError) as err:
        from_rows([{"a": 1}, {"a": "one"}], LIMITS, "training_data.rows")
    assert err.value.field == "training_data.rows.a"


def test_nested_values_are_refused() -> None:
    """Objects and lists are not feature values."""
    with pytest.raises(DataError) as err:
        from_rows([{"a": {"b": 1}}], LIMITS)
    assert err.value.field == "rows.a"


def test_more_rows_or_columns_than_the_limits_are_too_large() -> None:
    """Row and column counts are bounded before any column is built."""
    with pytest.raises(DataTooLarge):
        from_rows([{"a": 1}] * 1001, LIMITS)
    with pytest.raises(DataTooLarge):
        from_rows([{f"c{i}": 1 for i in range(11)}], LIMITS)


def test_a_csv_file_is_read_with_kinds_inferred(tmp_path: Path) -> None:
    """A CSV's numbers, true/false and strings become number, boolean and category columns."""
    path = tmp_path / "churn.csv"
    path.write_bytes(churn_csv(50))
    table = from_file(path, "csv", LIMITS)
    assert table.rows == 50
    assert table.kinds == {
        "usage": NUMBER,
        "tenure": NUMBER,
        "plan": CATEGORY,
        "active": BOOLEAN,
        "churned": CATEGORY,
    }


def test_a_parquet_file_is_read_and_its_declared_size_bounded(tmp_path: Path) -> None:
    """Parquet metadata is checked against the limits before the columns are decoded."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": np.arange(500, dtype=np.int64), "s": ["a"] * 500}), path)
    table = from_file(path, "parquet", LIMITS)
    assert table.kinds == {"x": NUMBER, "s": CATEGORY}
    with pytest.raises(DataTooLarge):
        from_file(path, "parquet", Limits(100, 10, 1 << 20))
    with pytest.raises(DataTooLarge):
        from_file(path, "parquet", Limits(1000, 10, 100))


def test_json_lines_are_read(tmp_path: Path) -> None:
    """One JSON object per line is a row."""
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1, "b": "x"}\n{"a": 2, "b": null}\n')
    table = from_file(path, "jsonl", LIMITS)
    assert table.columns["a"].tolist() == [1.0, 2.0]
    assert table.columns["b"].tolist() == ["x", None]


def test_a_file_that_is_not_its_format_is_a_data_error(tmp_path: Path) -> None:
    """Garbage named .parquet fails with the reason, not a crash."""
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as err:
        from_file(path, "parquet", LIMITS)
    assert "cannot be read" in str(err.value)


def test_the_format_comes_from_the_name_unless_given() -> None:
    """`a.csv` is CSV, `b.parquet` Parquet; an unknown extension needs the format named."""
    assert format_of("uploads/a.csv", "") == "csv"
    assert format_of("b.parquet", "") == "parquet"
    assert format_of("x.data", "jsonl") == "jsonl"
    with pytest.raises(DataError):
        format_of("x.data", "")
    with pytest.raises(DataError):
        format_of("x.csv", "xlsx")
