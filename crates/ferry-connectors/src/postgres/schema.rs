//! The target table's shape: reading it from the catalog, checking a batch against it, and the
//! DDL that creates or extends tables. The rules are described in the module documentation
//! (`mod.rs`, *Schema changes*).

use ferry_core::StepError;
use ferry_core::records::{Column, ColumnType};
use tokio_postgres::{Client, Statement};

use super::{quote_ident, quote_list};

/// Reads a relation's kind and columns by its quoted name; no rows when it does not exist.
pub(super) const DESCRIBE: &str = "\
    SELECT c.relkind::text, a.attname::text, format_type(a.atttypid, a.atttypmod), \
           a.attnotnull, (a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '') \
    FROM pg_class c \
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
    WHERE c.oid = to_regclass($1) \
    ORDER BY a.attnum";

/// The columns `history` adds to the data columns, with their types as `format_type` names
/// them and as they are created.
pub(super) const HISTORY_COLUMNS: [(&str, &str); 5] = [
    ("valid_from", "timestamp with time zone"),
    ("valid_to", "timestamp with time zone"),
    ("is_current", "boolean"),
    ("key_hash", "text"),
    ("data_hash", "text"),
];

/// A column of an existing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TableColumn {
    pub name: String,
    /// As `format_type` spells it: `bigint`, `character varying(20)`, `timestamp with time
    /// zone`.
    pub type_name: String,
    pub not_null: bool,
    /// A default, an identity or a generated column: it fills itself when not loaded.
    pub fills_itself: bool,
}

/// An existing table's columns, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub columns: Vec<TableColumn>,
}

impl Table {
    pub(super) fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The table `quoted` names, or `None` when there is none. `what` names it in errors.
pub(super) async fn describe(
    client: &Client,
    statement: &Statement,
    quoted: &str,
    what: &str,
) -> Result<Option<Table>, DescribeError> {
    let rows = client
        .query(statement, &[&quoted])
        .await
        .map_err(DescribeError::Database)?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let kind: String = first.get(0);
    if kind != "r" && kind != "p" {
        let noun = match kind.as_str() {
            "v" => "a view",
            "m" => "a materialized view",
            "f" => "a foreign table",
            "S" => "a sequence",
            "i" | "I" => "an index",
            _ => "not a table",
        };
        return Err(DescribeError::NotATable(StepError::permanent(format!(
            "{what} is {noun}, not a table; the postgres pusher loads into tables"
        ))));
    }
    let mut table = Table::default();
    for row in &rows {
        let Some(name) = row.get::<_, Option<String>>(1) else {
            continue;
        };
        table.columns.push(TableColumn {
            name,
            type_name: row.get(2),
            not_null: row.get(3),
            fills_itself: row.get(4),
        });
    }
    Ok(Some(table))
}

/// Why a table could not be described.
pub(super) enum DescribeError {
    Database(tokio_postgres::Error),
    NotATable(StepError),
}

/// Whether a table column of type `table_type` takes the values of a batch column of type
/// `kind`: its type is the batch type's own PostgreSQL type or wider without loss, with or
/// without a modifier (`numeric(12,2)`, `varchar(8)`, `char(2)`, `timestamp(3)`). A modifier
/// limits values rather than changing the type: the load goes ahead, and a value that does not
/// fit fails its chunk, naming row, column and value (see `load.rs`).
pub(super) fn fits(kind: ColumnType, table_type: &str) -> bool {
    let base = without_modifier(table_type);
    let table_type = base.as_str();
    if matches!(table_type, "text" | "character varying" | "character") {
        return true;
    }
    let wider: &[&str] = match kind {
        ColumnType::Boolean => &["boolean"],
        ColumnType::Integer => &["bigint", "numeric"],
        ColumnType::Float => &["double precision", "numeric"],
        ColumnType::Numeric => &["numeric"],
        ColumnType::Text => &[],
        ColumnType::Date => &[
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
        ],
        ColumnType::Time => &["time without time zone"],
        ColumnType::Timestamp => &["timestamp without time zone", "timestamp with time zone"],
        ColumnType::Timestamptz => &["timestamp with time zone"],
        ColumnType::Json => &["jsonb", "json"],
        ColumnType::Bytes => &["bytea"],
        ColumnType::Uuid => &["uuid"],
    };
    wider.contains(&table_type)
}

/// A type as `format_type` spells it, without its modifier: `numeric(12,2)` → `numeric`,
/// `timestamp(3) with time zone` → `timestamp with time zone`.
fn without_modifier(table_type: &str) -> String {
    match (table_type.find('('), table_type.find(')')) {
        (Some(open), Some(close)) if open < close => {
            format!("{}{}", &table_type[..open], &table_type[close + 1..])
        }
        _ => table_type.to_string(),
    }
}

/// What a table needs before a batch can go into it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Batch columns the table lacks, to add.
    pub add: Vec<Column>,
}

/// How columns of the table that the batch lacks are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Missing {
    /// The batch is the table's whole new content (`replace`): a missing column would be left
    /// empty, so it is held, unless it fills itself (a default, an identity, generated).
    Refused,
    /// Rows are added (`append`, `merge`, `history`): a missing column is fine when it fills
    /// itself or may be NULL.
    Nullable,
}

/// Where a person fixes the table, for the messages of held loads.
#[derive(Clone, Debug)]
pub(super) struct Advice {
    /// `schema.table`.
    pub target: String,
    /// The migrations directory, e.g. `clients/acme/sql/staging.customers/`.
    pub migrations: String,
}

/// Checks `batch` against an existing `table`; columns named in `ignore` (history's own) are
/// left out. A column that would lose data is refused as held, with the migration to write.
pub(super) fn check(
    table: &Table,
    batch: &[Column],
    missing: Missing,
    ignore: &[&str],
    advice: &Advice,
) -> Result<Changes, StepError> {
    let Advice { target, migrations } = advice;
    let mut changes = Changes::default();
    for column in batch {
        let Some(existing) = table.column(&column.name) else {
            changes.add.push(column.clone());
            continue;
        };
        if fits(column.kind, &existing.type_name) {
            continue;
        }
        return Err(StepError::held(format!(
            "table {target}: column `{name}` is `{table_type}` in the table but `{kind}` \
             (`{pg}`) in the batch, and `{table_type}` cannot hold every `{kind}` value; ferry \
             does not change column types on its own: add a migration in {migrations} (e.g. \
             `NNN_widen_{name}.sql` with `ALTER TABLE {{target}} ALTER COLUMN {quoted} TYPE \
             {pg};`) or change the column's type in the puller",
            name = column.name,
            table_type = existing.type_name,
            kind = column.kind,
            pg = column.kind.postgres(),
            quoted = quote_ident(&column.name),
        )));
    }
    for existing in &table.columns {
        if ignore.contains(&existing.name.as_str()) || batch.iter().any(|c| c.name == existing.name)
        {
            continue;
        }
        let name = &existing.name;
        let table_type = &existing.type_name;
        match missing {
            Missing::Refused if !existing.fills_itself => {
                return Err(StepError::held(format!(
                    "table {target}: column `{name}` (`{table_type}`) is not in the batch, and \
                     replacing the table's content would leave it empty; if it should go, drop \
                     it with a migration in {migrations} (e.g. `NNN_drop_{name}.sql` with \
                     `ALTER TABLE {{target}} DROP COLUMN {quoted};`), otherwise add it to the \
                     puller's columns or give it a default",
                    quoted = quote_ident(name),
                )));
            }
            Missing::Nullable if existing.not_null && !existing.fills_itself => {
                return Err(StepError::held(format!(
                    "table {target}: column `{name}` (`{table_type}`, NOT NULL without a \
                     default) is not in the batch, so no row could be loaded; add it to the \
                     puller's columns, or give it a default or drop NOT NULL with a migration \
                     in {migrations}",
                )));
            }
            Missing::Refused | Missing::Nullable => {}
        }
    }
    Ok(changes)
}

/// `CREATE TABLE` for `columns` (name and PostgreSQL type) with an optional primary key.
pub(super) fn create_table(quoted: &str, columns: &[(String, String)], key: &[String]) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|(name, type_name)| format!("{} {type_name}", quote_ident(name)))
        .collect();
    if !key.is_empty() {
        parts.push(format!(
            "PRIMARY KEY ({})",
            quote_list(key.iter().map(String::as_str))
        ));
    }
    format!("CREATE TABLE {quoted} ({})", parts.join(", "))
}

/// `ALTER TABLE … ADD COLUMN …` for every column, in one statement; `None` for no columns.
pub(super) fn add_columns(quoted: &str, columns: &[Column]) -> Option<String> {
    if columns.is_empty() {
        return None;
    }
    let adds: Vec<String> = columns
        .iter()
        .map(|c| format!("ADD COLUMN {} {}", quote_ident(&c.name), c.postgres()))
        .collect();
    Some(format!("ALTER TABLE {quoted} {}", adds.join(", ")))
}

/// Each batch column with the type it has in `table` (or its own type when the table lacks
/// it): the columns of a staging table whose rows go into `table`.
pub(super) fn staging_columns(table: Option<&Table>, batch: &[Column]) -> Vec<(String, String)> {
    batch
        .iter()
        .map(|column| {
            let type_name = table
                .and_then(|t| t.column(&column.name))
                .map_or_else(|| column.postgres(), |c| c.type_name.clone());
            (column.name.clone(), type_name)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_name: &str, not_null: bool) -> TableColumn {
        TableColumn {
            name: name.into(),
            type_name: type_name.into(),
            not_null,
            fills_itself: false,
        }
    }

    fn advice() -> Advice {
        Advice {
            target: "s.t".into(),
            migrations: "clients/acme/sql/s.t/".into(),
        }
    }

    #[test]
    fn wider_table_types_fit_and_narrower_ones_do_not() {
        assert!(fits(ColumnType::Integer, "bigint"));
        assert!(fits(ColumnType::Integer, "numeric"));
        assert!(fits(ColumnType::Integer, "text"));
        assert!(!fits(ColumnType::Integer, "integer"));
        assert!(!fits(ColumnType::Numeric, "bigint"));
        assert!(!fits(ColumnType::Text, "integer"));
        // The same type with a modifier: values are checked as they load.
        assert!(fits(ColumnType::Text, "character varying(20)"));
        assert!(fits(ColumnType::Text, "character(2)"));
        assert!(fits(ColumnType::Numeric, "numeric(12,2)"));
        assert!(fits(ColumnType::Integer, "numeric(12,2)"));
        assert!(fits(
            ColumnType::Timestamp,
            "timestamp(3) without time zone"
        ));
        assert!(fits(ColumnType::Timestamptz, "timestamp(3) with time zone"));
        assert!(!fits(ColumnType::Numeric, "numeric(12,2)[]"));
        assert!(!fits(ColumnType::Integer, "character varying(20)[]"));
        assert!(!fits(
            ColumnType::Timestamptz,
            "timestamp without time zone"
        ));
        assert!(fits(ColumnType::Timestamp, "timestamp with time zone"));
        for kind in ColumnType::ALL {
            let own = match kind.postgres() {
                "timestamp" => "timestamp without time zone",
                "timestamptz" => "timestamp with time zone",
                "time" => "time without time zone",
                other => other,
            };
            assert!(fits(kind, own), "{kind}");
        }
    }

    #[test]
    fn missing_columns_follow_the_mode() {
        let table = Table {
            columns: vec![column("id", "bigint", true), column("note", "text", false)],
        };
        let batch = [
            Column::new("id", ColumnType::Integer),
            Column::new("extra", ColumnType::Text),
        ];
        let changes = check(&table, &batch, Missing::Nullable, &[], &advice()).unwrap();
        assert_eq!(changes.add, [Column::new("extra", ColumnType::Text)]);
        let error = check(&table, &batch, Missing::Refused, &[], &advice()).unwrap_err();
        assert!(error.held, "{error:?}");
        assert!(error.message.contains("column `note` (`text`)"), "{error}");
        let strict = Table {
            columns: vec![column("id", "bigint", true), column("note", "text", true)],
        };
        let error = check(&strict, &batch, Missing::Nullable, &[], &advice()).unwrap_err();
        assert!(
            error.message.contains("NOT NULL without a default"),
            "{error}"
        );
    }
}
