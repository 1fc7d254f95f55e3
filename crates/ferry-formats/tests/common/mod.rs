//! Fixtures shared by the integration tests: schema and descriptor files written to a temporary
//! project directory, and codecs built from them the way a definition would.

#![allow(dead_code)]

use std::path::Path;

use ferry_formats::{Codec, CodecConfig};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, EnumValueDescriptorProto, FieldDescriptorProto,
    FileDescriptorProto, FileDescriptorSet, MessageOptions,
};
use serde_json::Value;

/// An Avro schema with every kind of type ferry maps: primitives, a nested record referenced
/// by name, a union, an enum, an array, a map, fixed and logical types.
pub const ORDER_AVSC: &str = r#"{
  "type": "record", "name": "Order", "namespace": "shop",
  "fields": [
    { "name": "id", "type": "long" },
    { "name": "count", "type": "int" },
    { "name": "paid", "type": "boolean" },
    { "name": "customer", "type": ["null", "string"] },
    { "name": "status", "type": { "type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"] } },
    { "name": "amount", "type": { "type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2 } },
    { "name": "placed", "type": { "type": "long", "logicalType": "timestamp-millis" } },
    { "name": "day", "type": { "type": "int", "logicalType": "date" } },
    { "name": "ratio", "type": "float" },
    { "name": "weight", "type": "double" },
    { "name": "digest", "type": { "type": "fixed", "name": "Digest", "size": 4 } },
    { "name": "blob", "type": "bytes" },
    { "name": "lines", "type": { "type": "array", "items": {
        "type": "record", "name": "Line", "fields": [
          { "name": "sku", "type": "string" },
          { "name": "qty", "type": "int" }
        ] } } },
    { "name": "next", "type": ["null", "Line"] },
    { "name": "tags", "type": { "type": "map", "values": "string" } }
  ]
}"#;

/// `shop.proto`, as `protoc --include_imports --descriptor_set_out` would describe it:
///
/// ```proto
/// syntax = "proto3";
/// package shop;
/// enum Status { NEW = 0; PAID = 1; SHIPPED = 2; }
/// message Line { string sku = 1; int32 qty = 2; }
/// message Order {
///   int64 id = 1; string customer = 2; double amount = 3; bool paid = 4; Status status = 5;
///   repeated Line lines = 6; map<string, string> tags = 7; bytes digest = 8;
///   uint32 count = 9; float ratio = 10; sint64 price_delta = 11;
/// }
/// ```
pub fn shop_descriptor_set() -> Vec<u8> {
    fn field(name: &str, number: i32, kind: Type, type_name: Option<&str>) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(kind as i32),
            type_name: type_name.map(String::from),
            ..FieldDescriptorProto::default()
        }
    }
    fn repeated(mut field: FieldDescriptorProto) -> FieldDescriptorProto {
        field.label = Some(Label::Repeated as i32);
        field
    }
    let status = EnumDescriptorProto {
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
    let line = DescriptorProto {
        name: Some("Line".into()),
        field: vec![
            field("sku", 1, Type::String, None),
            field("qty", 2, Type::Int32, None),
        ],
        ..DescriptorProto::default()
    };
    let tags_entry = DescriptorProto {
        name: Some("TagsEntry".into()),
        field: vec![
            field("key", 1, Type::String, None),
            field("value", 2, Type::String, None),
        ],
        options: Some(MessageOptions {
            map_entry: Some(true),
            ..MessageOptions::default()
        }),
        ..DescriptorProto::default()
    };
    let order = DescriptorProto {
        name: Some("Order".into()),
        field: vec![
            field("id", 1, Type::Int64, None),
            field("customer", 2, Type::String, None),
            field("amount", 3, Type::Double, None),
            field("paid", 4, Type::Bool, None),
            field("status", 5, Type::Enum, Some(".shop.Status")),
            repeated(field("lines", 6, Type::Message, Some(".shop.Line"))),
            repeated(field(
                "tags",
                7,
                Type::Message,
                Some(".shop.Order.TagsEntry"),
            )),
            field("digest", 8, Type::Bytes, None),
            field("count", 9, Type::Uint32, None),
            field("ratio", 10, Type::Float, None),
            field("price_delta", 11, Type::Sint64, None),
        ],
        nested_type: vec![tags_entry],
        ..DescriptorProto::default()
    };
    let file = FileDescriptorProto {
        name: Some("shop.proto".into()),
        package: Some("shop".into()),
        message_type: vec![line, order],
        enum_type: vec![status],
        syntax: Some("proto3".into()),
        ..FileDescriptorProto::default()
    };
    FileDescriptorSet { file: vec![file] }.encode_to_vec()
}

/// A project directory with `schemas/order.avsc` and `schemas/shop.desc`.
pub fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap();
    std::fs::write(schemas.join("order.avsc"), ORDER_AVSC).unwrap();
    std::fs::write(schemas.join("shop.desc"), shop_descriptor_set()).unwrap();
    dir
}

/// A codec from its `codec:` definition, as JSON.
pub fn codec(project: &Path, config: Value) -> Codec {
    let config: CodecConfig = serde_json::from_value(config).unwrap();
    Codec::build(&config, &ferry_core::sandbox::Sandbox::within(project, "")).unwrap()
}
