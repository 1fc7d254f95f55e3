//! Record batches: how bulk data travels. One passenger carries one chunk of rows (10,000 by
//! default) from a query, a file or an API, never one queue row per record.
//!
//! The body is one line of JSON naming the columns and their types, then the rows in
//! PostgreSQL's `COPY … FROM STDIN` text format: fields separated by tabs, rows ended by a
//! newline, `\N` for NULL, and backslash, tab, newline and carriage return escaped. A PostgreSQL
//! pusher streams the rows to `COPY` as they are; everything else reads them with [`rows`].
//!
//! ```text
//! {"columns":[{"name":"id","type":"integer"},{"name":"name","type":"text"}],"rows":2}
//! 1→Ann
//! 2→\N
//! ```
//! (`→` stands for a tab.)
//!
//! Values are written in PostgreSQL's text form for their type: `t`/`f` for booleans,
//! `2024-05-31` for dates, `2024-05-31 12:00:00` for timestamps, `2024-05-31 12:00:00+00` for
//! timestamps with time zone, `\x…` (hex) for bytes, JSON as its text.
//!
//! A *load* is the set of chunks one run of a puller produced (a whole query result, a whole
//! file). Every chunk names its load, its number in it and whether it is the last one, in the
//! passenger's metadata ([`LOAD`], [`CHUNK`], [`LAST`]), so that a pusher can tell when a load
//! is complete (to swap a replaced table, to run SQL after the load).

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{Body, Passenger};

/// The media type of a record batch body.
pub const MEDIA_TYPE: &str = "application/vnd.ferry.records";

/// Metadata key: the load a chunk belongs to (unique per load, e.g. a UUID).
pub const LOAD: &str = "load";
/// Metadata key: the chunk's number within its load, from 1.
pub const CHUNK: &str = "chunk";
/// Metadata key: `true` on the last chunk of a load.
pub const LAST: &str = "last";
/// Metadata key: how many rows the chunk holds.
pub const ROWS: &str = "rows";
/// Metadata key: on the chunks of a load that replaces the earlier loads of the same source
/// (a full load of an `sql` puller, an `http` load), the name of that source within the
/// pipeline. Within one target, pipeline and series, a newer load (a greater `load` id)
/// supersedes every older one that is not complete: the older one is discarded whole, never
/// applied beside the newer.
pub const SERIES: &str = "series";

/// Rows per chunk unless a puller is told otherwise.
pub const DEFAULT_CHUNK_ROWS: usize = 10_000;

/// The type of a column, named as in definitions; each maps to one PostgreSQL type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Boolean,
    /// 64-bit integer.
    Integer,
    /// 64-bit floating point.
    Float,
    /// Exact decimal.
    Numeric,
    Text,
    Date,
    Time,
    /// Date and time without a time zone.
    Timestamp,
    /// An instant: date and time with a time zone.
    Timestamptz,
    Json,
    Bytes,
    Uuid,
}

impl ColumnType {
    /// Every type, for "valid types are …" messages.
    pub const ALL: [ColumnType; 12] = [
        ColumnType::Boolean,
        ColumnType::Integer,
        ColumnType::Float,
        ColumnType::Numeric,
        ColumnType::Text,
        ColumnType::Date,
        ColumnType::Time,
        ColumnType::Timestamp,
        ColumnType::Timestamptz,
        ColumnType::Json,
        ColumnType::Bytes,
        ColumnType::Uuid,
    ];

    /// The name used in definitions and in the batch header.
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Numeric => "numeric",
            ColumnType::Text => "text",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Json => "json",
            ColumnType::Bytes => "bytes",
            ColumnType::Uuid => "uuid",
        }
    }

    /// The PostgreSQL column type a load creates for it.
    pub fn postgres(self) -> &'static str {
        match self {
            ColumnType::Boolean => "boolean",
            ColumnType::Integer => "bigint",
            ColumnType::Float => "double precision",
            ColumnType::Numeric => "numeric",
            ColumnType::Text => "text",
            ColumnType::Date => "date",
            ColumnType::Time => "time",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Json => "jsonb",
            ColumnType::Bytes => "bytea",
            ColumnType::Uuid => "uuid",
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ColumnType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = ColumnType::ALL.iter().map(|t| t.as_str()).collect();
                format!(
                    "unknown column type `{s}`; valid types are: {}",
                    names.join(", ")
                )
            })
    }
}

/// A column of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ColumnType,
    /// The type modifier the puller declared (`numeric(12,2)`, `varchar(8)`), which a pusher
    /// creating the table uses. In the header only when present, so batches written before it
    /// read as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modifier: Option<Modifier>,
}

impl Column {
    pub fn new(name: impl Into<String>, kind: ColumnType) -> Self {
        Column {
            name: name.into(),
            kind,
            modifier: None,
        }
    }

    /// The column with a declared modifier (one that [`Modifier::suits`] its type).
    pub fn with_modifier(mut self, modifier: Option<Modifier>) -> Self {
        self.modifier = modifier;
        self
    }

    /// The PostgreSQL column type a load creates for it: its type's, with the modifier.
    pub fn postgres(&self) -> String {
        match self.modifier {
            None => self.kind.postgres().to_string(),
            Some(modifier) => modifier.declared(self.kind),
        }
    }
}

/// The largest precision of a declared `numeric(p,s)` (PostgreSQL's limit).
pub const MAX_NUMERIC_PRECISION: u32 = 1000;
/// The largest length of a declared `varchar(n)` or `char(n)` (PostgreSQL's limit).
pub const MAX_TEXT_LENGTH: u32 = 10_485_760;
/// The most fractional digits of seconds a declared `timestamp(p)` may keep.
pub const MAX_SECONDS_PRECISION: u32 = 6;

/// A type modifier a column may declare, as SQL writes it after the type's name: what a table
/// column of that type holds, so that a pusher creates the table a DBA would have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Modifier {
    /// `numeric(precision, scale)`: at most `precision` digits, `scale` of them after the point.
    Numeric { precision: u32, scale: u32 },
    /// `varchar(length)`: text of at most `length` characters.
    Varchar { length: u32 },
    /// `char(length)`: text of exactly `length` characters (padded with spaces).
    Char { length: u32 },
    /// `timestamp(p)`, `timestamptz(p)`, `time(p)`: `p` fractional digits of seconds kept.
    Seconds { precision: u32 },
}

impl Modifier {
    /// Whether a column of type `kind` may have this modifier.
    pub fn suits(self, kind: ColumnType) -> bool {
        match self {
            Modifier::Numeric { .. } => kind == ColumnType::Numeric,
            Modifier::Varchar { .. } | Modifier::Char { .. } => kind == ColumnType::Text,
            Modifier::Seconds { .. } => matches!(
                kind,
                ColumnType::Time | ColumnType::Timestamp | ColumnType::Timestamptz
            ),
        }
    }

    /// The SQL type of a column of type `kind` with this modifier (`numeric(12,2)`,
    /// `varchar(8)`, `timestamptz(3)`), as PostgreSQL spells it.
    pub fn declared(self, kind: ColumnType) -> String {
        match self {
            Modifier::Numeric { precision, scale } => format!("numeric({precision},{scale})"),
            Modifier::Varchar { length } => format!("varchar({length})"),
            Modifier::Char { length } => format!("char({length})"),
            Modifier::Seconds { precision } => format!("{}({precision})", kind.postgres()),
        }
    }

    /// Checks the limits: `1 ≤ p ≤ 1000` and `s ≤ p` for numeric, `n ≥ 1` for text,
    /// `p ≤ 6` for seconds.
    pub fn validate(self) -> Result<(), String> {
        match self {
            Modifier::Numeric { precision, scale } => {
                if !(1..=MAX_NUMERIC_PRECISION).contains(&precision) {
                    return Err(format!(
                        "the precision of numeric({precision},{scale}) must be between 1 and \
                         {MAX_NUMERIC_PRECISION}"
                    ));
                }
                if scale > precision {
                    return Err(format!(
                        "the scale of numeric({precision},{scale}) is larger than its precision                          (digits after the point are part of the precision)"
                    ));
                }
            }
            Modifier::Varchar { length } | Modifier::Char { length } => {
                if !(1..=MAX_TEXT_LENGTH).contains(&length) {
                    return Err(format!(
                        "the length {length} must be between 1 and {MAX_TEXT_LENGTH}"
                    ));
                }
            }
            Modifier::Seconds { precision } => {
                if precision > MAX_SECONDS_PRECISION {
                    return Err(format!(
                        "the precision {precision} of seconds must be between 0 and \
                         {MAX_SECONDS_PRECISION}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses a declared column type: a [`ColumnType`] name, or one with a modifier:
/// `numeric(12,2)`, `numeric(12)`, `varchar(8)`, `char(8)`, `timestamp(3)`,
/// `timestamptz(3)`, `time(3)`. The error says what is wrong and what is valid.
pub fn parse_type(text: &str) -> Result<(ColumnType, Option<Modifier>), String> {
    let Some((name, rest)) = text.split_once('(') else {
        return match text {
            "varchar" | "char" => {
                let unknown = text.parse::<ColumnType>().err().unwrap_or_default();
                let valid = unknown.split_once("; ").map_or("", |(_, valid)| valid);
                Err(format!(
                    "`{text}` needs a length, e.g. `{text}(20)`; write `text` for text of any \
                     length ({valid})"
                ))
            }
            _ => text.parse().map(|kind| (kind, None)),
        };
    };
    let Some(arguments) = rest.strip_suffix(')') else {
        return Err(format!("`{text}` lacks its closing `)`"));
    };
    let numbers: Vec<u32> = arguments
        .split(',')
        .map(|n| n.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            format!("`{text}`: the modifier must be whole numbers, e.g. `numeric(12,2)`")
        })?;
    let name = name.trim();
    let (kind, modifier) = match (name, numbers.as_slice()) {
        ("numeric", &[precision]) => (
            ColumnType::Numeric,
            Modifier::Numeric {
                precision,
                scale: 0,
            },
        ),
        ("numeric", &[precision, scale]) => {
            (ColumnType::Numeric, Modifier::Numeric { precision, scale })
        }
        ("varchar", &[length]) => (ColumnType::Text, Modifier::Varchar { length }),
        ("char", &[length]) => (ColumnType::Text, Modifier::Char { length }),
        ("timestamp" | "timestamptz" | "time", &[precision]) => {
            (name.parse::<ColumnType>()?, Modifier::Seconds { precision })
        }
        _ => {
            return Err(format!(
                "`{text}` is not a type with a modifier; valid are numeric(p,s), numeric(p), \
                 varchar(n), char(n), timestamp(p), timestamptz(p) and time(p)"
            ));
        }
    };
    modifier
        .validate()
        .map_err(|why| format!("`{text}`: {why}"))?;
    Ok((kind, Some(modifier)))
}

/// The first line of a batch body.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    columns: Vec<Column>,
    rows: usize,
}

/// Writes one batch, row by row and field by field.
///
/// ```
/// use ferry_core::records::{BatchWriter, Column, ColumnType, read};
/// let mut batch = BatchWriter::new(vec![
///     Column::new("id", ColumnType::Integer),
///     Column::new("note", ColumnType::Text),
/// ]);
/// batch.raw("1");
/// batch.text("tab\there");
/// batch.end_row();
/// let body = batch.finish();
/// let read = read(&body).unwrap();
/// assert_eq!(read.rows, 1);
/// assert_eq!(&read.data[..], b"1\ttab\\there\n");
/// ```
#[derive(Debug)]
pub struct BatchWriter {
    columns: Vec<Column>,
    data: Vec<u8>,
    rows: usize,
    /// Fields written in the current row.
    fields: usize,
}

impl BatchWriter {
    pub fn new(columns: Vec<Column>) -> Self {
        BatchWriter {
            columns,
            data: Vec::new(),
            rows: 0,
            fields: 0,
        }
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Rows finished so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Bytes of row data so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0 && self.fields == 0
    }

    fn separate(&mut self) {
        if self.fields > 0 {
            self.data.push(b'\t');
        }
        self.fields += 1;
    }

    /// A NULL.
    pub fn null(&mut self) {
        self.separate();
        self.data.extend_from_slice(b"\\N");
    }

    /// A value given as text, escaped.
    pub fn text(&mut self, value: &str) {
        self.separate();
        escape_into(&mut self.data, value.as_bytes());
    }

    /// A value whose text needs no escaping (a number, a date, `t`): written as it is.
    pub fn raw(&mut self, value: &str) {
        debug_assert!(
            !value
                .bytes()
                .any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
        );
        self.separate();
        self.data.extend_from_slice(value.as_bytes());
    }

    /// A `bytes` value, as PostgreSQL's hex form.
    pub fn bytes(&mut self, value: &[u8]) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.separate();
        // `\x` with its backslash escaped for COPY.
        self.data.extend_from_slice(b"\\\\x");
        for byte in value {
            self.data.push(HEX[usize::from(byte >> 4)]);
            self.data.push(HEX[usize::from(byte & 0xf)]);
        }
    }

    /// Ends the current row.
    ///
    /// # Panics
    /// When the row does not have one field per column: a bug in the puller.
    pub fn end_row(&mut self) {
        assert_eq!(
            self.fields,
            self.columns.len(),
            "a row needs one field per column"
        );
        self.data.push(b'\n');
        self.rows += 1;
        self.fields = 0;
    }

    /// The batch as a passenger body.
    pub fn finish(self) -> Body {
        let header = Header {
            columns: self.columns,
            rows: self.rows,
        };
        let mut data = serde_json::to_vec(&header).expect("a header serializes");
        data.push(b'\n');
        data.extend_from_slice(&self.data);
        Body {
            media_type: MEDIA_TYPE.to_string(),
            data: Bytes::from(data),
        }
    }
}

/// Appends `value` to `out` with COPY's text escapes.
fn escape_into(out: &mut Vec<u8>, value: &[u8]) {
    let special = |byte: &u8| matches!(byte, b'\\' | b'\t' | b'\n' | b'\r');
    // Most text needs no escape: copy it whole.
    if !value.iter().any(special) {
        out.extend_from_slice(value);
        return;
    }
    for &byte in value {
        match byte {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(byte),
        }
    }
}

/// A batch read from a body: its columns and its rows, still in COPY text format.
#[derive(Debug)]
pub struct Batch {
    pub columns: Vec<Column>,
    pub rows: usize,
    /// The rows: what `COPY … FROM STDIN` reads.
    pub data: Bytes,
}

/// Reads a batch body; the error says what is wrong with it.
pub fn read(body: &Body) -> Result<Batch, String> {
    if body.media_type != MEDIA_TYPE {
        return Err(format!(
            "the body is `{}`, not a record batch (`{MEDIA_TYPE}`); a table pusher needs a \
             puller that reads records (sql, table files, http)",
            body.media_type
        ));
    }
    let newline = body
        .data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("record batch without a header line")?;
    let header: Header = serde_json::from_slice(&body.data[..newline])
        .map_err(|e| format!("record batch header: {e}"))?;
    for column in &header.columns {
        if let Some(modifier) = column.modifier
            && let Err(why) = check_modifier(column.kind, modifier)
        {
            return Err(format!(
                "record batch header: column `{}`: {why}",
                column.name
            ));
        }
    }
    Ok(Batch {
        columns: header.columns,
        rows: header.rows,
        data: body.data.slice(newline + 1..),
    })
}

/// Whether `modifier` suits `kind` and keeps within its limits.
fn check_modifier(kind: ColumnType, modifier: Modifier) -> Result<(), String> {
    if !modifier.suits(kind) {
        return Err(format!(
            "type {kind} cannot have the modifier of {}",
            modifier.declared(kind)
        ));
    }
    modifier.validate()
}

/// The rows of COPY text `data`, unescaped: one `Vec` per row, `None` for NULL. For tests,
/// previews and pushers that cannot use COPY; loads stream `data` as it is.
pub fn rows(data: &[u8]) -> Vec<Vec<Option<String>>> {
    let Some(data) = data.strip_suffix(b"\n") else {
        return Vec::new();
    };
    // Every row ends with a newline; an empty line is a row of one empty field.
    data.split(|&b| b == b'\n')
        .map(|line| line.split(|&b| b == b'\t').map(unescape).collect())
        .collect()
}

/// The row lines of COPY text `data`, without their newlines, one at a time: for processors
/// that look at a chunk row by row without holding every row unescaped.
pub fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let data = data.strip_suffix(b"\n");
    data.into_iter()
        .flat_map(|data| data.split(|&b| b == b'\n'))
}

/// The fields of one row line: `None` for NULL, else the unescaped bytes, borrowed when the
/// field has no escape (most fields).
pub fn fields(line: &[u8]) -> impl Iterator<Item = Option<std::borrow::Cow<'_, [u8]>>> {
    line.split(|&b| b == b'\t').map(|field| {
        if field == b"\\N" {
            None
        } else if field.contains(&b'\\') {
            unescape(field).map(|text| std::borrow::Cow::Owned(text.into_bytes()))
        } else {
            Some(std::borrow::Cow::Borrowed(field))
        }
    })
}

/// Copying rows between batches of the same columns.
impl BatchWriter {
    /// Appends a finished row line (already in COPY text form, e.g. from [`lines`]): a
    /// `filter` keeps a row without unescaping it.
    pub fn line(&mut self, line: &[u8]) {
        debug_assert_eq!(self.fields, 0, "a line is a whole row");
        self.data.extend_from_slice(line);
        self.data.push(b'\n');
        self.rows += 1;
    }
}

fn unescape(field: &[u8]) -> Option<String> {
    if field == b"\\N" {
        return None;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&byte) = bytes.next() {
        if byte != b'\\' {
            out.push(byte);
            continue;
        }
        match bytes.next() {
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Where a chunk stands in its load, read from a passenger's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub load: String,
    /// From 1.
    pub number: u64,
    pub last: bool,
}

impl Chunk {
    /// Writes the chunk's place into the passenger's metadata.
    pub fn mark(&self, passenger: &mut Passenger) {
        let metadata = &mut passenger.metadata;
        metadata.insert(LOAD.into(), self.load.clone());
        metadata.insert(CHUNK.into(), self.number.to_string());
        metadata.insert(LAST.into(), self.last.to_string());
    }

    /// The chunk's place, from the passenger's metadata; `None` when it has none (a batch made
    /// by hand is a load of one chunk).
    pub fn of(passenger: &Passenger) -> Option<Chunk> {
        let metadata = &passenger.metadata;
        Some(Chunk {
            load: metadata.get(LOAD)?.clone(),
            number: metadata.get(CHUNK)?.parse().ok()?,
            last: metadata.get(LAST)? == "true",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        vec![
            Column::new("id", ColumnType::Integer),
            Column::new("note", ColumnType::Text),
            Column::new("blob", ColumnType::Bytes),
        ]
    }

    #[test]
    fn values_round_trip_through_the_copy_text_format() {
        let mut batch = BatchWriter::new(columns());
        batch.raw("1");
        batch.text("back\\slash\ttab\nnewline\rcr");
        batch.bytes(&[0x00, 0xff]);
        batch.end_row();
        batch.raw("2");
        batch.null();
        batch.null();
        batch.end_row();
        assert_eq!(batch.rows(), 2);
        let body = batch.finish();
        let batch = read(&body).unwrap();
        assert_eq!(batch.columns, columns());
        assert_eq!(batch.rows, 2);
        assert_eq!(
            rows(&batch.data),
            vec![
                vec![
                    Some("1".to_string()),
                    Some("back\\slash\ttab\nnewline\rcr".to_string()),
                    Some("\\x00ff".to_string())
                ],
                vec![Some("2".to_string()), None, None],
            ]
        );
    }

    #[test]
    fn lines_and_fields_read_rows_one_at_a_time() {
        let mut batch = BatchWriter::new(columns());
        batch.raw("1");
        batch.text("a\tb");
        batch.null();
        batch.end_row();
        batch.raw("2");
        batch.text("");
        batch.bytes(&[1]);
        batch.end_row();
        let read = read(&batch.finish()).unwrap();
        let rows: Vec<Vec<Option<Vec<u8>>>> = lines(&read.data)
            .map(|line| fields(line).map(|f| f.map(|f| f.into_owned())).collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![Some(b"1".to_vec()), Some(b"a\tb".to_vec()), None],
                vec![
                    Some(b"2".to_vec()),
                    Some(Vec::new()),
                    Some(b"\\x01".to_vec())
                ],
            ]
        );
        assert_eq!(lines(b"").count(), 0);
        let mut copy = BatchWriter::new(columns());
        for line in lines(&read.data) {
            copy.line(line);
        }
        assert_eq!(copy.rows(), 2);
        assert_eq!(
            &read.data[..],
            &super::read(&copy.finish()).unwrap().data[..]
        );
    }

    #[test]
    fn an_empty_text_is_a_row_of_its_own() {
        let mut batch = BatchWriter::new(vec![Column::new("note", ColumnType::Text)]);
        batch.text("");
        batch.end_row();
        batch.text("x");
        batch.end_row();
        let batch = read(&batch.finish()).unwrap();
        assert_eq!(
            rows(&batch.data),
            vec![vec![Some(String::new())], vec![Some("x".to_string())]]
        );
    }

    #[test]
    fn an_empty_batch_has_a_header_and_no_rows() {
        let body = BatchWriter::new(columns()).finish();
        let batch = read(&body).unwrap();
        assert_eq!(batch.rows, 0);
        assert!(batch.data.is_empty());
    }

    #[test]
    fn other_bodies_are_refused_with_the_reason() {
        let error = read(&Body::json(&serde_json::json!({"a": 1}))).unwrap_err();
        assert!(error.contains("not a record batch"), "{error}");
        let broken = Body {
            media_type: MEDIA_TYPE.into(),
            data: Bytes::from_static(b"{\"columns\": 3}\n1\n"),
        };
        assert!(read(&broken).unwrap_err().contains("header"));
    }

    #[test]
    #[should_panic(expected = "one field per column")]
    fn a_short_row_is_a_bug() {
        let mut batch = BatchWriter::new(columns());
        batch.raw("1");
        batch.end_row();
    }

    #[test]
    fn chunks_are_marked_in_metadata() {
        let mut passenger = Passenger::pulled("db", "x");
        assert_eq!(Chunk::of(&passenger), None);
        let chunk = Chunk {
            load: "l1".into(),
            number: 3,
            last: true,
        };
        chunk.mark(&mut passenger);
        assert_eq!(Chunk::of(&passenger), Some(chunk));
    }

    #[test]
    fn column_types_parse_and_name_postgres_types() {
        for kind in ColumnType::ALL {
            assert_eq!(kind.as_str().parse::<ColumnType>(), Ok(kind));
        }
        assert_eq!(ColumnType::Integer.postgres(), "bigint");
        assert!(
            "varchar"
                .parse::<ColumnType>()
                .unwrap_err()
                .contains("valid types are: boolean")
        );
    }

    #[test]
    fn declared_types_parse_with_their_modifiers() {
        assert_eq!(parse_type("numeric"), Ok((ColumnType::Numeric, None)));
        assert_eq!(
            parse_type("numeric(12,2)"),
            Ok((
                ColumnType::Numeric,
                Some(Modifier::Numeric {
                    precision: 12,
                    scale: 2
                })
            ))
        );
        assert_eq!(
            parse_type("numeric(5)").unwrap().1,
            Some(Modifier::Numeric {
                precision: 5,
                scale: 0
            })
        );
        assert_eq!(
            parse_type("varchar(8)"),
            Ok((ColumnType::Text, Some(Modifier::Varchar { length: 8 })))
        );
        assert_eq!(
            parse_type("char(2)"),
            Ok((ColumnType::Text, Some(Modifier::Char { length: 2 })))
        );
        assert_eq!(
            parse_type("timestamptz(3)"),
            Ok((
                ColumnType::Timestamptz,
                Some(Modifier::Seconds { precision: 3 })
            ))
        );
        let column = Column::new("amount", ColumnType::Numeric)
            .with_modifier(parse_type("numeric(12, 2)").unwrap().1);
        assert_eq!(column.postgres(), "numeric(12,2)");
        assert_eq!(
            Column::new("at", ColumnType::Timestamptz)
                .with_modifier(Some(Modifier::Seconds { precision: 3 }))
                .postgres(),
            "timestamptz(3)"
        );
    }

    #[test]
    fn bad_modifiers_are_refused_with_the_reason() {
        for (text, expected) in [
            ("numeric(2,5)", "larger than its precision"),
            ("numeric(0)", "between 1 and 1000"),
            ("varchar(0)", "between 1 and"),
            ("varchar", "needs a length"),
            ("timestamp(9)", "between 0 and 6"),
            ("varchar(x)", "whole numbers"),
            ("numeric(12,2", "closing"),
            ("integer(4)", "not a type with a modifier"),
            ("varchar(1,2)", "not a type with a modifier"),
        ] {
            let error = parse_type(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn modifiers_travel_in_the_header_only_when_declared() {
        let columns = vec![
            Column::new("id", ColumnType::Integer),
            Column::new("amount", ColumnType::Numeric).with_modifier(Some(Modifier::Numeric {
                precision: 12,
                scale: 2,
            })),
        ];
        let body = BatchWriter::new(columns.clone()).finish();
        let header = std::str::from_utf8(&body.data)
            .unwrap()
            .lines()
            .next()
            .unwrap();
        assert_eq!(
            header,
            r#"{"columns":[{"name":"id","type":"integer"},{"name":"amount","type":"numeric","modifier":{"numeric":{"precision":12,"scale":2}}}],"rows":0}"#
        );
        assert_eq!(read(&body).unwrap().columns, columns);
        // A header from before modifiers reads as it did.
        let old = Body {
            media_type: MEDIA_TYPE.into(),
            data: Bytes::from_static(
                b"{\"columns\":[{\"name\":\"id\",\"type\":\"integer\"}],\"rows\":0}\n",
            ),
        };
        assert_eq!(read(&old).unwrap().columns[0].modifier, None);
        let wrong = Body {
            media_type: MEDIA_TYPE.into(),
            data: Bytes::from_static(
                b"{\"columns\":[{\"name\":\"id\",\"type\":\"integer\",\"modifier\":{\"varchar\":{\"length\":3}}}],\"rows\":0}\n",
            ),
        };
        let error = read(&wrong).unwrap_err();
        assert!(
            error.contains("column `id`: type integer cannot"),
            "{error}"
        );
    }
}
