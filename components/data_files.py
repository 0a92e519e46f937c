"""Reading and validating a dataset folder: interactions + item catalog, row by row.

A dataset folder holds one of three layouts, detected by file name:

  interactions.tsv     + items.jsonl    (the normalized layout; TSV header `user_id item_id rating time`)
  interactions.csv     + items.csv
  interactions.parquet + items.parquet

Interactions need the columns user_id, item_id, time (an integer: unix seconds or sequence position) and
may carry rating (empty = implicit feedback). Items need item_id; title, text, brand, categories,
description, price are optional (`categories` is a list in JSON/Parquet, `|`-separated in CSV, and a
`,`-separated string is accepted in JSON); JSON items may also carry genres and tags (lists). When `text`
is absent it is composed from the other fields (see `compose_text`).

Everything here is Beam-friendly: `read_raw_rows(path)` yields undecoded `RawRow`s (usable in
`beam.FlatMap`), and `parse_item` / `parse_interaction` turn one `RawRow` into a record or a `Rejected`
carrying its reason. Nothing is dropped silently; only entirely empty lines are skipped.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

# --- rejection reasons ----------------------------------------------------------------------------
MALFORMED_ROW = "malformed_row"  # wrong column count, bad JSON, bad number, empty id, wrong type
NOT_UTF8 = "not_utf8"  # bytes that do not decode as UTF-8
DUPLICATE_ITEM_ID = "duplicate_item_id"  # a later row repeating an item_id (the first row is kept)
EMPTY_TEXT = "empty_text"  # an item with neither text nor title
UNKNOWN_ITEM = "unknown_item"  # an interaction naming an item that is not in the valid catalog
REASONS = (MALFORMED_ROW, NOT_UTF8, DUPLICATE_ITEM_ID, EMPTY_TEXT, UNKNOWN_ITEM)
# Not a rejection: a valid row rated below the threshold, counted but not a positive.
BELOW_RATING_THRESHOLD = "below_rating_threshold"

# --- layouts ---------------------------------------------------------------------------------------
LAYOUTS = {
    "tsv": ("interactions.tsv", "items.jsonl"),
    "csv": ("interactions.csv", "items.csv"),
    "parquet": ("interactions.parquet", "items.parquet"),
}
INTERACTION_COLUMNS = ("user_id", "item_id", "time")  # required; `rating` is optional
ITEM_COLUMNS = ("item_id",)  # required; the rest are optional
CSV_LIST_SEPARATOR = "|"
JSON_LIST_SEPARATOR = ","
UTF8_BOM = b"\xef\xbb\xbf"  # some editors start UTF-8 files with it


class DataFileError(ValueError):
    """A dataset folder or file that cannot be read at all (as opposed to a bad row)."""


class DatasetFiles(NamedTuple):
    """The two files of a dataset folder and their layout (a key of `LAYOUTS`)."""

    layout: str
    interactions: str
    items: str


class RawRow(NamedTuple):
    """One undecoded row of a file.

    source:  the file's base name, e.g. "items.jsonl".
    line:    1-based line where the row starts (the header is line 1); for Parquet, the 1-based row number.
    payload: the row's bytes without the line ending (text formats), or a dict column -> value (Parquet).
    header:  the column names of a TSV/CSV file; () otherwise.
    """

    source: str
    line: int
    payload: bytes | dict[str, Any]
    header: tuple[str, ...] = ()


class Rejected(NamedTuple):
    """A bad row: where it is, why it is bad (one of `REASONS`), a human detail, and the raw row text."""

    source: str
    line: int
    reason: str
    detail: str
    raw: str

    def to_json(self) -> str:
        """One line of rejected.jsonl."""
        return json.dumps(self._asdict(), ensure_ascii=False, sort_keys=True)


class Item(NamedTuple):
    """A valid catalog item. `price` is 0.0 when unknown, `brand` "" when unknown."""

    item_id: str
    title: str
    text: str
    brand: str
    categories: tuple[str, ...]
    price: float


class Interaction(NamedTuple):
    """A valid interaction row. `rating` is None for implicit feedback; `line` orders ties in time."""

    user_id: str
    item_id: str
    rating: float | None
    time: int
    line: int


class _Bad(Exception):
    """Internal: aborts parsing of one row with a reason and a detail."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# --- locating and reading files ------------------------------------------------------------------
def _filesystems() -> Any:
    """Beam's FileSystems (local, gs://, ...), imported on use: parsing and compose_text need no Beam."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def find_dataset_files(data_dir: str) -> DatasetFiles:
    """Detects the layout of `data_dir`; raises DataFileError naming what was expected."""
    FileSystems = _filesystems()  # noqa: N806
    expected = "; ".join(" + ".join(pair) for pair in LAYOUTS.values())
    if not data_dir or not FileSystems.exists(data_dir):
        raise DataFileError(f"data_dir {data_dir!r} does not exist; expected a folder holding {expected}")
    found = []
    for layout, (interactions, items) in LAYOUTS.items():
        paths = [FileSystems.join(data_dir, name) for name in (interactions, items)]
        present = [FileSystems.exists(path) for path in paths]
        if all(present):
            found.append(DatasetFiles(layout, *paths))
        elif any(present):
            missing = (interactions, items)[present.index(False)]
            raise DataFileError(f"{data_dir!r} has {(interactions, items)[present.index(True)]} "
                                f"but no {missing}; expected {expected}")
    if not found:
        raise DataFileError(f"{data_dir!r} holds no dataset; expected {expected}")
    if len(found) > 1:
        raise DataFileError(f"{data_dir!r} holds several layouts ({', '.join(f.layout for f in found)}); "
                            "keep exactly one")
    return found[0]


def read_raw_rows(path: str) -> Iterator[RawRow]:
    """Yields every row of one data file undecoded; raises DataFileError if the file is unreadable.

    Usable as `beam.FlatMap(read_raw_rows)` over a PCollection of paths.
    """
    source = posixpath.basename(path)
    suffix = source.rsplit(".", 1)[-1]
    from apache_beam.io.filesystem import CompressionTypes

    try:
        with _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            if suffix == "parquet":
                yield from _parquet_rows(f, source)
            elif suffix == "jsonl":
                yield from _jsonl_rows(f, source)
            elif suffix in ("tsv", "csv"):
                yield from _delimited_rows(f, source, suffix)
            else:
                raise DataFileError(f"{path}: unknown file type {suffix!r}")
    except OSError as e:
        raise DataFileError(f"cannot read {path}: {e}") from e


def _jsonl_rows(f: BinaryIO, source: str) -> Iterator[RawRow]:
    for line_no, line in enumerate(f, start=1):
        line = line.rstrip(b"\r\n").removeprefix(UTF8_BOM if line_no == 1 else b"")
        if line.strip():
            yield RawRow(source, line_no, line)


def _delimited_rows(f: BinaryIO, source: str, suffix: str) -> Iterator[RawRow]:
    records = _csv_records(f) if suffix == "csv" else _lines(f)
    first = next(records, None)
    if first is None:
        raise DataFileError(f"{source} is empty; expected a header line")
    header = _parse_header(first[1], source, suffix)
    for line_no, record in records:
        if record.strip():
            yield RawRow(source, line_no, record, header)


def _lines(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    for line_no, line in enumerate(f, start=1):
        yield line_no, line.rstrip(b"\r\n")


def _csv_records(f: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Groups physical lines into CSV records: a quoted field may span lines (quotes are ASCII in UTF-8)."""
    start, parts, quotes = 0, [], 0
    for line_no, line in enumerate(f, start=1):
        if not parts:
            start = line_no
        parts.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            yield start, b"".join(parts).rstrip(b"\r\n")
            parts, quotes = [], 0
    if parts:  # an unbalanced quote: hand the rest over as one (malformed) record
        yield start, b"".join(parts).rstrip(b"\r\n")


def _parse_header(record: bytes, source: str, suffix: str) -> tuple[str, ...]:
    try:
        text = record.removeprefix(UTF8_BOM).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFileError(f"{source}: the header line is not UTF-8") from e
    header = tuple(name.strip() for name in _split_record(text, suffix))
    _check_columns(header, source)
    return header


def _check_columns(columns: tuple[str, ...], source: str) -> None:
    required = INTERACTION_COLUMNS if source.startswith("interactions") else ITEM_COLUMNS
    missing = [name for name in required if name not in columns]
    if missing:
        raise DataFileError(f"{source}: missing column(s) {', '.join(missing)}; found {list(columns)}")
    if len(set(columns)) != len(columns):
        raise DataFileError(f"{source}: repeated column names in {list(columns)}")


def _parquet_rows(f: BinaryIO, source: str) -> Iterator[RawRow]:
    import pyarrow as pa  # local imports: only Parquet datasets need pyarrow
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(f)
    schema = parquet.schema_arrow
    _check_columns(tuple(schema.names), source)
    # Read strings as bytes so that invalid UTF-8 becomes a not_utf8 row rather than a read error.
    binary_schema = pa.schema([field.with_type(_binary_type(field.type)) for field in schema])
    row_no = 0
    for batch in parquet.iter_batches():
        for row in batch.cast(binary_schema).to_pylist():
            row_no += 1
            yield RawRow(source, row_no, row)


def _binary_type(arrow_type: Any) -> Any:
    import pyarrow as pa

    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pa.binary()
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.list_(_binary_type(arrow_type.value_type))
    return arrow_type


def _split_record(text: str, suffix: str) -> list[str]:
    if suffix == "tsv":
        return text.split("\t")
    records = list(csv.reader(io.StringIO(text, newline="")))
    if len(records) != 1:
        raise _Bad(MALFORMED_ROW, f"expected one CSV record, found {len(records)}")
    return records[0]


# --- parsing one row --------------------------------------------------------------------------------
def raw_text(row: RawRow) -> str:
    """The row as text for rejected.jsonl; undecodable bytes appear as \\x escapes."""
    if isinstance(row.payload, bytes):
        return row.payload.decode("utf-8", errors="backslashreplace")
    return json.dumps(row.payload, ensure_ascii=False, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def parse_interaction(row: RawRow) -> Interaction | Rejected:
    """Parses one interactions row into an Interaction, or a Rejected with its reason."""
    try:
        fields = _fields(row)
        return Interaction(
            user_id=_identifier(fields.get("user_id"), "user_id"),
            item_id=_identifier(fields.get("item_id"), "item_id"),
            rating=_optional_number(fields.get("rating"), "rating"),
            time=_integer(fields.get("time"), "time"),
            line=row.line,
        )
    except _Bad as bad:
        return Rejected(row.source, row.line, bad.reason, bad.detail, raw_text(row))


def parse_item(row: RawRow) -> Item | Rejected:
    """Parses one catalog row into an Item, or a Rejected with its reason.

    A row with neither text nor title is rejected as empty_text; `text` is composed when absent.
    """
    try:
        fields = _fields(row)
        separator = CSV_LIST_SEPARATOR if row.header else JSON_LIST_SEPARATOR
        item_id = _identifier(fields.get("item_id"), "item_id")
        title = _string(fields.get("title"), "title")
        brand = _string(fields.get("brand"), "brand")
        categories = _string_list(fields.get("categories"), "categories", separator)
        genres = _string_list(fields.get("genres"), "genres", separator)
        tags = _string_list(fields.get("tags"), "tags", separator)
        description = _string(fields.get("description"), "description")
        text = _string(fields.get("text"), "text")
        if not (text or title):
            raise _Bad(EMPTY_TEXT, f"item {item_id!r} has neither text nor title")
        text = text or compose_text(title, brand, categories, description, genres, tags)
        price = _optional_number(fields.get("price"), "price")
        if price is not None and price < 0:
            raise _Bad(MALFORMED_ROW, f"price {price} is negative")
        return Item(item_id, title, text, brand, categories or genres, 0.0 if price is None else price)
    except _Bad as bad:
        return Rejected(row.source, row.line, bad.reason, bad.detail, raw_text(row))


def compose_text(
    title: str,
    brand: str = "",
    categories: tuple[str, ...] = (),
    description: str = "",
    genres: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
) -> str:
    """The text-tower string, in the layout of the normalized datasets.

    >>> compose_text("Red pen", "Acme", ("Pens", "Office"), "Writes well.")
    'Red pen. Brand: Acme. Categories: Pens, Office. Writes well.'
    """
    parts = [f"{title}." if title else ""]
    parts += [f"Brand: {brand}." if brand else ""]
    for label, values in (("Categories", categories), ("Genres", genres), ("Tags", tags)):
        parts.append(f"{label}: {', '.join(values)}." if values else "")
    parts.append(description)
    return " ".join(part for part in parts if part)


def _fields(row: RawRow) -> dict[str, Any]:
    """Column -> value for one row: strings for TSV/CSV, JSON values for JSONL, decoded Parquet values."""
    if isinstance(row.payload, dict):
        return {name: _decode_value(value, name) for name, value in row.payload.items()}
    text = _decode(row.payload)
    if row.header:
        values = _split_record(text, "tsv" if row.source.endswith(".tsv") else "csv")
        if len(values) != len(row.header):
            raise _Bad(MALFORMED_ROW, f"expected {len(row.header)} columns, found {len(values)}")
        return dict(zip(row.header, values, strict=True))
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise _Bad(MALFORMED_ROW, f"bad JSON: {e}") from e
    if not isinstance(value, dict):
        raise _Bad(MALFORMED_ROW, f"expected a JSON object, found {type(value).__name__}")
    return value


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad(NOT_UTF8, f"bytes {e.start}-{e.end} are not UTF-8: {e.reason}") from e


def _decode_value(value: Any, name: str) -> Any:
    if isinstance(value, bytes):
        return _decode(value)
    if isinstance(value, list):
        return [_decode_value(v, name) for v in value]
    return value


def _identifier(value: Any, name: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    text = _string(value, name)
    if not text:
        raise _Bad(MALFORMED_ROW, f"empty {name}")
    return text


def _string(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Bad(MALFORMED_ROW, f"{name} should be a string, found {type(value).__name__}")
    return value.strip()


def _string_list(value: Any, name: str, separator: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = value.split(separator)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(MALFORMED_ROW, f"{name} should be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _optional_number(value: Any, name: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Bad(MALFORMED_ROW, f"{name} should be a number, found {type(value).__name__}")
    try:
        number = float(value)
    except ValueError as e:
        raise _Bad(MALFORMED_ROW, f"{name} {value!r} is not a number") from e
    if not math.isfinite(number):
        raise _Bad(MALFORMED_ROW, f"{name} {value!r} is not finite")
    return number


def _integer(value: Any, name: str) -> int:
    number = _optional_number(value, name)
    if number is None:
        raise _Bad(MALFORMED_ROW, f"empty {name}")
    if isinstance(value, int):
        return value
    if not number.is_integer():
        raise _Bad(MALFORMED_ROW, f"{name} {value!r} is not an integer")
    # Parse integer strings exactly (float loses precision past 2**53).
    text = str(value).strip()
    return int(text) if text.lstrip("+-").isdigit() else int(number)
