//! The `table` puller's configuration, as written in a pipeline definition.

use serde::Deserialize;

use crate::columns::ColumnConfig;
// What the `table` puller does with a file whose chunks are all seated: the `file` puller's
// type, of which the `table` puller takes every form, `keep` included.
pub use crate::file::AfterSeat;

/// Configuration of the `table` puller.
///
/// ```yaml
/// pullers:
///   - type: table
///     path: inbox/customers
///     pattern: "*.csv"
///     after_seat: { move_to: archive/customers }
///     csv: { delimiter: ";" }
///     columns:
///       - { name: customer_id, from: "Customer No", type: integer }
///       - { name: amount, type: numeric, decimal: "," }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablePullerConfig {
    /// Directory to read files from, relative to the project directory unless absolute. Only
    /// the directory itself is read, not its subdirectories. Required.
    pub path: String,
    /// Glob matched against each file's name (not its path), e.g. `*.csv`. Default `*`. Hidden
    /// files (name starting with `.`) are never read.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// The files' format: `csv`, `json` (an array of records), `ndjson` (one record per line)
    /// or `xlsx` (a spreadsheet: `.xlsx`, `.xlsm`, `.xlsb`, `.xls` or `.ods`). Default: from
    /// each file's extension (`.csv`, `.tsv`, `.json`, `.ndjson`, `.jsonl`, and the
    /// spreadsheet ones); a file with another extension fails.
    #[serde(default)]
    pub format: Option<TableFormat>,
    /// What happens to a file once all its chunks are seated in the queue: `delete`,
    /// `{ move_to: DIR }` to move it into an archive directory, or `keep` to leave it where it
    /// is (it is then loaded again only when its modification time changes; the puller
    /// remembers loaded files in memory, and after a restart the queue's de-duplication drops
    /// the chunks of an unchanged file pulled again). Required, so that nobody loses files by
    /// surprise.
    #[serde(default)]
    pub after_seat: Option<AfterSeat>,
    /// Rows per chunk (one passenger per chunk). Default 10000.
    #[serde(default)]
    pub chunk_rows: Option<usize>,
    /// Files modified less than this long ago are left for a later pull, because they may still
    /// be being written, e.g. `500ms`, `5s`. Default `1s`; `0s` reads every file at once.
    #[serde(default = "default_settle")]
    pub settle: String,
    /// Options of CSV files.
    #[serde(default)]
    pub csv: CsvConfig,
    /// Options of JSON files.
    #[serde(default)]
    pub json: JsonConfig,
    /// The sheet of a spreadsheet to read: its name, or its 1-based number. Default: the
    /// first. A sheet is read into memory whole (calamine cannot stream), so workbooks over
    /// 64 MB fail; save larger sheets as CSV.
    #[serde(default)]
    pub sheet: Option<SheetRef>,
    /// The 1-based row of a sheet that holds the header; the rows below it are the data, the
    /// rows above are skipped. Default 1.
    #[serde(default)]
    pub start_row: Option<u32>,
    /// The target columns: their names, where each comes from and its type (see the `columns`
    /// section of the table puller docs). Default: every source field becomes a `text` column
    /// named as in the source (the CSV header, the fields of the first JSON record, the first
    /// row of a sheet).
    #[serde(default)]
    pub columns: Option<Vec<ColumnConfig>>,
}

fn default_pattern() -> String {
    "*".into()
}

fn default_settle() -> String {
    "1s".into()
}

/// The format of the files of a `table` puller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    Csv,
    Json,
    Ndjson,
    Xlsx,
}

impl TableFormat {
    /// The format a file name's extension says, if it says one.
    pub fn of_name(name: &str) -> Option<TableFormat> {
        let (_, extension) = name.rsplit_once('.')?;
        match extension.to_ascii_lowercase().as_str() {
            "csv" | "tsv" => Some(TableFormat::Csv),
            "json" => Some(TableFormat::Json),
            "ndjson" | "jsonl" => Some(TableFormat::Ndjson),
            "xlsx" | "xlsm" | "xlsb" | "xls" | "ods" => Some(TableFormat::Xlsx),
            _ => None,
        }
    }
}

/// Options of CSV files.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvConfig {
    /// Field separator, one ASCII character (`"\t"` for tabs). Default `,`; `\t` for files
    /// named `*.tsv`.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// Whether the first line names the fields. Default `true`. Without a header, `from:` in
    /// `columns` is a 1-based column number or an Excel column letter, and without `columns`
    /// the columns are named `column_1`, `column_2`, …
    #[serde(default = "default_true")]
    pub header: bool,
    /// Quote character, one ASCII character; `""` turns quoting off. Default `"`. A quote in a
    /// quoted field is written twice.
    #[serde(default = "default_quote")]
    pub quote: String,
    /// Character encoding: `utf-8` (a byte order mark is skipped), `latin1` (ISO-8859-1) or
    /// `windows-1252`. Default `utf-8`; a file that is not valid UTF-8 fails with the line.
    #[serde(default)]
    pub encoding: Encoding,
}

impl Default for CsvConfig {
    fn default() -> Self {
        CsvConfig {
            delimiter: None,
            header: true,
            quote: default_quote(),
            encoding: Encoding::default(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_quote() -> String {
    "\"".into()
}

/// Character encoding of CSV files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "latin1", alias = "iso-8859-1")]
    Latin1,
    #[serde(rename = "windows-1252", alias = "cp1252")]
    Windows1252,
}

/// Options of JSON files.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    /// JSON pointer to the array of records in a `.json` file, e.g. `/data/items`. Default:
    /// the document is the array. The file is streamed either way.
    #[serde(default)]
    pub records: String,
}

/// A sheet of a spreadsheet, by name or 1-based number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SheetRef {
    Number(usize),
    Name(String),
}
