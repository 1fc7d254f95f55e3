//! The `table` puller against real files in temporary directories.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ferry_core::records::{self, Chunk, ColumnType};
use ferry_core::{BuildContext, BuildError, DynPullerFactory, Passenger, Pulled, Puller, Seated};
use serde_json::{Value, json};
use tempfile::TempDir;

use super::TablePullerFactory;
use crate::file::test_support::{names, seated, set_modified, write_settled};

fn ctx(project: &Path) -> BuildContext {
    BuildContext {
        project_dir: project.to_path_buf(),
        sandbox: ferry_core::sandbox::Sandbox::within(project, "acme"),
        client: "acme".into(),
        pipeline: "tables".into(),
        component: "table".into(),
        ..BuildContext::default()
    }
}

fn build(project: &Path, config: Value) -> Result<Box<dyn Puller>, BuildError> {
    DynPullerFactory::build(&TablePullerFactory, &config, &ctx(project))
}

/// A project with an `in` directory holding `files`, and a puller of it with `extra` config
/// (`after_seat: delete` unless given).
fn setup(files: &[(&str, &[u8])], extra: Value) -> (TempDir, PathBuf, Box<dyn Puller>) {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    for (name, content) in files {
        write_settled(&inbox.join(name), content);
    }
    let mut config = json!({ "path": "in", "after_seat": "delete" });
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    let puller = build(project.path(), config).unwrap();
    (project, inbox, puller)
}

/// Rows read back from a batch: `None` is NULL.
type Rows = Vec<Vec<Option<String>>>;

/// The columns (name, type) and rows of a chunk.
fn table(passenger: &Passenger) -> (Vec<(String, ColumnType)>, Rows) {
    let batch = records::read(&passenger.body).unwrap();
    assert_eq!(passenger.metadata[records::ROWS], batch.rows.to_string());
    let columns = batch
        .columns
        .iter()
        .map(|c| (c.name.clone(), c.kind))
        .collect();
    (columns, records::rows(&batch.data))
}

/// Rows as written in tests: `None` is NULL.
fn row(values: &[Option<&str>]) -> Vec<Option<String>> {
    values.iter().map(|v| v.map(str::to_string)).collect()
}

/// Pulls everything there is, in pulls of `max`.
async fn pull_all(puller: &mut Box<dyn Puller>, max: usize) -> Pulled {
    let mut all = Pulled::default();
    loop {
        let pulled = puller.pull(max).await.unwrap();
        all.passengers.extend(pulled.passengers);
        all.failures.extend(pulled.failures);
        if !pulled.more {
            return all;
        }
    }
}

/// The one chunk of a one-file pull, checking there were no failures.
async fn only_chunk(puller: &mut Box<dyn Puller>) -> Passenger {
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.failures.is_empty(), "{:?}", pulled.failures);
    assert_eq!(pulled.passengers.len(), 1);
    pulled.passengers.into_iter().next().unwrap()
}

// ---- CSV -------------------------------------------------------------------------------------

#[tokio::test]
async fn csv_with_a_header_is_mapped_and_converted() {
    let csv = "Customer No;Name;Amount;Created;Active;Note\n\
               1;Ann;1.234,50;31.05.2024;yes;first\n\
               2;Bob;-3,5;2024-06-01;N;\n\
               3;;0;12/24/2023;true;\"semi;colon\"\n";
    let columns = json!([
        { "name": "customer_id", "from": "Customer No", "type": "integer" },
        { "name": "name", "from": "Name" },
        { "name": "amount", "from": "Amount", "type": "numeric", "decimal": "," },
        { "name": "created", "from": "Created", "type": "date" },
        { "name": "active", "from": "Active", "type": "boolean" },
        { "name": "note", "from": "Note", "empty": "keep" },
    ]);
    let (_project, _inbox, mut puller) = setup(
        &[("customers.csv", csv.as_bytes())],
        json!({ "csv": { "delimiter": ";" }, "columns": columns }),
    );
    let chunk = only_chunk(&mut puller).await;
    let (columns, rows) = table(&chunk);
    assert_eq!(
        columns,
        [
            ("customer_id".to_string(), ColumnType::Integer),
            ("name".to_string(), ColumnType::Text),
            ("amount".to_string(), ColumnType::Numeric),
            ("created".to_string(), ColumnType::Date),
            ("active".to_string(), ColumnType::Boolean),
            ("note".to_string(), ColumnType::Text),
        ]
    );
    assert_eq!(
        rows,
        [
            row(&[
                Some("1"),
                Some("Ann"),
                Some("1234.50"),
                Some("2024-05-31"),
                Some("t"),
                Some("first")
            ]),
            row(&[
                Some("2"),
                Some("Bob"),
                Some("-3.5"),
                Some("2024-06-01"),
                Some("f"),
                Some("")
            ]),
            row(&[
                Some("3"),
                None,
                Some("0"),
                Some("2023-12-24"),
                Some("t"),
                Some("semi;colon")
            ]),
        ]
    );
    assert_eq!(chunk.source_system, "table");
    assert_eq!(chunk.metadata["file"], "customers.csv");
    let (name, chunk_number) = chunk.external_id.rsplit_once('#').unwrap();
    assert_eq!(chunk_number, "1");
    let (name, millis) = name.rsplit_once('@').unwrap();
    assert_eq!(name, "customers.csv");
    assert!(millis.parse::<i64>().is_ok(), "{}", chunk.external_id);
}

#[tokio::test]
async fn quoted_fields_keep_newlines_tabs_quotes_and_backslashes() {
    let csv = "id,text\n\
               1,\"two\nlines\"\n\
               2,\"tab\there\"\n\
               3,\"say \"\"hi\"\"\"\n\
               4,back\\slash\n\
               5,\"crlf\r\nend\"\n";
    let (_project, _inbox, mut puller) = setup(&[("q.csv", csv.as_bytes())], json!({}));
    let chunk = only_chunk(&mut puller).await;
    let (columns, rows) = table(&chunk);
    assert_eq!(
        columns,
        [
            ("id".to_string(), ColumnType::Text),
            ("text".to_string(), ColumnType::Text)
        ]
    );
    let texts: Vec<_> = rows.iter().map(|r| r[1].clone().unwrap()).collect();
    assert_eq!(
        texts,
        [
            "two\nlines",
            "tab\there",
            "say \"hi\"",
            "back\\slash",
            "crlf\r\nend"
        ]
    );
    // The raw COPY text has one line per row: the newlines inside fields are escaped.
    let batch = records::read(&chunk.body).unwrap();
    assert_eq!(batch.data.iter().filter(|&&b| b == b'\n').count(), 5);
}

#[tokio::test]
async fn files_without_a_header_map_column_numbers_and_letters() {
    let csv = "10\tx\t2024-01-02\n20\ty\t2024-01-03\n";
    let columns = json!([
        { "name": "day", "from": "C", "type": "date" },
        { "name": "id", "from": 1, "type": "integer" },
    ]);
    let (_project, _inbox, mut puller) = setup(
        &[("a.tsv", csv.as_bytes())],
        json!({ "csv": { "header": false }, "columns": columns }),
    );
    let (_, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(
        rows,
        [
            row(&[Some("2024-01-02"), Some("10")]),
            row(&[Some("2024-01-03"), Some("20")])
        ]
    );

    // Without `columns`, every field is a text column named by its position.
    let (_project, _inbox, mut puller) = setup(
        &[("b.csv", b"1,a\n2,b\n")],
        json!({ "csv": { "header": false } }),
    );
    let (columns, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(columns[1], ("column_2".to_string(), ColumnType::Text));
    assert_eq!(rows.len(), 2);
}

#[tokio::test]
async fn other_encodings_and_a_byte_order_mark() {
    // "Müller" in Latin-1, "€" in Windows-1252.
    let (_project, _inbox, mut puller) = setup(
        &[("l.csv", b"name\nM\xfcller\n\x80 5\n")],
        json!({ "csv": { "encoding": "windows-1252" } }),
    );
    let (_, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(rows, [row(&[Some("Müller")]), row(&[Some("€ 5")])]);

    let (_project, _inbox, mut puller) = setup(&[("bom.csv", b"\xef\xbb\xbfid\n7\n")], json!({}));
    let (columns, _) = table(&only_chunk(&mut puller).await);
    assert_eq!(
        columns[0].0, "id",
        "the byte order mark is not part of the name"
    );
}

#[tokio::test]
async fn an_empty_file_is_one_chunk_without_rows() {
    let columns = json!([{ "name": "id", "type": "integer" }]);
    let (_project, _inbox, mut puller) = setup(
        &[("empty.csv", b""), ("header-only.csv", b"id\n")],
        json!({ "columns": columns }),
    );
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.failures.is_empty(), "{:?}", pulled.failures);
    assert_eq!(pulled.passengers.len(), 2);
    for chunk in &pulled.passengers {
        let (columns, rows) = table(chunk);
        assert_eq!(columns, [("id".to_string(), ColumnType::Integer)]);
        assert!(rows.is_empty());
        let place = Chunk::of(chunk).unwrap();
        assert_eq!((place.number, place.last), (1, true));
    }
}

// ---- JSON, NDJSON ----------------------------------------------------------------------------

#[tokio::test]
async fn ndjson_and_json_records_with_nested_fields() {
    let ndjson = "{\"id\": 1, \"customer\": {\"name\": \"Ann\"}, \"tags\": [\"a\"]}\n\
                  \n\
                  {\"id\": \"2\", \"customer\": {\"name\": \"Bob\"}, \"extra\": true}\n";
    let array = r#"[{"id": 3, "customer": {"name": "Cy"}}, {"id": 4}]"#;
    let wrapped =
        r#"{"meta": {"page": 1}, "data": {"items": [{"id": 5, "customer": {"name": "Di"}}]}}"#;
    let columns = json!([
        { "name": "id", "type": "integer" },
        { "name": "name", "from": "/customer/name" },
        { "name": "tags", "type": "json" },
    ]);
    let (_project, inbox, mut puller) = setup(
        &[
            ("a.ndjson", ndjson.as_bytes()),
            ("b.json", array.as_bytes()),
        ],
        json!({ "columns": columns }),
    );
    let pulled = pull_all(&mut puller, 10).await;
    assert!(pulled.failures.is_empty(), "{:?}", pulled.failures);
    let (_, rows) = table(&pulled.passengers[0]);
    assert_eq!(
        rows,
        [
            row(&[Some("1"), Some("Ann"), Some("[\"a\"]")]),
            row(&[Some("2"), Some("Bob"), None])
        ]
    );
    let (_, rows) = table(&pulled.passengers[1]);
    assert_eq!(
        rows,
        [
            row(&[Some("3"), Some("Cy"), None]),
            row(&[Some("4"), None, None])
        ]
    );

    // A pointer to the records inside the document.
    let project = inbox.parent().unwrap();
    let wrapped_dir = project.join("wrapped");
    fs::create_dir(&wrapped_dir).unwrap();
    write_settled(&wrapped_dir.join("w.json"), wrapped);
    let config = json!({
        "path": "wrapped", "after_seat": "keep", "json": { "records": "/data/items" },
        "columns": columns,
    });
    let mut puller = build(project, config).unwrap();
    let (_, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(rows, [row(&[Some("5"), Some("Di"), None])]);
}

#[tokio::test]
async fn json_without_columns_takes_the_fields_of_the_first_record_in_order() {
    let (_project, _inbox, mut puller) = setup(
        &[(
            "a.json",
            br#"[{"zeta": 1, "alpha": {"x": true}, "mid": null}, {"alpha": 2, "other": 3}]"#,
        )],
        json!({}),
    );
    let (columns, rows) = table(&only_chunk(&mut puller).await);
    let names: Vec<_> = columns.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(
        rows,
        [
            row(&[Some("1"), Some("{\"x\":true}"), None]),
            row(&[None, Some("2"), None])
        ]
    );
}

// ---- spreadsheets ----------------------------------------------------------------------------

/// Writes a minimal `.xlsx` workbook with one sheet `Orders` whose rows are given as the XML of
/// their cells; style 1 is a date format.
fn write_xlsx(path: &Path, rows: &[&str]) {
    const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    const RELS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
    const DOC: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    let content_types = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>
<Default Extension="xml" ContentType="application/xml"/>
<Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>
<Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>
<Override PartName="/xl/styles.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>
</Types>"#,
    );
    let root_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship Id="rId1" Type="{DOC}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#
    );
    let workbook = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="{MAIN}" xmlns:r="{DOC}"><sheets><sheet name="Orders" sheetId="1" r:id="rId1"/></sheets></workbook>"#
    );
    let workbook_rels = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="{RELS}"><Relationship Id="rId1" Type="{DOC}/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="{DOC}/styles" Target="styles.xml"/></Relationships>"#
    );
    let styles = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><styleSheet xmlns="{MAIN}"><cellXfs count="2"><xf numFmtId="0"/><xf numFmtId="14" applyNumberFormat="1"/></cellXfs></styleSheet>"#
    );
    let mut sheet_data = String::new();
    for (index, cells) in rows.iter().enumerate() {
        sheet_data.push_str(&format!(r#"<row r="{}">{cells}</row>"#, index + 1));
    }
    let sheet = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="{MAIN}"><sheetData>{sheet_data}</sheetData></worksheet>"#
    );
    let mut zip = zip::ZipWriter::new(fs::File::create(path).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, content) in [
        ("[Content_Types].xml", content_types),
        ("_rels/.rels", root_rels),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", workbook_rels),
        ("xl/styles.xml", styles),
        ("xl/worksheets/sheet1.xml", sheet),
    ] {
        zip.start_file(name, options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    set_modified(path, SystemTime::now() - Duration::from_secs(3600));
}

/// An inline string cell.
fn text_cell(reference: &str, text: &str) -> String {
    format!(r#"<c r="{reference}" t="inlineStr"><is><t>{text}</t></is></c>"#)
}

#[tokio::test]
async fn spreadsheets_with_dates_numbers_and_empty_cells() {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    let header = [
        text_cell("A1", "Name"),
        text_cell("B1", "Amount"),
        text_cell("C1", "Ordered"),
        text_cell("D1", "Shipped"),
        text_cell("E1", "Paid"),
        text_cell("F1", "Qty"),
    ]
    .concat();
    // C: a date cell (style 1); D: a bare serial number in a date column.
    let first = format!(
        r#"{}<c r="B2"><v>12.5</v></c><c r="C2" s="1"><v>45443</v></c><c r="D2"><v>45444</v></c><c r="E2" t="b"><v>1</v></c><c r="F2"><v>3</v></c>"#,
        text_cell("A2", "Ann")
    );
    let second = format!(
        r#"{}<c r="C3" s="1"><v>45444.5</v></c><c r="E3" t="b"><v>0</v></c>"#,
        text_cell("A3", "Bob")
    );
    write_xlsx(&inbox.join("orders.xlsx"), &[&header, &first, &second]);
    let columns = json!([
        { "name": "name", "from": "Name" },
        { "name": "amount", "from": "Amount", "type": "numeric" },
        { "name": "ordered", "from": "Ordered", "type": "timestamp" },
        { "name": "shipped", "from": "D", "type": "date" },
        { "name": "paid", "from": "Paid", "type": "boolean" },
        { "name": "qty", "from": "Qty", "type": "integer" },
    ]);
    let config = json!({
        "path": "in", "after_seat": "delete", "sheet": "Orders", "columns": columns,
    });
    let mut puller = build(project.path(), config).unwrap();
    let (_, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(
        rows,
        [
            row(&[
                Some("Ann"),
                Some("12.5"),
                Some("2024-05-31 00:00:00"),
                Some("2024-06-01"),
                Some("t"),
                Some("3")
            ]),
            row(&[
                Some("Bob"),
                None,
                Some("2024-06-01 12:00:00"),
                None,
                Some("f"),
                None
            ]),
        ]
    );

    // Without `columns`, the header row names text columns; a missing sheet fails the file.
    let config = json!({ "path": "in", "after_seat": "keep", "sheet": 2 });
    let mut puller = build(project.path(), config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    assert!(
        pulled.failures[0]
            .error
            .message
            .contains("no sheet 2; it has: Orders"),
        "{:?}",
        pulled.failures
    );
    let config = json!({ "path": "in", "after_seat": "keep" });
    let mut puller = build(project.path(), config).unwrap();
    let (columns, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(columns[3], ("Shipped".to_string(), ColumnType::Text));
    assert_eq!(rows[0][1].as_deref(), Some("12.5"));
}

// ---- chunks, failures, acks ------------------------------------------------------------------

fn numbered_csv(rows: usize) -> String {
    let mut csv = String::from("id\n");
    for id in 1..=rows {
        csv.push_str(&format!("{id}\n"));
    }
    csv
}

#[tokio::test]
async fn rows_are_cut_into_chunks_paged_by_max() {
    let columns = json!([{ "name": "id", "type": "integer" }]);
    let (_project, inbox, mut puller) = setup(
        &[("n.csv", numbered_csv(25).as_bytes())],
        json!({ "chunk_rows": 10, "columns": columns }),
    );
    let first = puller.pull(2).await.unwrap();
    assert_eq!(first.passengers.len(), 2);
    assert!(first.more);
    let second = puller.pull(2).await.unwrap();
    assert_eq!(second.passengers.len(), 1);
    assert!(!second.more);
    assert_eq!(
        names(&inbox),
        ["n.csv"],
        "nothing is removed before the ack"
    );

    let chunks: Vec<_> = first.passengers.iter().chain(&second.passengers).collect();
    let sizes: Vec<_> = chunks.iter().map(|c| table(c).1.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let places: Vec<_> = chunks.iter().map(|c| Chunk::of(c).unwrap()).collect();
    assert_eq!(
        places
            .iter()
            .map(|p| (p.number, p.last))
            .collect::<Vec<_>>(),
        [(1, false), (2, false), (3, true)]
    );
    assert!(places.iter().all(|p| p.load == places[0].load));
    assert_eq!(places[0].load.len(), 36, "a UUID: {}", places[0].load);
    let ids: Vec<_> = chunks
        .iter()
        .map(|c| c.external_id.rsplit_once('#').unwrap().1)
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    let (_, last_rows) = table(chunks[2]);
    assert_eq!(last_rows[4], row(&[Some("25")]));
}

#[tokio::test]
async fn a_malformed_file_fails_alone_with_its_line_and_is_not_retried_until_changed() {
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "count.csv",
            b"id,amount\n1,2\n2,3,4\n",
            "count.csv: line 3: 3 fields where the first line has 2",
        ),
        (
            "value.csv",
            b"id,amount\n1,2\n2,\"12,3x\"\n",
            "value.csv: line 3: column amount: \"12,3x\" is not a numeric",
        ),
        (
            "quote.csv",
            b"id,amount\n1,2\n2,\"3\n4,5\n",
            "quote.csv: line 3: a quoted field is not closed",
        ),
        (
            "utf8.csv",
            b"id,amount\n1,2\n\xff,3\n",
            "utf8.csv: line 3: column id: not valid UTF-8",
        ),
        (
            "lines.ndjson",
            b"{\"id\": 1, \"amount\": 2}\n{\"id\": 2,\n",
            "lines.ndjson: line 2: EOF while parsing",
        ),
    ];
    let mut files: Vec<(&str, &[u8])> = cases.iter().map(|(n, c, _)| (*n, *c)).collect();
    // Named to come after the bad files.
    files.push(("zz-good.csv", b"id,amount\n1,2.5\n"));
    let columns = json!([
        { "name": "id", "type": "text" },
        { "name": "amount", "type": "numeric" },
    ]);
    let (_project, inbox, mut puller) = setup(&files, json!({ "columns": columns }));
    let pulled = puller.pull(1).await.unwrap();
    // Failures do not count against `max`: the good file behind them travels.
    assert_eq!(pulled.passengers.len(), 1);
    assert_eq!(pulled.passengers[0].metadata["file"], "zz-good.csv");
    let mut messages: Vec<_> = pulled
        .failures
        .iter()
        .map(|f| {
            (
                f.external_id.clone(),
                f.error.message.clone(),
                f.error.retryable,
            )
        })
        .collect();
    messages.sort();
    let mut expected: Vec<_> = cases
        .iter()
        .map(|(name, _, message)| (*name, *message))
        .collect();
    expected.sort();
    assert_eq!(messages.len(), expected.len(), "{messages:?}");
    for ((id, message, retryable), (name, start)) in messages.iter().zip(&expected) {
        // The name alone: the modification time is the failure's fingerprint.
        assert_eq!(id, name);
        assert!(
            message.starts_with(start),
            "{message} should start with {start}"
        );
        assert!(!retryable, "{message}");
    }
    puller.ack(&seated(&pulled.passengers)).await.unwrap();

    // The bad files stay, and are not read again while unchanged.
    let mut left = names(&inbox);
    left.sort();
    assert_eq!(left.len(), 5);
    let again = puller.pull(10).await.unwrap();
    assert!(again.failures.is_empty() && again.passengers.is_empty());
    assert!(!again.more);

    // Fixed: read again.
    write_settled(&inbox.join("value.csv"), "id,amount\n1,2\n2,\"12.3\"\n");
    let fixed = puller.pull(10).await.unwrap();
    assert!(fixed.failures.is_empty(), "{:?}", fixed.failures);
    let (_, rows) = table(&fixed.passengers[0]);
    assert_eq!(rows[1], row(&[Some("2"), Some("12.3")]));
}

#[tokio::test]
async fn failures_far_into_a_csv_file_name_their_line() {
    // Past the first batches the parsing thread hands over (quoted newlines count as lines).
    let good = || {
        let mut csv = String::from("id,note\n");
        for id in 1..=10_000 {
            csv.push_str(&format!("{id},\"a\nb\"\n"));
        }
        csv
    };
    // By name, as the failures are sorted.
    let cases = [
        (
            "count.csv",
            format!("{}1,2,3\n4,5\n", good()),
            "count.csv: line 20002: 3 fields where the first line has 2",
        ),
        (
            "quote.csv",
            format!("{}1,\"2\n3,4\n", good()),
            "quote.csv: line 20002: a quoted field is not closed",
        ),
        (
            "value.csv",
            format!("{}x,2\n", good()),
            "value.csv: line 20002: column id: \"x\" is not an integer",
        ),
    ];
    let mut files: Vec<(&str, &[u8])> = cases.iter().map(|(n, c, _)| (*n, c.as_bytes())).collect();
    let whole = good();
    files.push(("zz-good.csv", whole.as_bytes()));
    let columns = json!([{ "name": "id", "type": "integer" }, { "name": "note" }]);
    let (_project, _inbox, mut puller) =
        setup(&files, json!({ "columns": columns, "chunk_rows": 3000 }));
    let pulled = pull_all(&mut puller, 100).await;
    let mut messages: Vec<_> = pulled
        .failures
        .iter()
        .map(|f| f.error.message.clone())
        .collect();
    messages.sort();
    assert_eq!(messages.len(), 3, "{messages:?}");
    for (message, (_, _, start)) in messages.iter().zip(&cases) {
        assert!(
            message.starts_with(start),
            "{message} should start with {start}"
        );
    }
    let rows: Vec<usize> = pulled
        .passengers
        .iter()
        .map(|p| p.metadata[records::ROWS].parse().unwrap())
        .collect();
    assert_eq!(rows, [3000, 3000, 3000, 1000]);
    let (_, last) = table(pulled.passengers.last().unwrap());
    assert_eq!(last[999], row(&[Some("10000"), Some("a\nb")]));
}

#[tokio::test]
async fn after_seat_waits_for_every_chunk_of_a_file() {
    let (_project, inbox, mut puller) = setup(
        &[("n.csv", numbered_csv(25).as_bytes())],
        json!({ "chunk_rows": 10 }),
    );
    let first = puller.pull(2).await.unwrap();
    puller.ack(&seated(&first.passengers)).await.unwrap();
    assert_eq!(names(&inbox), ["n.csv"], "one chunk is not seated yet");
    let second = puller.pull(2).await.unwrap();
    // Duplicates are acked like the others.
    let mut acks = seated(&second.passengers);
    acks[0].duplicate = true;
    puller.ack(&acks).await.unwrap();
    assert!(names(&inbox).is_empty());
    // A second ack of the same chunks is fine.
    puller.ack(&acks).await.unwrap();
    puller.ack(&seated(&first.passengers)).await.unwrap();
}

#[tokio::test]
async fn a_load_whose_chunks_were_not_all_acked_is_read_again_whole() {
    let (_project, inbox, mut puller) = setup(
        &[("n.csv", numbered_csv(25).as_bytes())],
        json!({ "chunk_rows": 10 }),
    );
    let first = pull_all(&mut puller, 10).await;
    assert_eq!(first.passengers.len(), 3);
    // The seating failed: no ack. The next pull offers the same chunks again.
    let again = pull_all(&mut puller, 10).await;
    let ids = |pulled: &Pulled| {
        pulled
            .passengers
            .iter()
            .map(|p| (p.external_id.clone(), Chunk::of(p).unwrap().load))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again), "same external ids and load");
    puller.ack(&seated(&again.passengers)).await.unwrap();
    assert!(names(&inbox).is_empty());
}

#[tokio::test]
async fn after_seat_moves_into_the_archive_or_keeps() {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    write_settled(&inbox.join("a.csv"), "id\n1\n");
    let config = json!({ "path": "in", "after_seat": { "move_to": "archive/tables" } });
    let mut puller = build(project.path(), config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    assert!(names(&inbox).is_empty());
    assert_eq!(names(&project.path().join("archive/tables")), ["a.csv"]);

    write_settled(&inbox.join("k.csv"), "id\n1\n");
    let config = json!({ "path": "in", "after_seat": "keep" });
    let mut puller = build(project.path(), config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    assert_eq!(pulled.passengers.len(), 1);
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    assert_eq!(names(&inbox), ["k.csv"]);
    let again = puller.pull(10).await.unwrap();
    assert!(again.passengers.is_empty(), "a kept file is loaded once");
    // Rewritten: a new load.
    fs::write(inbox.join("k.csv"), "id\n2\n").unwrap();
    set_modified(
        &inbox.join("k.csv"),
        SystemTime::now() - Duration::from_secs(60),
    );
    let changed = puller.pull(10).await.unwrap();
    assert_eq!(changed.passengers.len(), 1);
    assert_ne!(
        changed.passengers[0].external_id,
        pulled.passengers[0].external_id
    );
}

#[tokio::test]
async fn ack_leaves_a_file_rewritten_since_it_was_read_and_ignores_foreign_ids() {
    let (_project, inbox, mut puller) = setup(&[("a.csv", b"id\n1\n")], json!({}));
    let pulled = puller.pull(10).await.unwrap();
    set_modified(
        &inbox.join("a.csv"),
        SystemTime::now() - Duration::from_secs(60),
    );
    puller.ack(&seated(&pulled.passengers)).await.unwrap();
    assert_eq!(names(&inbox), ["a.csv"], "a rewritten file is a new load");

    let foreign = [
        ("table", "../etc/passwd@1#1"),
        ("table", "a.csv"),
        ("file", &*pulled.passengers[0].external_id),
    ];
    let foreign: Vec<_> = foreign
        .iter()
        .map(|(system, id)| Seated {
            source_system: system.to_string(),
            external_id: id.to_string(),
            duplicate: false,
        })
        .collect();
    puller.ack(&foreign).await.unwrap();
    assert_eq!(names(&inbox), ["a.csv"]);
}

#[tokio::test]
async fn unsettled_files_wait_and_a_missing_directory_fails_the_pull() {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    fs::write(inbox.join("fresh.csv"), "id\n1\n").unwrap();
    let config = json!({ "path": "in", "after_seat": "delete", "settle": "1h" });
    let mut puller = build(project.path(), config).unwrap();
    let pulled = puller.pull(10).await.unwrap();
    assert!(pulled.passengers.is_empty() && !pulled.more);

    let config = json!({ "path": "nowhere", "after_seat": "delete" });
    let mut puller = build(project.path(), config).unwrap();
    let error = puller.pull(10).await.unwrap_err();
    assert!(!error.retryable);
    assert!(error.message.contains("cannot list"), "{error}");
}

#[tokio::test]
async fn the_format_comes_from_the_extension_unless_set() {
    let (_project, _inbox, mut puller) = setup(
        &[("data.dat", b"id\n1\n"), ("skip.txt", b"x")],
        json!({ "pattern": "*.dat" }),
    );
    let pulled = puller.pull(10).await.unwrap();
    assert!(
        pulled.failures[0]
            .error
            .message
            .contains("cannot tell the format"),
        "{:?}",
        pulled.failures
    );
    let (_project, _inbox, mut puller) = setup(
        &[("data.dat", b"{\"id\": 1}\n")],
        json!({ "format": "ndjson" }),
    );
    let (_, rows) = table(&only_chunk(&mut puller).await);
    assert_eq!(rows, [row(&[Some("1")])]);
}

// ---- PostgreSQL --------------------------------------------------------------------------------

/// A connection to the development PostgreSQL (see SERVICES.md).
async fn postgres() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        "host=127.0.0.1 user=postgres dbname=test sslmode=disable",
        tokio_postgres::NoTls,
    )
    .await
    .expect("PostgreSQL on 127.0.0.1:5432 (see SERVICES.md)");
    tokio::spawn(connection);
    client
}

/// Creates a temporary table for the chunk's columns and COPYs its rows into it.
async fn copy_into(client: &tokio_postgres::Client, table: &str, chunk: &Passenger) -> u64 {
    use futures::SinkExt;
    let batch = records::read(&chunk.body).unwrap();
    let columns: Vec<String> = batch
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}", c.name, c.kind.postgres()))
        .collect();
    client
        .batch_execute(&format!(
            "CREATE TEMP TABLE IF NOT EXISTS {table} ({})",
            columns.join(", ")
        ))
        .await
        .unwrap();
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN"))
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(batch.data).await.unwrap();
    sink.as_mut().finish().await.unwrap()
}

#[tokio::test]
async fn chunks_load_into_postgresql_with_copy() {
    let csv = "b;i;f;n;t;d;tm;ts;tz;j;by;u\n\
               yes;1.000;3,5;1.234,56;tab\there \\ x;31.05.2024;8:15 PM;31.05.2024 08:15;\
               2024-05-31T12:00:00+02:00;{\"a\": [1]};\\x00ff;\
               67E55044-10B1-426F-9247-BB680E5FE0C8\n\
               0;-2;1e3;-0,5;;2024-02-29;00:00:01.5;2024-05-31 23:59:59.123456;2024-05-31;\
               \"\"\"s\"\"\";raw;67e5504410b1426f9247bb680e5fe0c8\n\
               ;;;;;;;;;;;\n";
    let columns = json!([
        { "name": "b", "type": "boolean" },
        { "name": "i", "type": "integer", "decimal": "," },
        { "name": "f", "type": "float", "decimal": "," },
        { "name": "n", "type": "numeric", "decimal": "," },
        { "name": "t" },
        { "name": "d", "type": "date" },
        { "name": "tm", "type": "time" },
        { "name": "ts", "type": "timestamp" },
        { "name": "tz", "type": "timestamptz" },
        { "name": "j", "type": "json" },
        { "name": "by", "type": "bytes" },
        { "name": "u", "type": "uuid" },
    ]);
    let (_project, _inbox, mut puller) = setup(
        &[("types.csv", csv.as_bytes())],
        json!({ "csv": { "delimiter": ";" }, "columns": columns }),
    );
    let chunk = only_chunk(&mut puller).await;
    let client = postgres().await;
    client.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    assert_eq!(copy_into(&client, "types", &chunk).await, 3);
    let rows = client
        .query(
            "SELECT b::text, i::text, f::text, n::text, t, d::text, tm::text, ts::text, \
             tz::text, j::text, encode(\"by\", 'hex'), u::text FROM types ORDER BY i DESC NULLS LAST",
            &[],
        )
        .await
        .unwrap();
    let texts: Vec<Vec<Option<String>>> = rows
        .iter()
        .map(|row| (0..12).map(|i| row.get::<_, Option<String>>(i)).collect())
        .collect();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        texts[0],
        [
            some("true"),
            some("1000"),
            some("3.5"),
            some("1234.56"),
            some("tab\there \\ x"),
            some("2024-05-31"),
            some("20:15:00"),
            some("2024-05-31 08:15:00"),
            some("2024-05-31 10:00:00+00"),
            some("{\"a\": [1]}"),
            some("00ff"),
            some("67e55044-10b1-426f-9247-bb680e5fe0c8"),
        ]
    );
    assert_eq!(
        texts[1],
        [
            some("false"),
            some("-2"),
            some("1000"),
            some("-0.5"),
            None,
            some("2024-02-29"),
            some("00:00:01.5"),
            some("2024-05-31 23:59:59.123456"),
            some("2024-05-31 00:00:00+00"),
            some("\"s\""),
            some("726177"),
            some("67e55044-10b1-426f-9247-bb680e5fe0c8"),
        ]
    );
    assert!(texts[2].iter().all(Option::is_none), "{:?}", texts[2]);
}

// ---- configuration ---------------------------------------------------------------------------

#[test]
fn configuration_errors_name_their_key() {
    let project = tempfile::tempdir().unwrap();
    let error = |extra: Value| {
        let mut config = json!({ "path": "in", "after_seat": "delete" });
        for (key, value) in extra.as_object().unwrap() {
            config[key] = value.clone();
        }
        let error = build(project.path(), config).err().expect("an error");
        (error.path.join("."), error.message)
    };

    let (path, message) = error(json!({ "format": "xml" }));
    assert_eq!(path, "format");
    assert!(message.contains("`csv`, `json`, `ndjson`"), "{message}");
    let (path, message) = error(json!({ "json": { "records": "data" } }));
    assert_eq!(path, "json.records");
    assert!(message.contains("not a JSON pointer"), "{message}");
    let (path, message) = error(json!({ "columns": [{ "name": "a", "type": "money" }] }));
    assert_eq!(path, "columns.0.type");
    assert!(message.contains("valid types are"), "{message}");
    let (path, _) = error(json!({ "columns": [{ "name": "a", "from": "/a~x" }] }));
    assert_eq!(path, "columns.0.from");
    assert_eq!(error(json!({ "chunk_rows": 0 })).0, "chunk_rows");
    assert_eq!(
        error(json!({ "csv": { "delimiter": "ab" } })).0,
        "csv.delimiter"
    );
    assert_eq!(error(json!({ "csv": { "quote": "," } })).0, "csv.quote");
    assert_eq!(
        error(json!({ "csv": { "encoding": "ebcdic" } })).0,
        "csv.encoding"
    );
    assert_eq!(error(json!({ "sheet": 0 })).0, "sheet");
    assert_eq!(error(json!({ "start_row": 0 })).0, "start_row");
    assert_eq!(error(json!({ "settle": "soon" })).0, "settle");
    assert_eq!(error(json!({ "pattern": "[" })).0, "pattern");
    let (path, message) = error(json!({ "after_seat": "shred" }));
    assert_eq!(path, "after_seat");
    assert!(
        message.contains("`delete`, `keep` or `{ move_to: DIR }`"),
        "{message}"
    );
    assert_eq!(
        error(json!({ "after_seat": { "move_to": "in" } })).0,
        "after_seat.move_to"
    );
    let (_, message) = error(json!({ "colums": [] }));
    assert!(message.contains("unknown field `colums`"), "{message}");
    let (_, message) = error(json!({ "csv": { "separator": ";" } }));
    assert!(message.contains("unknown field `separator`"), "{message}");

    let missing = build(project.path(), json!({ "path": "in" }))
        .err()
        .unwrap();
    assert_eq!(missing.path, ["after_seat"]);
    assert!(missing.message.contains("`delete`, `keep`"), "{missing}");
    let missing = build(project.path(), json!({ "after_seat": "keep" }))
        .err()
        .unwrap();
    assert!(
        missing.message.contains("missing field `path`"),
        "{missing}"
    );

    // Building touches nothing: the directory does not exist.
    build(
        project.path(),
        json!({ "path": "in", "after_seat": "keep" }),
    )
    .unwrap();
}

/// A CSV file of `rows` rows of about 120 bytes: id integer, name, email, amount numeric,
/// created date, active boolean, note.
fn bench_csv(rows: u64) -> String {
    let mut csv = String::with_capacity(rows as usize * 125);
    csv.push_str("id,name,email,amount,created,active,note\n");
    for id in 1..=rows {
        let _ = std::fmt::Write::write_fmt(
            &mut csv,
            format_args!(
                "{id},Customer {id},customer{id}@example.com,{}.{:02},2024-{:02}-{:02},{},\
                 Some note about customer {id} lorem ipsum\n",
                id * 7 % 100_000,
                id % 100,
                id % 12 + 1,
                id % 28 + 1,
                if id % 3 == 0 { "true" } else { "false" },
            ),
        );
    }
    csv
}

fn bench_columns() -> Value {
    json!([
        { "name": "id", "type": "integer" },
        { "name": "name" },
        { "name": "email" },
        { "name": "amount", "type": "numeric" },
        { "name": "created", "type": "date" },
        { "name": "active", "type": "boolean" },
        { "name": "note" },
    ])
}

/// Not a timed test: run with
/// `cargo test -p ferry-connectors --release -- --ignored --nocapture table_converts_a_million`.
#[tokio::test]
#[ignore]
async fn table_converts_a_million_csv_rows() {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    let csv = bench_csv(1_000_000);
    let bytes = csv.len();
    write_settled(&inbox.join("big.csv"), csv);
    let config = json!({ "path": "in", "after_seat": "keep", "columns": bench_columns() });
    let mut puller = build(project.path(), config).unwrap();
    let start = std::time::Instant::now();
    let first = puller.pull(1).await.unwrap();
    let converted = start.elapsed();
    let mut chunks = first.passengers.len();
    let mut rows: usize = first
        .passengers
        .iter()
        .map(|p| p.metadata[records::ROWS].parse::<usize>().unwrap())
        .sum();
    loop {
        let pulled = puller.pull(100).await.unwrap();
        chunks += pulled.passengers.len();
        rows += pulled
            .passengers
            .iter()
            .map(|p| p.metadata[records::ROWS].parse::<usize>().unwrap())
            .sum::<usize>();
        if !pulled.more {
            break;
        }
    }
    let total = start.elapsed();
    assert_eq!(rows, 1_000_000);
    println!(
        "{bytes} bytes, {rows} rows in {chunks} chunks: converted and spooled in {converted:?}, \
         all chunks out in {total:?}: {:.0} rows/s",
        rows as f64 / total.as_secs_f64()
    );
}

/// Not a timed test: `psql \copy` of a 1,000,000-row CSV file against the table puller's
/// chunks COPYed one after the other (as a PostgreSQL pusher would, without the queue). Run with
/// `cargo test -p ferry-connectors --release -- --ignored --nocapture table_against_psql`.
#[tokio::test]
#[ignore]
async fn table_against_psql_copy() {
    let project = tempfile::tempdir().unwrap();
    let inbox = project.path().join("in");
    fs::create_dir(&inbox).unwrap();
    let file = inbox.join("big.csv");
    write_settled(&file, bench_csv(1_000_000));
    let client = postgres().await;
    let table = format!("bench_table_{}", std::process::id());
    let create = format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint, name text, email text, \
         amount numeric, created date, active boolean, note text)"
    );

    client.batch_execute(&create).await.unwrap();
    let start = std::time::Instant::now();
    let status = std::process::Command::new("psql")
        .arg("host=127.0.0.1 user=postgres dbname=test sslmode=disable")
        .arg("-qc")
        .arg(format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv, HEADER true)",
            file.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let psql = start.elapsed();

    client.batch_execute(&create).await.unwrap();
    let config = json!({ "path": "in", "after_seat": "keep", "columns": bench_columns() });
    let mut puller = build(project.path(), config).unwrap();
    let start = std::time::Instant::now();
    let mut rows = 0;
    loop {
        let pulled = puller.pull(1).await.unwrap();
        for chunk in &pulled.passengers {
            use futures::SinkExt;
            let data = records::read(&chunk.body).unwrap().data;
            let sink = client
                .copy_in(&format!("COPY {table} FROM STDIN"))
                .await
                .unwrap();
            let mut sink = std::pin::pin!(sink);
            sink.send(data).await.unwrap();
            rows += sink.as_mut().finish().await.unwrap();
        }
        if !pulled.more {
            break;
        }
    }
    let ferry = start.elapsed();
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert_eq!(rows, 1_000_000);
    println!(
        "psql \\copy: {psql:?}; table puller + COPY of its chunks: {ferry:?} ({:.0}% of psql's \
         speed)",
        100.0 * psql.as_secs_f64() / ferry.as_secs_f64()
    );
}

// ---- conformance ------------------------------------------------------------------------------

#[tokio::test]
async fn the_table_puller_conforms() {
    let mut inbox = crate::file::test_support::Inbox::new(
        |n| format!("id,amount\n{n},2.5\n"),
        (
            "value.csv",
            "id,amount\n1,2\n2,\"12,3x\"\n",
            "value.csv: line 3: column amount: \"12,3x\" is not a numeric",
        ),
        |project| {
            let columns = json!([
                { "name": "id", "type": "integer" },
                { "name": "amount", "type": "numeric" },
            ]);
            let config = json!({ "path": "in", "after_seat": "delete", "columns": columns });
            build(project, config).unwrap()
        },
    );
    crate::conformance::puller_conforms(&mut inbox).await;
}

// ---- Declared type modifiers -----------------------------------------------------------------

#[tokio::test]
async fn declared_modifiers_travel_in_the_batch_header() {
    let csv = "id,amount,code\n1,12.50,AB\n";
    let columns = json!([
        { "name": "id", "type": "integer" },
        { "name": "amount", "type": "numeric(12,2)" },
        { "name": "code", "type": "varchar(8)" },
    ]);
    let (_project, _inbox, mut puller) =
        setup(&[("a.csv", csv.as_bytes())], json!({ "columns": columns }));
    let chunk = only_chunk(&mut puller).await;
    let batch = records::read(&chunk.body).unwrap();
    let declared: Vec<String> = batch.columns.iter().map(|c| c.postgres()).collect();
    assert_eq!(declared, ["bigint", "numeric(12,2)", "varchar(8)"]);
    assert_eq!(records::rows(&batch.data)[0][1].as_deref(), Some("12.50"));
}

#[test]
fn a_bad_modifier_names_the_key() {
    let project = tempfile::tempdir().unwrap();
    fs::create_dir(project.path().join("in")).unwrap();
    for (kind, expected) in [
        ("numeric(2,5)", "larger than its precision"),
        ("varchar(0)", "between 1 and"),
    ] {
        let config = json!({
            "path": "in",
            "after_seat": "delete",
            "columns": [{ "name": "id" }, { "name": "amount", "type": kind }],
        });
        let error = build(project.path(), config).err().unwrap();
        assert_eq!(error.path, ["columns", "1", "type"], "{error}");
        assert!(error.message.contains(expected), "{error}");
    }
}
