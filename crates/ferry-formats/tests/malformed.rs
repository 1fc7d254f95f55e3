//! Malformed input of every format fails with the position of the error in its message, and
//! values a format cannot hold fail with the JSON pointer of the offending part.

mod common;

use std::io::Write as _;

use ferry_formats::{Codec, FormatError, Position};
use serde_json::{Value, json};

fn decode_error(codec: &Codec, bytes: &[u8]) -> FormatError {
    codec.decode(bytes).unwrap_err()
}

fn encode_error(codec: &Codec, value: Value) -> FormatError {
    codec.encode(&value).unwrap_err()
}

#[test]
fn json_and_ndjson_give_line_and_column() {
    let project = common::project();
    let json = common::codec(project.path(), json!("json"));
    let error = decode_error(
        &json,
        b"{\n  \"id\": 1,\n  \"name\": \"Ann\"\n  \"x\": 2\n}",
    );
    assert_eq!(
        error.to_string(),
        "JSON line 4, column 3: expected `,` or `}`"
    );
    assert_eq!(
        error.position,
        Some(Position::Line {
            line: 4,
            column: Some(3)
        })
    );

    let ndjson = common::codec(project.path(), json!("ndjson"));
    let error = decode_error(&ndjson, b"{\"a\":1}\n{\"a\":2}\n{\"a\" 3}\n");
    assert_eq!(error.to_string(), "NDJSON line 3, column 6: expected `:`");
}

#[test]
fn csv_gives_the_line() {
    let project = common::project();
    let csv = common::codec(project.path(), json!("csv"));
    let error = decode_error(&csv, b"id,name,amount\n1,Ann,10\n2,Bob,20,extra\n");
    assert_eq!(error.to_string(), "CSV line 3: found 4 fields, expected 3");
    let semicolons = common::codec(project.path(), json!({ "type": "csv", "delimiter": ";" }));
    let error = decode_error(&semicolons, b"a;b\n1;2\n3\n");
    assert_eq!(error.to_string(), "CSV line 3: found 1 fields, expected 2");
}

#[test]
fn xml_gives_line_and_column() {
    let project = common::project();
    let xml = common::codec(project.path(), json!("xml"));
    let error = decode_error(&xml, b"<order>\n  <id>1</id>\n  <name>Ann</nam>\n</order>");
    assert!(
        error.to_string().starts_with("XML line 3, column 12: "),
        "{error}"
    );
    let error = decode_error(&xml, b"<order>\n  <id>1</id>\n");
    assert_eq!(
        error.to_string(),
        "XML line 3, column 1: unexpected end of the document: `<order>` is not closed"
    );
    let error = decode_error(&xml, b"<a x=\"1\" x=\"2\"/>");
    assert!(
        error.to_string().starts_with("XML line 1, column 1: "),
        "{error}"
    );
}

#[test]
fn msgpack_gives_the_byte_offset() {
    let project = common::project();
    let msgpack = common::codec(project.path(), json!("msgpack"));
    // A map of two entries with only one.
    let error = decode_error(&msgpack, &[0x82, 0xA1, b'a', 0x01]);
    assert_eq!(
        error.to_string(),
        "MessagePack byte 4: unexpected end of the data"
    );
    // A string of 16 bytes with one.
    let error = decode_error(&msgpack, &[0x91, 0xD9, 0x10, b'a']);
    assert!(matches!(error.position, Some(Position::Byte(_))), "{error}");
}

#[test]
fn avro_gives_the_byte_or_the_record() {
    let project = common::project();
    let raw = common::codec(
        project.path(),
        json!({ "type": "avro", "schema": "schemas/order.avsc", "encoding": "raw" }),
    );
    // `id` (a long) is read; `count` (an int) is a varint that never ends.
    let error = decode_error(&raw, &[0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    assert!(matches!(error.position, Some(Position::Byte(_))), "{error}");
    assert!(error.to_string().starts_with("Avro byte "), "{error}");

    let container = common::codec(
        project.path(),
        json!({ "type": "avro", "schema": "schemas/order.avsc" }),
    );
    let error = decode_error(&container, b"Obj\x01garbage");
    assert!(error.to_string().starts_with("Avro byte 0: "), "{error}");
    let error = decode_error(&container, b"PK\x03\x04 a zip file");
    assert!(
        error
            .to_string()
            .starts_with("Avro byte 0: not a readable Avro container file"),
        "{error}"
    );
}

#[test]
fn protobuf_names_the_field_and_its_offset() {
    let project = common::project();
    let protobuf = common::codec(
        project.path(),
        json!({ "type": "protobuf", "descriptor": "schemas/shop.desc", "message": "shop.Order" }),
    );
    // Field 2 (`customer`), length 5, but one byte follows.
    // Field 2 (`customer`), length 5, but one byte follows.
    let error = decode_error(&protobuf, &[0x08, 0x01, 0x12, 0x05, b'a']);
    assert_eq!(
        error.to_string(),
        "Protobuf byte 2: field `customer` (2): buffer underflow"
    );
    // Field 2 holding bytes that are not UTF-8, after field 1 (`id`).
    let error = decode_error(&protobuf, &[0x08, 0x01, 0x12, 0x01, 0xFF]);
    assert_eq!(
        error.to_string(),
        "Protobuf byte 2: field `customer` (2): invalid string value: data is not UTF-8 encoded"
    );
    // A line (field 6) whose `qty` has the wrong wire type: the top-level field is named.
    let error = decode_error(&protobuf, &[0x32, 0x02, 0x15, 0x01]);
    assert!(
        error
            .to_string()
            .starts_with("Protobuf byte 0: field `lines` (6): "),
        "{error}"
    );

    let error = encode_error(
        &protobuf,
        json!({ "lines": [{ "sku": "a" }, { "qty": "many" }] }),
    );
    assert!(
        error.to_string().starts_with("Protobuf at /lines/1/qty: "),
        "{error}"
    );
    let error = encode_error(&protobuf, json!({ "id": 1, "colour": "red" }));
    assert!(error.to_string().contains("colour"), "{error}");
}

#[test]
fn compressed_input_fails_as_compression_or_format() {
    let project = common::project();
    let gzip_csv = common::codec(
        project.path(),
        json!({ "type": "csv", "compression": "gzip" }),
    );
    let error = decode_error(&gzip_csv, b"id,name\n1,Ann\n");
    assert_eq!(error.format, "gzip");
    // Valid gzip around invalid CSV: the position is in the decompressed text.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(b"a,b\n1,2\n3\n").unwrap();
    let packed_csv = encoder.finish().unwrap();
    let error = decode_error(&gzip_csv, &packed_csv);
    assert_eq!(error.to_string(), "CSV line 3: found 1 fields, expected 2");

    let zstd = common::codec(
        project.path(),
        json!({ "type": "json", "compression": "zstd", "max_decompressed": "1KiB" }),
    );
    let big = zstd.encode(&json!("x".repeat(600))).unwrap();
    assert!(zstd.decode(&big).is_ok());
    let too_big = common::codec(
        project.path(),
        json!({ "type": "json", "compression": "zstd" }),
    )
    .encode(&json!("x".repeat(5000)))
    .unwrap();
    let error = decode_error(&zstd, &too_big);
    assert_eq!(
        error.to_string(),
        "zstd: the data decompresses to more than 1 KiB (`max_decompressed`); refusing to \
         inflate it further"
    );
}
