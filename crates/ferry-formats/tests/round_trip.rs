//! Property tests: `decode(encode(value)) == value` for every format, over generated values in
//! the shape each format's JSON mapping produces (see `docs/formats.md`).

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, NaiveDate, SecondsFormat};
use ferry_formats::Codec;
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

/// Runs `cases` generated values through every codec: encode, then decode, must give the value
/// back. Shrinks to the smallest failing value.
fn round_trips<S: Strategy<Value = Value>>(codecs: &[Codec], values: S) {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        ..Config::default()
    });
    runner
        .run(&values, |value| {
            for codec in codecs {
                let bytes = codec
                    .encode(&value)
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
                let back = codec
                    .decode(&bytes)
                    .map_err(|error| TestCaseError::fail(error.to_string()))?;
                prop_assert_eq!(&back, &value, "{:?}", codec.format_name());
            }
            Ok(())
        })
        .unwrap();
}

/// Any JSON value: nested arrays and objects, integers over the whole i64 and u64 ranges,
/// finite floats, any Unicode text.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::Array),
            btree_map(any::<String>(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

#[test]
fn json() {
    let project = common::project();
    let codecs = [
        common::codec(project.path(), json!("json")),
        common::codec(
            project.path(),
            json!({ "type": "json", "compression": "gzip" }),
        ),
        common::codec(
            project.path(),
            json!({ "type": "json", "compression": "zstd" }),
        ),
    ];
    round_trips(&codecs, json_value());
}

#[test]
fn ndjson() {
    let project = common::project();
    let codecs = [
        common::codec(project.path(), json!("ndjson")),
        common::codec(
            project.path(),
            json!({ "type": "ndjson", "compression": "gzip" }),
        ),
    ];
    round_trips(&codecs, vec(json_value(), 0..10).prop_map(Value::Array));
}

#[test]
fn msgpack() {
    let project = common::project();
    let codecs = [
        common::codec(project.path(), json!("msgpack")),
        common::codec(
            project.path(),
            json!({ "type": "msgpack", "compression": "zstd" }),
        ),
    ];
    round_trips(&codecs, json_value());
}

/// CSV text: anything but a leading byte order mark, which decoding drops as Windows tools
/// write one.
fn csv_text() -> impl Strategy<Value = String> {
    any::<String>().prop_filter("no leading BOM", |text| !text.starts_with('\u{FEFF}'))
}

#[test]
fn csv_with_header() {
    let project = common::project();
    let codecs = [
        common::codec(project.path(), json!("csv")),
        common::codec(
            project.path(),
            json!({ "type": "csv", "delimiter": ";", "quote": "'", "compression": "gzip" }),
        ),
        common::codec(project.path(), json!({ "type": "csv", "delimiter": "\t" })),
    ];
    // Rows are objects of strings sharing one set of keys.
    let rows = btree_set(csv_text(), 1..6).prop_flat_map(|columns| {
        let columns: Vec<String> = columns.into_iter().collect();
        let width = columns.len();
        vec(vec(any::<String>(), width), 0..8).prop_map(move |rows| {
            let rows = rows.into_iter().map(|fields| {
                let row: Map<String, Value> = columns
                    .iter()
                    .cloned()
                    .zip(fields.into_iter().map(Value::String))
                    .collect();
                Value::Object(row)
            });
            Value::Array(rows.collect())
        })
    });
    round_trips(&codecs, rows);
}

#[test]
fn csv_without_header() {
    let project = common::project();
    let codecs = [
        common::codec(project.path(), json!({ "type": "csv", "header": false })),
        common::codec(
            project.path(),
            json!({ "type": "csv", "header": false, "delimiter": "|" }),
        ),
    ];
    // Rows are arrays of strings, all of one length.
    let rows = (1..6usize).prop_flat_map(|width| {
        vec(vec(csv_text(), width), 0..8).prop_map(|rows| {
            let rows = rows
                .into_iter()
                .map(|fields| Value::Array(fields.into_iter().map(Value::String).collect()));
            Value::Array(rows.collect())
        })
    });
    round_trips(&codecs, rows);
}

/// Text that XML can hold: no control characters other than tab and line breaks.
fn xml_text() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|text| {
        text.chars()
            .filter(|&c| {
                matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
            })
            .collect()
    })
}

fn xml_name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_.-]{0,6}(:[a-z]{1,3})?"
}

/// An element as the XML convention decodes it: text, or an object of attributes, children
/// (repeated ones as arrays of two or more) and text (trimmed when there are children).
fn xml_element() -> impl Strategy<Value = Value> {
    let leaf = xml_text().prop_map(Value::String);
    leaf.prop_recursive(3, 32, 4, |element| {
        let child = prop_oneof![element.clone(), vec(element, 2..4).prop_map(Value::Array),];
        (
            btree_map(xml_name(), xml_text(), 0..3),
            btree_map(xml_name(), child, 0..4),
            xml_text(),
        )
            .prop_map(|(attributes, children, text)| {
                let mut object = Map::new();
                for (name, value) in attributes {
                    object.insert(format!("@{name}"), Value::String(value));
                }
                let has_children = !children.is_empty();
                object.extend(children);
                let text = if has_children {
                    text.trim()
                } else {
                    text.as_str()
                };
                if object.is_empty() {
                    return Value::String(text.to_string());
                }
                if !text.is_empty() {
                    object.insert("#text".into(), Value::String(text.to_string()));
                }
                Value::Object(object)
            })
    })
}

#[test]
fn xml() {
    let project = common::project();
    let plain = [
        common::codec(project.path(), json!("xml")),
        common::codec(
            project.path(),
            json!({ "type": "xml", "compression": "gzip" }),
        ),
    ];
    let documents = (xml_name(), xml_element())
        .prop_map(|(root, element)| Value::Object(Map::from_iter([(root, element)])));
    round_trips(&plain, documents);

    let rooted = [common::codec(
        project.path(),
        json!({ "type": "xml", "root": "export" }),
    )];
    round_trips(&rooted, xml_element());
}

/// A `shop.Line` record.
fn avro_line() -> impl Strategy<Value = Value> {
    (any::<String>(), any::<i32>()).prop_map(|(sku, qty)| json!({ "sku": sku, "qty": qty }))
}

/// A `shop.Order` record (`common::ORDER_AVSC`) in its JSON form.
fn avro_order() -> impl Strategy<Value = Value> {
    let scalars = (
        any::<i64>(),
        any::<i32>(),
        any::<bool>(),
        proptest::option::of(any::<String>()),
        prop::sample::select(vec!["NEW", "PAID", "SHIPPED"]),
        // Up to 12 digits: the decimal's precision.
        -999_999_999_999i64..=999_999_999_999,
        // Milliseconds from year 1 to year 9999, what RFC 3339 can write.
        -62_135_596_800_000i64..253_402_300_800_000,
        -1_000_000i32..1_000_000,
    );
    let rest = (
        any::<f32>().prop_filter("finite", |f| f.is_finite()),
        prop_oneof![
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            Just(json!("NaN")),
            Just(json!("-Infinity")),
        ],
        any::<[u8; 4]>(),
        vec(any::<u8>(), 0..20),
        vec(avro_line(), 0..4),
        proptest::option::of(avro_line()),
        btree_map(any::<String>(), any::<String>(), 0..4),
    );
    (scalars, rest).prop_map(
        |(
            (id, count, paid, customer, status, cents, placed, day),
            (ratio, weight, digest, blob, lines, next, tags),
        )| {
            let sign = if cents < 0 { "-" } else { "" };
            let amount = format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100);
            let placed = DateTime::from_timestamp_millis(placed)
                .unwrap()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            let day = (NaiveDate::default() + chrono::Duration::days(i64::from(day)))
                .format("%Y-%m-%d")
                .to_string();
            json!({
                "id": id, "count": count, "paid": paid, "customer": customer,
                "status": status, "amount": amount, "placed": placed, "day": day,
                "ratio": f64::from(ratio), "weight": weight,
                "digest": BASE64.encode(digest), "blob": BASE64.encode(blob),
                "lines": lines, "next": next, "tags": tags,
            })
        },
    )
}

#[test]
fn avro() {
    let project = common::project();
    let schema = "schemas/order.avsc";
    let single = [
        common::codec(
            project.path(),
            json!({ "type": "avro", "schema": schema, "encoding": "single_object" }),
        ),
        common::codec(
            project.path(),
            json!({ "type": "avro", "schema": schema, "encoding": "raw" }),
        ),
    ];
    round_trips(&single, avro_order());
    let container = [
        common::codec(project.path(), json!({ "type": "avro", "schema": schema })),
        common::codec(
            project.path(),
            json!({ "type": "avro", "schema": schema, "compression": "zstd" }),
        ),
    ];
    round_trips(&container, vec(avro_order(), 0..5).prop_map(Value::Array));
}

/// A `shop.Line` message in canonical JSON: fields at their default are absent.
fn proto_line() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(".+"),
        proptest::option::of(any::<i32>().prop_filter("not default", |q| *q != 0)),
    )
        .prop_map(|(sku, qty)| {
            let mut line = Map::new();
            if let Some(sku) = sku {
                line.insert("sku".into(), json!(sku));
            }
            if let Some(qty) = qty {
                line.insert("qty".into(), json!(qty));
            }
            Value::Object(line)
        })
}

/// A `shop.Order` message (`common::shop_descriptor_set`) in canonical JSON.
fn proto_order() -> impl Strategy<Value = Value> {
    let nonzero_f64 =
        any::<f64>().prop_filter("finite, not default", |f| f.is_finite() && *f != 0.0);
    let nonzero_f32 =
        any::<f32>().prop_filter("finite, not default", |f| f.is_finite() && *f != 0.0);
    (
        proptest::option::of(any::<i64>().prop_filter("not default", |i| *i != 0)),
        proptest::option::of(".+"),
        proptest::option::of(nonzero_f64),
        proptest::option::of(Just(true)),
        proptest::option::of(prop::sample::select(vec!["PAID", "SHIPPED"])),
        vec(proto_line(), 0..4),
        btree_map(any::<String>(), any::<String>(), 0..4),
        vec(any::<u8>(), 0..16),
        proptest::option::of(any::<u32>().prop_filter("not default", |c| *c != 0)),
        proptest::option::of(nonzero_f32),
        proptest::option::of(any::<i64>().prop_filter("not default", |i| *i != 0)),
    )
        .prop_map(
            |(id, customer, amount, paid, status, lines, tags, digest, count, ratio, delta)| {
                let mut order = Map::new();
                let mut put = |key: &str, value: Option<Value>| {
                    if let Some(value) = value {
                        order.insert(key.into(), value);
                    }
                };
                put("id", id.map(Value::from));
                put("customer", customer.map(Value::from));
                put("amount", amount.map(Value::from));
                put("paid", paid.map(Value::from));
                put("status", status.map(Value::from));
                put("lines", (!lines.is_empty()).then_some(Value::Array(lines)));
                put("tags", (!tags.is_empty()).then(|| json!(tags)));
                put(
                    "digest",
                    (!digest.is_empty()).then(|| json!(BASE64.encode(digest))),
                );
                put("count", count.map(Value::from));
                put("ratio", ratio.map(|r| Value::from(f64::from(r))));
                put("price_delta", delta.map(Value::from));
                Value::Object(order)
            },
        )
}

#[test]
fn protobuf() {
    let project = common::project();
    let codecs = [
        common::codec(
            project.path(),
            json!({ "type": "protobuf", "descriptor": "schemas/shop.desc", "message": "shop.Order" }),
        ),
        common::codec(
            project.path(),
            json!({
                "type": "protobuf", "descriptor": "schemas/shop.desc", "message": "shop.Order",
                "compression": "gzip",
            }),
        ),
    ];
    round_trips(&codecs, proto_order());
}
