//! Decode and encode throughput of every format, in MB/s, over 10,000 generated order records
//! of about 500 bytes each (as compact JSON).
//!
//! ```sh
//! cargo run --release -p ferry-formats --example format_throughput
//! ```
//!
//! MB/s is megabytes (10^6 bytes) of the format's own encoded size per second, except for the
//! compressed rows (`json+gzip`, …), which count the uncompressed JSON so that they compare with
//! the `json` row. Each number is the best of at least five rounds (ten seconds) in which every
//! format is timed once, interleaved, so that noise on a shared machine hits all formats alike.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_formats::{Codec, CodecConfig};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet,
};
use serde_json::{Value, json};

const RECORDS: usize = 10_000;

const ORDER_AVSC: &str = r#"{
  "type": "record", "name": "Order", "namespace": "bench",
  "fields": [
    { "name": "id", "type": "long" },
    { "name": "customer", "type": "string" },
    { "name": "email", "type": "string" },
    { "name": "status", "type": { "type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"] } },
    { "name": "amount", "type": "double" },
    { "name": "qty", "type": "int" },
    { "name": "paid", "type": "boolean" },
    { "name": "placed", "type": "string" },
    { "name": "city", "type": "string" },
    { "name": "country", "type": "string" },
    { "name": "note", "type": "string" },
    { "name": "tags", "type": { "type": "array", "items": "string" } }
  ]
}"#;

/// One order of about 500 bytes as compact JSON.
fn order(i: usize) -> Value {
    let cities = [
        "Berlin",
        "Lisboa",
        "Tallinn",
        "Zürich",
        "Kraków",
        "Marseille",
    ];
    let statuses = ["NEW", "PAID", "SHIPPED"];
    let countries = ["DE", "PT", "EE", "CH", "PL", "FR"];
    let tags = ["b2b", "priority", "eu"];
    let words = [
        "deliver",
        "between",
        "nine",
        "and",
        "five",
        "ring",
        "twice",
        "parcel",
        "fragile",
        "leave",
        "with",
        "neighbour",
        "invoice",
        "attached",
        "thanks",
    ];
    let note: Vec<&str> = (0..36)
        .map(|k| words[(i * 7 + k * 3) % words.len()])
        .collect();
    json!({
        "id": 1_000_000 + i as i64,
        "customer": format!("Customer {:05}", i % 50_000),
        "email": format!("customer{:05}@example.com", i % 50_000),
        "status": statuses[i % 3],
        "amount": (i % 100_000) as f64 * 1.37 + 0.25,
        "qty": (i % 17) as i64 + 1,
        "paid": i.is_multiple_of(2),
        "placed": format!("2024-{:02}-{:02}T{:02}:{:02}:{:02}.000Z", i % 12 + 1, i % 28 + 1, i % 24, i % 60, (i * 7) % 60),
        "city": cities[i % cities.len()],
        "country": countries[i % countries.len()],
        "note": note.join(" "),
        "tags": &tags[..(i % 3) + 1],
    })
}

/// The descriptor set of `message Orders { repeated Order orders = 1; }` with `Order` as above.
fn descriptor_set() -> Vec<u8> {
    fn field(name: &str, number: i32, kind: Type) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            ..FieldDescriptorProto::default()
        }
    }
    let mut status = field("status", 4, Type::Enum);
    status.type_name = Some(".bench.Status".into());
    let mut tags = field("tags", 12, Type::String);
    tags.label = Some(Label::Repeated as i32);
    let order = DescriptorProto {
        name: Some("Order".into()),
        field: vec![
            field("id", 1, Type::Int64),
            field("customer", 2, Type::String),
            field("email", 3, Type::String),
            status,
            field("amount", 5, Type::Double),
            field("qty", 6, Type::Int32),
            field("paid", 7, Type::Bool),
            field("placed", 8, Type::String),
            field("city", 9, Type::String),
            field("country", 10, Type::String),
            field("note", 11, Type::String),
            tags,
        ],
        ..DescriptorProto::default()
    };
    let mut orders_field = field("orders", 1, Type::Message);
    orders_field.label = Some(Label::Repeated as i32);
    orders_field.type_name = Some(".bench.Order".into());
    let orders = DescriptorProto {
        name: Some("Orders".into()),
        field: vec![orders_field],
        ..DescriptorProto::default()
    };
    let status_enum = EnumDescriptorProto {
        name: Some("Status".into()),
        value: ["NEW", "PAID", "SHIPPED"]
            .iter()
            .enumerate()
            .map(|(number, name)| EnumValueDescriptorProto {
                name: Some((*name).into()),
                number: Some(number as i32),
                ..EnumValueDescriptorProto::default()
            })
            .collect(),
        ..EnumDescriptorProto::default()
    };
    let file = FileDescriptorProto {
        name: Some("bench.proto".into()),
        package: Some("bench".into()),
        message_type: vec![order, orders],
        enum_type: vec![status_enum],
        syntax: Some("proto3".into()),
        ..FileDescriptorProto::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

fn codec(project: &Path, config: Value) -> Codec {
    let config: CodecConfig = serde_json::from_value(config).expect("a valid codec option");
    Codec::build(&config, &ferry_core::sandbox::Sandbox::within(project, ""))
        .expect("the codec builds")
}

/// How long `f` takes.
fn time(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn megabytes_per_second(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64()
}

fn main() {
    let project = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(project.path().join("order.avsc"), ORDER_AVSC).expect("schema written");
    std::fs::write(project.path().join("bench.desc"), descriptor_set())
        .expect("descriptor written");

    let records: Vec<Value> = (0..RECORDS).map(order).collect();
    let array = Value::Array(records.clone());
    let json_size = serde_json::to_vec(&array).expect("JSON").len();
    println!(
        "{RECORDS} records, {:.0} bytes each as JSON ({:.1} MB)\n",
        json_size as f64 / RECORDS as f64,
        json_size as f64 / 1e6
    );

    // (label, codec, value, count the JSON size instead of the encoded size)
    let path = project.path();
    let cases = [
        ("json", codec(path, json!("json")), array.clone(), false),
        ("ndjson", codec(path, json!("ndjson")), array.clone(), false),
        ("csv", codec(path, json!("csv")), array.clone(), false),
        (
            "xml",
            codec(path, json!("xml")),
            json!({ "orders": { "order": records } }),
            false,
        ),
        (
            "avro",
            codec(path, json!({ "type": "avro", "schema": "order.avsc" })),
            array.clone(),
            false,
        ),
        (
            "protobuf",
            codec(
                path,
                json!({ "type": "protobuf", "descriptor": "bench.desc", "message": "bench.Orders" }),
            ),
            json!({ "orders": array }),
            false,
        ),
        (
            "msgpack",
            codec(path, json!("msgpack")),
            array.clone(),
            false,
        ),
        (
            "json+gzip",
            codec(path, json!({ "type": "json", "compression": "gzip" })),
            array.clone(),
            true,
        ),
        (
            "json+zstd",
            codec(path, json!({ "type": "json", "compression": "zstd" })),
            array.clone(),
            true,
        ),
    ];

    // Rounds that each time every format once, interleaved, keeping each format's best time:
    // on a shared machine a slow second then hurts all formats alike instead of the one that
    // happened to be measured during it.
    let encoded: Vec<Vec<u8>> = cases
        .iter()
        .map(|(label, codec, value, _)| {
            let bytes = codec.encode(value).expect("encodes");
            let decoded = codec.decode(&bytes).expect("decodes");
            assert!(
                decoded.is_array() || decoded.is_object(),
                "{label} decoded to {decoded}"
            );
            bytes
        })
        .collect();
    let mut best = vec![(Duration::MAX, Duration::MAX); cases.len()];
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 5 || started.elapsed() < Duration::from_secs(10) {
        for (index, (_, codec, value, _)) in cases.iter().enumerate() {
            let decode = time(|| {
                std::hint::black_box(codec.decode(&encoded[index]).expect("decodes"));
            });
            let encode = time(|| {
                std::hint::black_box(codec.encode(value).expect("encodes"));
            });
            best[index].0 = best[index].0.min(decode);
            best[index].1 = best[index].1.min(encode);
        }
        rounds += 1;
    }

    println!(
        "{:<10} {:>12} {:>12} {:>12}",
        "format", "decode MB/s", "encode MB/s", "size MB"
    );
    for (index, (label, _, _, count_json)) in cases.iter().enumerate() {
        let size = encoded[index].len();
        let counted = if *count_json { json_size } else { size };
        let (decode, encode) = best[index];
        println!(
            "{label:<10} {:>12.1} {:>12.1} {:>12.2}",
            megabytes_per_second(counted, decode),
            megabytes_per_second(counted, encode),
            size as f64 / 1e6
        );
    }
    println!("\n(best of {rounds} interleaved rounds)");
}
