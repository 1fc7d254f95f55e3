//! SQL files: the `before` and `after` steps and the table's versioned migrations.
//!
//! Files are read and checked when the pusher is built, so that a missing file, an unknown
//! placeholder or a misnamed migration is reported by `ferry validate`. Each file is split into
//! its statements (aware of quotes, dollar quotes, comments and `BEGIN ATOMIC … END` bodies)
//! and run one statement at a time, so that an error names the file and the line of the
//! statement that failed, even when the database reports no position.
//!
//! Placeholders are replaced anywhere in the text: `{target_schema}`, `{target_table}`,
//! `{target}`, `{key_columns}`, `{data_columns}` and `{load}`. Any other `{name}` is an error;
//! `{{name}}` stands for a literal `{name}`. Other braces (`'{1,2}'`, JSON) are left alone.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use ferry_core::config::SourceFile;

/// A value the pusher fills into SQL text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placeholder {
    /// The target's schema, quoted.
    TargetSchema,
    /// The target's table name, quoted.
    TargetTable,
    /// `schema.table`, quoted.
    Target,
    /// The key columns, quoted, comma-separated.
    KeyColumns,
    /// The batch's columns that are not keys, quoted, comma-separated.
    DataColumns,
    /// The load's id as a string literal.
    Load,
}

impl Placeholder {
    /// Every placeholder with its name.
    const ALL: [(&'static str, Placeholder); 6] = [
        ("target_schema", Placeholder::TargetSchema),
        ("target_table", Placeholder::TargetTable),
        ("target", Placeholder::Target),
        ("key_columns", Placeholder::KeyColumns),
        ("data_columns", Placeholder::DataColumns),
        ("load", Placeholder::Load),
    ];

    /// The placeholders a migration may use: those that do not depend on a load.
    pub(super) const MIGRATION: [Placeholder; 4] = [
        Placeholder::TargetSchema,
        Placeholder::TargetTable,
        Placeholder::Target,
        Placeholder::KeyColumns,
    ];

    /// Every placeholder: what `before` and `after` files may use.
    pub(super) const STEP: [Placeholder; 6] = [
        Placeholder::TargetSchema,
        Placeholder::TargetTable,
        Placeholder::Target,
        Placeholder::KeyColumns,
        Placeholder::DataColumns,
        Placeholder::Load,
    ];

    fn named(name: &str) -> Option<Placeholder> {
        Self::ALL
            .iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|&(_, placeholder)| placeholder)
    }

    fn names(allowed: &[Placeholder]) -> String {
        let names: Vec<String> = Self::ALL
            .iter()
            .filter(|(_, placeholder)| allowed.contains(placeholder))
            .map(|(name, _)| format!("{{{name}}}"))
            .collect();
        names.join(", ")
    }
}

/// The values of the placeholders for one run of a file.
#[derive(Clone, Debug, Default)]
pub(super) struct Values {
    pub target_schema: String,
    pub target_table: String,
    pub target: String,
    pub key_columns: String,
    pub data_columns: String,
    pub load: String,
}

impl Values {
    fn get(&self, placeholder: Placeholder) -> &str {
        match placeholder {
            Placeholder::TargetSchema => &self.target_schema,
            Placeholder::TargetTable => &self.target_table,
            Placeholder::Target => &self.target,
            Placeholder::KeyColumns => &self.key_columns,
            Placeholder::DataColumns => &self.data_columns,
            Placeholder::Load => &self.load,
        }
    }
}

/// A piece of a statement's text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Placeholder(Placeholder),
}

/// One statement of an SQL file, with its placeholders still open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Statement {
    /// The line of the file where the statement starts (1-based).
    pub line: u64,
    pieces: Vec<Piece>,
}

impl Statement {
    /// The statement's text with the placeholders filled in.
    pub(super) fn render(&self, values: &Values) -> String {
        let mut text = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(part) => text.push_str(part),
                Piece::Placeholder(placeholder) => text.push_str(values.get(*placeholder)),
            }
        }
        text
    }

    /// The file line of character `position` (1-based, as PostgreSQL reports it) of the
    /// rendered `text`. Placeholder values hold no line breaks, so lines are the file's.
    pub(super) fn line_of(&self, text: &str, position: usize) -> u64 {
        let before = text.chars().take(position.saturating_sub(1));
        self.line + before.filter(|&c| c == '\n').count() as u64
    }
}

/// An SQL file read at build time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Script {
    /// The path as written in the definition (or the migration's file name).
    pub name: String,
    pub statements: Vec<Statement>,
    /// SHA-256 of the file's content, hex.
    pub hash: String,
}

impl Script {
    /// Parses `text`, refusing placeholders outside `allowed`. The error starts with
    /// `name:line:`.
    pub(super) fn parse(name: &str, text: &str, allowed: &[Placeholder]) -> Result<Script, String> {
        let mut statements = Vec::new();
        for raw in split(text).map_err(|(line, message)| format!("{name}:{line}: {message}"))? {
            let pieces = pieces(&raw.text, allowed).map_err(|(offset, message)| {
                let line = raw.line + raw.text[..offset].matches('\n').count() as u64;
                format!("{name}:{line}: {message}")
            })?;
            statements.push(Statement {
                line: raw.line,
                pieces,
            });
        }
        let hash = SourceFile {
            path: name.to_string(),
            content: text.to_string(),
        }
        .hash();
        Ok(Script {
            name: name.to_string(),
            statements,
            hash,
        })
    }
}

/// A versioned migration of the target table: `NNN_name.sql`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Migration {
    pub number: u64,
    pub script: Script,
}

/// Reads the migrations in `dir`, in numeric order; none when the directory does not exist.
/// Every file (except hidden ones) must be named `NNN_name.sql`, and no two may share a number.
pub(super) fn read_migrations(dir: &Path) -> Result<Vec<Migration>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(format!("cannot list {}: {error}", dir.display())),
    };
    let mut migrations: Vec<Migration> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| format!("cannot list {}: {error}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let number = migration_number(&name).ok_or_else(|| {
            format!(
                "{}: `{name}` is not a migration name; name them `NNN_what.sql` (digits, `_`, \
                 a name, `.sql`), e.g. `001_create.sql`",
                dir.display()
            )
        })?;
        let path = entry.path();
        if !path.is_file() {
            return Err(format!("{}: `{name}` is not a file", dir.display()));
        }
        if let Some(twin) = migrations.iter().find(|m| m.number == number) {
            return Err(format!(
                "{}: `{}` and `{name}` have the same number {number}",
                dir.display(),
                twin.script.name
            ));
        }
        let text = fs::read_to_string(&path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let script = Script::parse(&name, &text, &Placeholder::MIGRATION)?;
        migrations.push(Migration { number, script });
    }
    migrations.sort_by_key(|m| m.number);
    Ok(migrations)
}

/// The number of a migration file named `NNN_name.sql`.
fn migration_number(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sql")?;
    let (digits, rest) = stem.split_once('_')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || rest.is_empty() {
        return None;
    }
    digits.parse().ok()
}

/// A statement's text as found in the file.
#[derive(Debug, PartialEq, Eq)]
struct RawStatement {
    line: u64,
    text: String,
}

/// Where the splitter is inside the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Code,
    /// `'…'`; `backslash` for `E'…'` strings, where `\'` does not end it.
    Quote {
        backslash: bool,
    },
    Identifier,
    LineComment,
    /// Block comments nest.
    BlockComment(u32),
}

/// Splits SQL text into statements at `;`, skipping empty ones and those that are only
/// comments. Refuses transaction control: each file runs inside the pusher's transaction.
fn split(text: &str) -> Result<Vec<RawStatement>, (u64, String)> {
    let bytes = text.as_bytes();
    let mut statements = Vec::new();
    let mut state = State::Code;
    let mut line = 1u64;
    // The statement being read: the line and offset of its first code (comments before it are
    // left out, so that positions count from the line given), and its words.
    let mut first: Option<(u64, usize)> = None;
    let mut words: Vec<String> = Vec::new();
    // Depth of `BEGIN ATOMIC … END` bodies (SQL-standard function bodies hold `;`).
    let mut atomic = 0u32;
    let mut i = 0usize;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte == b'\n' {
            line += 1;
        }
        match state {
            State::LineComment => {
                if byte == b'\n' {
                    state = State::Code;
                }
                i += 1;
            }
            State::BlockComment(depth) => {
                if bytes[i..].starts_with(b"*/") {
                    state = match depth {
                        1 => State::Code,
                        _ => State::BlockComment(depth - 1),
                    };
                    i += 2;
                } else if bytes[i..].starts_with(b"/*") {
                    state = State::BlockComment(depth + 1);
                    i += 2;
                } else {
                    i += 1;
                }
            }
            State::Quote { backslash } => {
                if backslash && byte == b'\\' {
                    // The escaped byte never ends the string (count its line break, if any).
                    if bytes.get(i + 1) == Some(&b'\n') {
                        line += 1;
                    }
                    i += 2;
                } else if byte == b'\'' && bytes.get(i + 1) == Some(&b'\'') {
                    i += 2;
                } else {
                    if byte == b'\'' {
                        state = State::Code;
                    }
                    i += 1;
                }
            }
            State::Identifier => {
                if byte == b'"' && bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                } else {
                    if byte == b'"' {
                        state = State::Code;
                    }
                    i += 1;
                }
            }
            State::Code => {
                if byte.is_ascii_whitespace() {
                    i += 1;
                    continue;
                }
                if bytes[i..].starts_with(b"--") {
                    state = State::LineComment;
                    i += 2;
                    continue;
                }
                if bytes[i..].starts_with(b"/*") {
                    state = State::BlockComment(1);
                    i += 2;
                    continue;
                }
                if byte == b';' && atomic == 0 {
                    if let Some((first_line, start)) = first.take() {
                        check_statement(&words, first_line)?;
                        statements.push(RawStatement {
                            line: first_line,
                            text: text[start..i].to_string(),
                        });
                    }
                    words.clear();
                    i += 1;
                    continue;
                }
                first.get_or_insert((line, i));
                if byte == b'\'' {
                    let escape = i > 0
                        && matches!(bytes[i - 1], b'e' | b'E')
                        && (i < 2 || !is_word_byte(bytes[i - 2]));
                    state = State::Quote { backslash: escape };
                    i += 1;
                } else if byte == b'"' {
                    state = State::Identifier;
                    i += 1;
                } else if byte == b'$' {
                    i = skip_dollar_quote(bytes, i, &mut line);
                } else if is_word_start(byte) {
                    let end = i + bytes[i..].iter().take_while(|&&b| is_word_byte(b)).count();
                    let word = text[i..end].to_ascii_uppercase();
                    match word.as_str() {
                        "ATOMIC" if words.last().is_some_and(|w| w == "BEGIN") => atomic += 1,
                        "CASE" if atomic > 0 => atomic += 1,
                        "END" if atomic > 0 => atomic -= 1,
                        _ => {}
                    }
                    words.push(word);
                    i = end;
                } else {
                    i += 1;
                }
            }
        }
    }
    match state {
        State::Quote { .. } => return Err((line, "a string literal is not closed".into())),
        State::Identifier => return Err((line, "a quoted identifier is not closed".into())),
        State::BlockComment(_) => return Err((line, "a block comment is not closed".into())),
        State::Code | State::LineComment => {}
    }
    if let Some((first_line, start)) = first {
        check_statement(&words, first_line)?;
        statements.push(RawStatement {
            line: first_line,
            text: text[start..].trim_end().to_string(),
        });
    }
    Ok(statements)
}

/// Skips a dollar-quoted string starting at `i` (or just the `$` of a parameter such as `$1`),
/// returning the offset after it.
fn skip_dollar_quote(bytes: &[u8], i: usize, line: &mut u64) -> usize {
    // `a$b` is an identifier character, not a quote.
    if i > 0 && is_word_byte(bytes[i - 1]) {
        return i + 1;
    }
    let tag_len = bytes[i + 1..]
        .iter()
        .take_while(|&&b| is_word_byte(b) && b != b'$')
        .count();
    let tag_end = i + 1 + tag_len;
    let tag_ok =
        bytes.get(tag_end) == Some(&b'$') && (tag_len == 0 || !bytes[i + 1].is_ascii_digit());
    if !tag_ok {
        return i + 1;
    }
    let tag = &bytes[i..=tag_end];
    let body = tag_end + 1;
    let close = bytes[body..]
        .windows(tag.len())
        .position(|window| window == tag)
        .map_or(bytes.len(), |at| body + at + tag.len());
    *line += bytes[body..close].iter().filter(|&&b| b == b'\n').count() as u64;
    close
}

fn is_word_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_' || byte >= 0x80
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'$' || byte >= 0x80
}

/// Refuses statements that would end or nest the pusher's transaction.
fn check_statement(words: &[String], line: u64) -> Result<(), (u64, String)> {
    let first = words.first().map(String::as_str).unwrap_or("");
    let second = words.get(1).map(String::as_str).unwrap_or("");
    let control = match first {
        "BEGIN" | "START" | "COMMIT" | "END" | "ABORT" => true,
        "ROLLBACK" => second != "TO",
        _ => false,
    };
    match control {
        true => Err((
            line,
            format!(
                "`{first}`: SQL files run inside the load's transaction, so they may not \
                 start, commit or roll back transactions"
            ),
        )),
        false => Ok(()),
    }
}

/// Splits a statement's text into text and placeholders; an error has the byte offset.
fn pieces(text: &str, allowed: &[Placeholder]) -> Result<Vec<Piece>, (usize, String)> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    let mut offset = 0usize;
    while let Some(open) = rest.find('{') {
        literal.push_str(&rest[..open]);
        let after = &rest[open..];
        // `{{name}}`: a literal `{name}`.
        if let Some(name) = braced(after.strip_prefix('{').unwrap_or(""))
            && after[1 + name.len() + 2..].starts_with('}')
        {
            let _ = write!(literal, "{{{name}}}");
            let used = open + name.len() + 4;
            rest = &rest[used..];
            offset += used;
            continue;
        }
        let Some(name) = braced(after) else {
            literal.push('{');
            rest = &rest[open + 1..];
            offset += open + 1;
            continue;
        };
        let at = offset + open;
        let placeholder = Placeholder::named(name).ok_or_else(|| {
            (
                at,
                format!(
                    "unknown placeholder `{{{name}}}`; valid placeholders are: {} (write \
                     `{{{{{name}}}}}` for a literal `{{{name}}}`)",
                    Placeholder::names(allowed)
                ),
            )
        })?;
        if !allowed.contains(&placeholder) {
            return Err((
                at,
                format!(
                    "placeholder `{{{name}}}` has no value here (migrations run outside loads); \
                     valid placeholders are: {}",
                    Placeholder::names(allowed)
                ),
            ));
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Placeholder(placeholder));
        let used = open + name.len() + 2;
        rest = &rest[used..];
        offset += used;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// The name in `{name}` at the start of `text`, when `text` starts with one.
fn braced(text: &str) -> Option<&str> {
    let inner = text.strip_prefix('{')?;
    let len = inner
        .bytes()
        .take_while(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        .count();
    let name = &inner[..len];
    let starts_well = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
    match starts_well && inner[len..].starts_with('}') {
        true => Some(name),
        false => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<(u64, String)> {
        split(sql)
            .unwrap()
            .into_iter()
            .map(|s| (s.line, s.text))
            .collect()
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes_and_comments() {
        let sql = "-- a comment; still\nSELECT ';', \"a;b\", E'\\';' ;\n\n/* x; /* nested; */ ; */\
                   INSERT INTO t VALUES ($$;$$, $tag$ ; $ $tag$);\n  -- only a comment;\n";
        assert_eq!(
            texts(sql),
            [
                (2, "SELECT ';', \"a;b\", E'\\';' ".to_string()),
                (
                    4,
                    "INSERT INTO t VALUES ($$;$$, $tag$ ; $ $tag$)".to_string()
                ),
            ]
        );
        let function = "CREATE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT \
                        CASE WHEN true THEN 1 END;\n  SELECT 2;\nEND;\nSELECT f()";
        let split = texts(function);
        assert_eq!(split.len(), 2, "{split:?}");
        assert_eq!(split[1], (6, "SELECT f()".to_string()));
    }

    #[test]
    fn transaction_control_is_refused() {
        for sql in [
            "BEGIN;",
            "commit",
            "SELECT 1;\nROLLBACK;",
            "start transaction;",
        ] {
            assert!(split(sql).is_err(), "{sql}");
        }
        assert!(split("ROLLBACK TO SAVEPOINT a; SAVEPOINT b;").is_ok());
        let (line, message) = split("SELECT 1;\n\nCOMMIT;").unwrap_err();
        assert_eq!(line, 3);
        assert!(
            message.contains("inside the load's transaction"),
            "{message}"
        );
    }

    #[test]
    fn placeholders_are_filled_and_unknown_ones_refused() {
        let script = Script::parse(
            "a.sql",
            "SELECT {key_columns}, '{1,2}', '{{load}}'\nFROM {target} WHERE x = {load}",
            &Placeholder::STEP,
        )
        .unwrap();
        let values = Values {
            target: "\"s\".\"t\"".into(),
            key_columns: "\"id\"".into(),
            load: "'l1'".into(),
            ..Values::default()
        };
        assert_eq!(
            script.statements[0].render(&values),
            "SELECT \"id\", '{1,2}', '{load}'\nFROM \"s\".\"t\" WHERE x = 'l1'"
        );
        let error =
            Script::parse("b.sql", "SELECT 1;\nSELECT\n {nope}", &Placeholder::STEP).unwrap_err();
        assert!(
            error.starts_with("b.sql:3: unknown placeholder `{nope}`"),
            "{error}"
        );
        let error =
            Script::parse("001_a.sql", "SELECT {load}", &Placeholder::MIGRATION).unwrap_err();
        assert!(error.contains("`{load}` has no value here"), "{error}");
    }

    #[test]
    fn migration_names_carry_a_number() {
        assert_eq!(migration_number("001_create.sql"), Some(1));
        assert_eq!(migration_number("12_x_y.sql"), Some(12));
        for bad in [
            "create.sql",
            "001.sql",
            "001_.sql",
            "001_a.txt",
            "a1_b.sql",
            "_a.sql",
        ] {
            assert_eq!(migration_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn error_lines_follow_the_statement() {
        let script = Script::parse("c.sql", "\n\nSELECT 1,\n  nope", &Placeholder::STEP).unwrap();
        let statement = &script.statements[0];
        assert_eq!(statement.line, 3);
        let text = statement.render(&Values::default());
        let position = text.find("nope").unwrap() + 1;
        assert_eq!(statement.line_of(&text, position), 4);
    }
}
