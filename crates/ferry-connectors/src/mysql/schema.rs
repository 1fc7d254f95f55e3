//! The target table's shape in MySQL/MariaDB: its name, the types a created table gets, reading
//! an existing table from `information_schema`, and checking a batch against it. The rules are
//! described in the module documentation (`mod.rs`, *Schema*).

use ferry_core::StepError;
use ferry_core::records::{Column, ColumnType, Modifier};

/// The longest identifier MySQL and MariaDB keep (characters).
const MAX_IDENTIFIER: usize = 64;

/// The longest text key a created table gets: InnoDB keys hold 3072 bytes, 768 characters of
/// `utf8mb4`.
const TEXT_KEY_LENGTH: u32 = 768;

/// The target table, as named in the definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    pub database: String,
    pub table: String,
}

impl Target {
    /// Parses `database.table`, or `table` in `default` (the connection's database).
    pub(super) fn parse(text: &str, default: Option<&str>) -> Result<Target, String> {
        let (database, table) = match text.split_once('.') {
            Some((database, table)) => (database.to_string(), table),
            None => match default {
                Some(database) => (database.to_string(), text),
                None => {
                    return Err(format!(
                        "`{text}` names no database and the connection's URL has none; write \
                         `database.table`"
                    ));
                }
            },
        };
        for (what, name) in [("database", database.as_str()), ("table", table)] {
            if name.is_empty() {
                return Err(format!(
                    "the {what} name in `{text}` is empty; write `database.table` or `table`"
                ));
            }
            if name.contains(['.', '`', '/', '\\', '\0']) {
                return Err(format!(
                    "`{text}` is not `database.table` or `table`: names are taken as written and \
                     may not contain `.`, `` ` ``, `/` or `\\`"
                ));
            }
            if name.chars().count() > MAX_IDENTIFIER {
                return Err(format!(
                    "the {what} name `{name}` is longer than MySQL's {MAX_IDENTIFIER} characters"
                ));
            }
        }
        Ok(Target {
            database,
            table: table.to_string(),
        })
    }

    /// `database.table`, unquoted: for messages and bookkeeping.
    pub(super) fn name(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// `` `database`.`table` ``.
    pub(super) fn quoted(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.database),
            quote_ident(&self.table)
        )
    }

    /// A table in the same database: `` `database`.`name` ``.
    pub(super) fn sibling(&self, name: &str) -> String {
        format!("{}.{}", quote_ident(&self.database), quote_ident(name))
    }
}

/// An identifier quoted for MySQL: `` `name` ``, inner backticks doubled.
pub(super) fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Names quoted and joined with `, `.
pub(super) fn quote_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(quote_ident).collect();
    quoted.join(", ")
}

/// The MySQL column type a created table gets for a batch column; a text key gets a bounded
/// `VARCHAR` (InnoDB cannot index a `LONGTEXT` whole).
pub(super) fn column_type(column: &Column, key: bool) -> String {
    match (column.kind, column.modifier) {
        (_, Some(Modifier::Numeric { precision, scale })) => {
            format!("DECIMAL({precision},{scale})")
        }
        (_, Some(Modifier::Varchar { length })) => format!("VARCHAR({length})"),
        (_, Some(Modifier::Char { length })) => format!("CHAR({length})"),
        (ColumnType::Time, Some(Modifier::Seconds { precision })) => format!("TIME({precision})"),
        (_, Some(Modifier::Seconds { precision })) => format!("DATETIME({precision})"),
        (ColumnType::Boolean, None) => "BOOLEAN".into(),
        (ColumnType::Integer, None) => "BIGINT".into(),
        (ColumnType::Float, None) => "DOUBLE".into(),
        // The widest exact decimal MySQL has; PostgreSQL's unconstrained `numeric` has none.
        (ColumnType::Numeric, None) => "DECIMAL(65,30)".into(),
        (ColumnType::Text, None) if key => format!("VARCHAR({TEXT_KEY_LENGTH})"),
        (ColumnType::Text, None) => "LONGTEXT".into(),
        (ColumnType::Date, None) => "DATE".into(),
        (ColumnType::Time, None) => "TIME(6)".into(),
        // Instants are kept in UTC (the session's time zone): `TIMESTAMP` ends in 2038.
        (ColumnType::Timestamp | ColumnType::Timestamptz, None) => "DATETIME(6)".into(),
        (ColumnType::Json, None) => "JSON".into(),
        (ColumnType::Bytes, None) if key => "VARBINARY(3072)".into(),
        (ColumnType::Bytes, None) => "LONGBLOB".into(),
        (ColumnType::Uuid, None) => "CHAR(36)".into(),
    }
}

/// How a value of the batch's text form becomes the column's value in `LOAD DATA … SET`, when
/// MySQL does not read PostgreSQL's text form as it is; `var` is the user variable holding the
/// field (NULL for `\N`). `None`: the field goes into the column directly.
pub(super) fn load_expression(kind: ColumnType, var: &str) -> Option<String> {
    match kind {
        // `t`/`f`; anything else goes in as it is, and the column refuses it with a warning.
        ColumnType::Boolean => Some(format!(
            "CASE {var} WHEN 't' THEN 1 WHEN 'f' THEN 0 ELSE {var} END"
        )),
        // `2024-05-31 12:00:00.5+02` or `+05:30`: converted to UTC. A value without an offset
        // goes in as it is, so that the column refuses it rather than a NULL slipping in.
        ColumnType::Timestamptz => Some(format!(
            "COALESCE(CONVERT_TZ(LEFT({var}, LENGTH({var}) - LENGTH(REGEXP_SUBSTR({var}, \
             '[+-][0-9]{{2}}(:[0-9]{{2}})?$'))), RPAD(REGEXP_SUBSTR({var}, \
             '[+-][0-9]{{2}}(:[0-9]{{2}})?$'), 6, ':00'), '+00:00'), {var})"
        )),
        // `\x00ff` (the COPY escape of the backslash is undone by LOAD DATA). Not in a `CASE`
        // with the text: its result would be text, and the bytes are not UTF-8.
        ColumnType::Bytes => Some(format!("UNHEX(SUBSTRING({var}, 3))")),
        _ => None,
    }
}

/// A column of an existing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TableColumn {
    pub name: String,
    /// `DATA_TYPE`: `bigint`, `decimal`, `varchar`.
    pub data_type: String,
    /// `COLUMN_TYPE`: `bigint(20)`, `decimal(12,2)`, `varchar(8)`.
    pub column_type: String,
    pub not_null: bool,
    /// A default, `AUTO_INCREMENT` or a generated column: it fills itself when not loaded.
    pub fills_itself: bool,
}

/// An existing table: its engine, columns in order and unique indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Table {
    pub columns: Vec<TableColumn>,
    /// The columns of each unique index (the primary key too).
    pub unique: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn column(&self, name: &str) -> Option<&TableColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Whether a table column of `data_type` (MySQL's `DATA_TYPE`) holds values of a batch column
/// of type `kind`. A type with a modifier (`decimal(12,2)`, `varchar(8)`, `datetime(3)`) is
/// the same type: the load goes ahead and a value that does not fit fails its chunk.
pub(super) fn fits(kind: ColumnType, data_type: &str) -> bool {
    const TEXT: [&str; 6] = [
        "varchar",
        "char",
        "text",
        "tinytext",
        "mediumtext",
        "longtext",
    ];
    if TEXT.contains(&data_type) {
        return true;
    }
    let wider: &[&str] = match kind {
        ColumnType::Boolean => &["tinyint", "smallint", "mediumint", "int", "bigint", "bit"],
        ColumnType::Integer => &["bigint", "decimal"],
        ColumnType::Float => &["double", "decimal"],
        ColumnType::Numeric => &["decimal"],
        ColumnType::Text => &[],
        ColumnType::Date => &["date", "datetime", "timestamp"],
        ColumnType::Time => &["time"],
        ColumnType::Timestamp | ColumnType::Timestamptz => &["datetime", "timestamp"],
        ColumnType::Json => &["json"],
        ColumnType::Bytes => &[
            "blob",
            "tinyblob",
            "mediumblob",
            "longblob",
            "varbinary",
            "binary",
        ],
        ColumnType::Uuid => &["uuid"],
    };
    wider.contains(&data_type)
}

/// Checks `batch` against an existing `table`: returns the batch columns the table lacks (to
/// add); a column of another type, or a `NOT NULL` column without a default that the batch
/// lacks, is held, naming the table, the column and both types.
pub(super) fn check<'a>(
    table: &Table,
    batch: &'a [Column],
    target: &str,
) -> Result<Vec<&'a Column>, StepError> {
    let mut add = Vec::new();
    for column in batch {
        let Some(existing) = table.column(&column.name) else {
            add.push(column);
            continue;
        };
        if fits(column.kind, &existing.data_type) {
            continue;
        }
        return Err(StepError::held(format!(
            "table {target}: column `{name}` is `{table_type}` in the table but `{kind}` in the \
             batch, and `{table_type}` cannot hold every `{kind}` value; ferry does not change \
             column types on its own: change the column (e.g. `ALTER TABLE {target} MODIFY \
             {quoted} {mysql}`) or its type in the puller",
            name = column.name,
            table_type = existing.column_type,
            kind = column.kind,
            quoted = quote_ident(&column.name),
            mysql = column_type(column, false),
        )));
    }
    for existing in &table.columns {
        if existing.not_null
            && !existing.fills_itself
            && !batch.iter().any(|c| c.name == existing.name)
        {
            return Err(StepError::held(format!(
                "table {target}: column `{}` (`{}`, NOT NULL without a default) is not in the \
                 batch, so no row could be loaded; add it to the puller's columns, or give it a \
                 default",
                existing.name, existing.column_type
            )));
        }
    }
    Ok(add)
}

/// `CREATE TABLE IF NOT EXISTS` for the batch's columns, with `keys` as primary key, InnoDB
/// (the loads must roll back with their bookkeeping).
pub(super) fn create_table(quoted: &str, columns: &[Column], keys: &[String]) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            let key = keys.contains(&c.name);
            let not_null = if key { " NOT NULL" } else { "" };
            format!("{} {}{not_null}", quote_ident(&c.name), column_type(c, key))
        })
        .collect();
    if !keys.is_empty() {
        parts.push(format!(
            "PRIMARY KEY ({})",
            quote_list(keys.iter().map(String::as_str))
        ));
    }
    format!(
        "CREATE TABLE IF NOT EXISTS {quoted} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        parts.join(", ")
    )
}

/// `ALTER TABLE … ADD COLUMN …` for every column, in one statement.
pub(super) fn add_columns(quoted: &str, columns: &[&Column]) -> String {
    let adds: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "ADD COLUMN {} {}",
                quote_ident(&c.name),
                column_type(c, false)
            )
        })
        .collect();
    format!("ALTER TABLE {quoted} {}", adds.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_or_without_a_database() {
        let target = Target::parse("shop.orders", None).unwrap();
        assert_eq!(target.quoted(), "`shop`.`orders`");
        assert_eq!(
            Target::parse("orders", Some("test")).unwrap().name(),
            "test.orders"
        );
        assert!(
            Target::parse("orders", None)
                .unwrap_err()
                .contains("names no database")
        );
        assert!(
            Target::parse("a.b`c", None)
                .unwrap_err()
                .contains("may not")
        );
        assert!(Target::parse(".x", None).unwrap_err().contains("empty"));
        assert!(
            Target::parse(&format!("a.{}", "x".repeat(65)), None)
                .unwrap_err()
                .contains("64")
        );
    }

    #[test]
    fn modified_types_are_the_same_type() {
        assert!(fits(ColumnType::Numeric, "decimal"));
        assert!(fits(ColumnType::Integer, "decimal"));
        assert!(fits(ColumnType::Text, "varchar"));
        assert!(fits(ColumnType::Timestamptz, "timestamp"));
        assert!(!fits(ColumnType::Integer, "int"));
        assert!(!fits(ColumnType::Text, "bigint"));
        for kind in ColumnType::ALL {
            let created = column_type(&Column::new("c", kind), false).to_lowercase();
            let data_type = created.split('(').next().unwrap();
            let data_type = match data_type {
                "boolean" => "tinyint",
                "json" => "longtext",
                other => other,
            };
            assert!(fits(kind, data_type), "{kind}: {created}");
        }
    }

    #[test]
    fn created_tables_use_declared_modifiers_and_bounded_keys() {
        let columns = [
            Column::new("code", ColumnType::Text),
            Column::new("amount", ColumnType::Numeric).with_modifier(Some(Modifier::Numeric {
                precision: 12,
                scale: 2,
            })),
            Column::new("name", ColumnType::Text)
                .with_modifier(Some(Modifier::Varchar { length: 8 })),
        ];
        assert_eq!(
            create_table("`t`", &columns, &["code".into()]),
            "CREATE TABLE IF NOT EXISTS `t` (`code` VARCHAR(768) NOT NULL, `amount` \
             DECIMAL(12,2), `name` VARCHAR(8), PRIMARY KEY (`code`)) ENGINE=InnoDB DEFAULT \
             CHARSET=utf8mb4"
        );
    }
}
