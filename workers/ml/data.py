"""Training and batch rows as typed columns: inline JSON rows, or a CSV, Parquet or JSON-lines file.

Every column becomes one of three kinds: `number` (float64, NaN where missing), `boolean`
(float64 0/1, NaN where missing) or `category` (object array of str, None where missing). Files
are read with pyarrow under limits checked before the bytes are decoded where the format allows
(Parquet's metadata gives rows, columns and the uncompressed size), so a small file cannot
expand into an unbounded table; the caller bounds the file's own size before downloading it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

NUMBER, BOOLEAN, CATEGORY = "number", "boolean", "category"
KINDS = (NUMBER, BOOLEAN, CATEGORY)
FORMATS = ("csv", "parquet", "jsonl")
MAX_NAME_CHARS = 128
MAX_CATEGORY_CHARS = 1024


class DataError(ValueError):
    """Rows that cannot be used; `field` names where (a column, a row, the file)."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class DataTooLarge(DataError):
    """Over a limit (rows, columns, bytes)."""

    def __init__(self, message: str, field: str, limit: int) -> None:
        super().__init__(message, field)
        self.limit = limit


@dataclass(frozen=True)
class Limits:
    max_rows: int
    max_columns: int
    # Parquet: the largest uncompressed size its metadata may declare.
    max_decoded_bytes: int


@dataclass
class Table:
    """Named columns of equal length, each of a kind (see the module docstring)."""

    columns: dict[str, npt.NDArray[Any]]
    kinds: dict[str, str]

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def take(self, index: npt.NDArray[np.intp]) -> Table:
        return Table({k: v[index] for k, v in self.columns.items()}, dict(self.kinds))


def format_of(name: str, given: str) -> str:
    """The format named, else the one of the object's extension."""
    if given:
        if given not in FORMATS:
            raise DataError(f"format must be one of {', '.join(FORMATS)}", "format")
        return given
    suffix = Path(name).suffix.lower().lstrip(".")
    aliases = {"csv": "csv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl"}
    aliases["ndjson"] = "jsonl"
    if suffix not in aliases:
        raise DataError(f"cannot tell the format of {name!r} from its name; give format", "format")
    return aliases[suffix]


# -- inline rows ------------------------------------------------------------------------------


def from_rows(rows: Sequence[Mapping[str, Any]], limits: Limits, field: str = "rows") -> Table:
    """Columns from JSON rows; a key absent from a row is a missing value there."""
    if not rows:
        raise DataError("no rows", field)
    if len(rows) > limits.max_rows:
        raise DataTooLarge(f"more than {limits.max_rows} rows", field, limits.max_rows)
    names: dict[str, None] = {}
    for row in rows:
        for name in row:
            names.setdefault(name, None)
        if len(names) > limits.max_columns:
            raise DataTooLarge(f"more than {limits.max_columns} columns", field, limits.max_columns)
    table = Table({}, {})
    for name in names:
        check_name(name, field)
        values = [row.get(name) for row in rows]
        kind = _kind_of(values, f"{field}.{name}")
        table.columns[name] = column(values, kind, f"{field}.{name}")
        table.kinds[name] = kind
    return table


def _kind_of(values: Sequence[Any], field: str) -> str:
    seen = {_value_kind(v, field) for v in values if v is not None}
    if not seen:
        raise DataError("the column has no values", field)
    if len(seen) > 1:
        raise DataError(f"the column mixes {' and '.join(sorted(seen))} values", field)
    return seen.pop()


def _value_kind(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return CATEGORY
    raise DataError("values must be numbers, strings, booleans or null", field)


def column(values: Sequence[Any], kind: str, field: str) -> npt.NDArray[Any]:
    """One column of a kind from Python values (already known to be of that kind or None)."""
    if kind == CATEGORY:
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if v is not None and len(v) > MAX_CATEGORY_CHARS:
                raise DataError(f"a value is longer than {MAX_CATEGORY_CHARS} characters", field)
            out[i] = v
        return out
    floats = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    if not np.isfinite(floats[~np.isnan(floats)]).all():
        raise DataError("numbers must be finite", field)
    return floats


def check_name(name: str, field: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or any(ord(c) < 0x20 for c in name):
        raise DataError(
            f"column names must be 1-{MAX_NAME_CHARS} characters without control characters",
            field,
        )


# -- files ------------------------------------------------------------------------------------


def from_file(path: Path, fmt: str, limits: Limits, field: str = "object") -> Table:
    """Columns of a CSV, Parquet or JSON-lines file (its size was bounded by the caller)."""
    import pyarrow as pa

    try:
        if fmt == "parquet":
            arrow = _read_parquet(path, limits, field)
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            arrow = pacsv.read_csv(
                path,
                convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
                read_options=pacsv.ReadOptions(block_size=1 << 20),
            )
        elif fmt == "jsonl":
            import pyarrow.json as pajson

            arrow = pajson.read_json(path, read_options=pajson.ReadOptions(block_size=1 << 20))
        else:
            raise DataError(f"format must be one of {', '.join(FORMATS)}", "format")
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError) as exc:
        # pyarrow's messages name the row and column, never our internals.
        raise DataError(f"the {fmt} file cannot be read: {str(exc)[:300]}", field) from None
    if arrow.num_rows == 0:
        raise DataError("the file has no rows", field)
    if arrow.num_rows > limits.max_rows:
        raise DataTooLarge(f"more than {limits.max_rows} rows", field, limits.max_rows)
    if arrow.num_columns > limits.max_columns:
        raise DataTooLarge(f"more than {limits.max_columns} columns", field, limits.max_columns)
    return _from_arrow(arrow, field)


def _read_parquet(path: Path, limits: Limits, field: str) -> Any:
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as pf:
        meta = pf.metadata
        if meta.num_rows > limits.max_rows:
            raise DataTooLarge(f"more than {limits.max_rows} rows", field, limits.max_rows)
        if meta.num_columns > limits.max_columns:
            raise DataTooLarge(f"more than {limits.max_columns} columns", field, limits.max_columns)
        decoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if decoded > limits.max_decoded_bytes:
            raise DataTooLarge(
                f"the file decodes to more than {limits.max_decoded_bytes} bytes",
                field,
                limits.max_decoded_bytes,
            )
        return pf.read()


def _from_arrow(arrow: Any, field: str) -> Table:
    import pyarrow as pa
    import pyarrow.compute as pc

    table = Table({}, {})
    for name, col in zip(arrow.column_names, arrow.columns, strict=True):
        where = f"{field}.{name}"
        check_name(name, where)
        if name in table.columns:
            raise DataError("the column appears twice", where)
        kind_type = col.type
        if pa.types.is_dictionary(kind_type):
            col = col.cast(kind_type.value_type)
            kind_type = col.type
        if pa.types.is_boolean(kind_type):
            values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            kind = BOOLEAN
        elif (
            pa.types.is_integer(kind_type)
            or pa.types.is_floating(kind_type)
            or (pa.types.is_decimal(kind_type))
        ):
            values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            kind = NUMBER
            present = values[~np.isnan(values)]
            if not np.isfinite(present).all():
                raise DataError("numbers must be finite", where)
        elif pa.types.is_null(kind_type):
            raise DataError("the column has no values", where)
        elif (
            pa.types.is_string(kind_type)
            or pa.types.is_large_string(kind_type)
            or pa.types.is_temporal(kind_type)
        ):
            text = col.cast(pa.string())
            longest = pc.max(pc.utf8_length(text)).as_py()
            if longest is not None and longest > MAX_CATEGORY_CHARS:
                raise DataError(f"a value is longer than {MAX_CATEGORY_CHARS} characters", where)
            values = np.asarray(text.to_pylist(), dtype=object)
            kind = CATEGORY
        else:
            raise DataError(f"columns of type {kind_type} are not supported", where)
        if kind != CATEGORY and np.isnan(values).all():
            raise DataError("the column has no values", where)
        table.columns[name] = np.asarray(values)
        table.kinds[name] = kind
    return table
