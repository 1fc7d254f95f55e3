//! The target table's shape in SQLite: the types a created table gets, reading an existing
//! table with `PRAGMA`s, the limits its declared types set (`VARCHAR(8)`, `DECIMAL(12,2)`), and
//! the value a field becomes. The rules are in the module documentation (`mod.rs`).

use ferry_core::records::{Column, ColumnType, Modifier};
use rusqlite::types::Value;

/// An identifier quoted for SQLite: `"name"`, inner quotes doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Names quoted and joined with `, `.
pub(super) fn quote_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(quote_ident).collect();
    quoted.join(", ")
}

/// The declared type a created table gets for a batch column. SQLite stores any value in any
/// column; the declared type gives the affinity, and the modifier is kept for readers (and for
/// ferry's own checks, see [`Limit`]).
pub(super) fn column_type(column: &Column) -> String {
    match (column.kind, column.modifier) {
        (_, Some(Modifier::Numeric { precision, scale })) => {
            format!("NUMERIC({precision},{scale})")
        }
        (_, Some(Modifier::Varchar { length })) => format!("VARCHAR({length})"),
        (_, Some(Modifier::Char { length })) => format!("CHAR({length})"),
        (ColumnType::Boolean, _) => "BOOLEAN".into(),
        (ColumnType::Integer, _) => "INTEGER".into(),
        (ColumnType::Float, _) => "REAL".into(),
        (ColumnType::Numeric, _) => "NUMERIC".into(),
        (ColumnType::Text, _) => "TEXT".into(),
        (ColumnType::Date, _) => "DATE".into(),
        (ColumnType::Time, _) => "TIME".into(),
        (ColumnType::Timestamp, _) => "TIMESTAMP".into(),
        (ColumnType::Timestamptz, _) => "TIMESTAMPTZ".into(),
        (ColumnType::Json, _) => "JSON".into(),
        (ColumnType::Bytes, _) => "BLOB".into(),
        (ColumnType::Uuid, _) => "UUID".into(),
    }
}

/// A column of an existing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TableColumn {
    pub name: String,
    /// As declared: `INTEGER`, `VARCHAR(8)`, `` (none).
    pub declared: String,
    pub not_null: bool,
    /// A default, or part of an `INTEGER PRIMARY KEY` (a rowid): it fills itself.
    pub fills_itself: bool,
}

/// An existing table: its columns in order and the columns of its unique indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub columns: Vec<TableColumn>,
    pub unique: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Why a table could not be read.
#[derive(Debug)]
pub(super) enum DescribeError {
    Database(rusqlite::Error),
    /// A view (the message says so).
    NotATable(String),
}

impl From<rusqlite::Error> for DescribeError {
    fn from(error: rusqlite::Error) -> Self {
        DescribeError::Database(error)
    }
}

/// Reads the table `name`, or `None` when there is none.
pub(super) fn describe(
    conn: &rusqlite::Connection,
    name: &str,
) -> Result<Option<Table>, DescribeError> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM sqlite_schema WHERE name = ?1 AND type IN ('table', 'view')",
            [name],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|error| match error {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            other => Err(other),
        })?;
    let Some(kind) = kind else {
        return Ok(None);
    };
    if kind != "table" {
        return Err(DescribeError::NotATable(format!(
            "{name} is a {kind}, not a table; the sqlite pusher loads into tables"
        )));
    }
    let mut statement = conn.prepare(
        "SELECT name, type, \"notnull\", dflt_value IS NOT NULL, pk FROM pragma_table_info(?1)",
    )?;
    let mut columns: Vec<TableColumn> = statement
        .query_map([name], |row| {
            Ok(TableColumn {
                name: row.get(0)?,
                declared: row.get(1)?,
                not_null: row.get(2)?,
                fills_itself: row.get::<_, bool>(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    // An `INTEGER PRIMARY KEY` alone is the rowid: it fills itself.
    let keys: Vec<(String, i64)> = statement
        .query_map([name], |row| Ok((row.get(0)?, row.get(4)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, pk)| *pk > 0)
        .collect();
    if let [(rowid, _)] = keys.as_slice()
        && let Some(column) = columns.iter_mut().find(|c| &c.name == rowid)
        && column.declared.eq_ignore_ascii_case("INTEGER")
    {
        column.fills_itself = true;
    }
    let mut unique = Vec::new();
    let mut indexes = conn.prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\"")?;
    let names: Vec<String> = indexes
        .query_map([name], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut index_columns =
        conn.prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")?;
    for index in names {
        let columns: Vec<String> = index_columns
            .query_map([&index], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        unique.push(columns);
    }
    if !keys.is_empty() {
        unique.push(keys.into_iter().map(|(name, _)| name).collect());
    }
    Ok(Some(Table { columns, unique }))
}

/// The limit a declared type sets on the values of its column, which SQLite itself does not
/// enforce: ferry does, so that a value that would not fit in the database the table was
/// designed for fails its chunk here too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Limit {
    /// `VARCHAR(n)`, `CHAR(n)`, `CHARACTER VARYING(n)`, `NVARCHAR(n)`: at most `n` characters.
    Length(usize),
    /// `DECIMAL(p,s)`, `NUMERIC(p,s)`: at most `p - s` digits before the point.
    Digits { precision: u32, scale: u32 },
}

impl Limit {
    /// The limit of a declared type, if it sets one.
    pub(super) fn of(declared: &str) -> Option<Limit> {
        let lower = declared.to_ascii_lowercase();
        let (name, rest) = lower.split_once('(')?;
        let numbers: Vec<u32> = rest
            .strip_suffix(')')?
            .split(',')
            .map(|n| n.trim().parse().ok())
            .collect::<Option<_>>()?;
        match (name.trim(), numbers.as_slice()) {
            (
                "varchar" | "char" | "character" | "character varying" | "nvarchar" | "nchar",
                &[n],
            ) => Some(Limit::Length(n as usize)),
            ("decimal" | "numeric", &[precision]) => Some(Limit::Digits {
                precision,
                scale: 0,
            }),
            ("decimal" | "numeric", &[precision, scale]) if scale <= precision => {
                Some(Limit::Digits { precision, scale })
            }
            _ => None,
        }
    }

    /// Whether `value` keeps within the limit; the error says why not.
    pub(super) fn check(self, value: &str) -> Result<(), String> {
        match self {
            Limit::Length(length) => match value.chars().count() {
                count if count > length => Err(format!(
                    "{count} characters do not fit a column of at most {length}"
                )),
                _ => Ok(()),
            },
            Limit::Digits { precision, scale } => {
                let digits = value
                    .trim_start_matches(['-', '+'])
                    .split(['.', 'e', 'E'])
                    .next()
                    .unwrap_or("")
                    .trim_start_matches('0')
                    .len();
                let allowed = (precision - scale) as usize;
                match digits > allowed {
                    true => Err(format!(
                        "{digits} digits before the point do not fit NUMERIC({precision},{scale}), \
                         which holds {allowed}"
                    )),
                    false => Ok(()),
                }
            }
        }
    }
}

/// The SQLite value of a field of a batch column of type `kind` (given in the batch's text
/// form); the error says what is wrong with it.
pub(super) fn value(kind: ColumnType, field: Option<String>) -> Result<Value, String> {
    let Some(text) = field else {
        return Ok(Value::Null);
    };
    Ok(match kind {
        ColumnType::Boolean => match text.as_str() {
            "t" => Value::Integer(1),
            "f" => Value::Integer(0),
            _ => return Err("not a boolean (`t` or `f`)".into()),
        },
        ColumnType::Integer => Value::Integer(
            text.parse()
                .map_err(|_| "not a 64-bit integer".to_string())?,
        ),
        ColumnType::Float => Value::Real(text.parse().map_err(|_| "not a number".to_string())?),
        ColumnType::Bytes => Value::Blob(hex(&text).ok_or("not `\\x` and hex digits")?),
        // `+02` → `+02:00`, the form SQLite's date functions read.
        ColumnType::Timestamptz => Value::Text(full_offset(text)),
        _ => Value::Text(text),
    })
}

/// `\x00ff` as bytes.
fn hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("\\x")?.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// A timestamp's offset with minutes: `… 12:00:00+02` → `… 12:00:00+02:00`.
fn full_offset(mut text: String) -> String {
    let bytes = text.as_bytes();
    if bytes.len() >= 3 {
        let sign = bytes[bytes.len() - 3];
        let tail = &bytes[bytes.len() - 2..];
        if matches!(sign, b'+' | b'-') && tail.iter().all(u8::is_ascii_digit) {
            text.push_str(":00");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_set_limits() {
        assert_eq!(Limit::of("VARCHAR(8)"), Some(Limit::Length(8)));
        assert_eq!(
            Limit::of("decimal(12, 2)"),
            Some(Limit::Digits {
                precision: 12,
                scale: 2
            })
        );
        assert_eq!(Limit::of("TEXT"), None);
        assert_eq!(Limit::of("NUMERIC"), None);
        assert!(Limit::Length(3).check("abc").is_ok());
        assert!(Limit::Length(3).check("abcd").is_err());
        let money = Limit::of("NUMERIC(5,2)").unwrap();
        assert!(money.check("-123.456").is_ok());
        assert!(money.check("0001.5").is_ok());
        let error = money.check("1234.5").unwrap_err();
        assert!(error.contains("4 digits"), "{error}");
    }

    #[test]
    fn fields_become_typed_values() {
        let text = |s: &str| Some(s.to_string());
        assert_eq!(value(ColumnType::Boolean, text("t")), Ok(Value::Integer(1)));
        assert_eq!(value(ColumnType::Integer, None), Ok(Value::Null));
        assert_eq!(
            value(ColumnType::Bytes, text("\\x00ff")),
            Ok(Value::Blob(vec![0, 255]))
        );
        assert_eq!(
            value(ColumnType::Timestamptz, text("2024-05-31 12:00:00+02")),
            Ok(Value::Text("2024-05-31 12:00:00+02:00".into()))
        );
        assert!(value(ColumnType::Integer, text("1.5")).is_err());
        assert!(value(ColumnType::Boolean, text("yes")).is_err());
    }
}
