//! ferry's data formats: bytes to and from a [`serde_json::Value`].
//!
//! A [`Codec`] is built once from a definition's `codec` option ([`CodecConfig`]) and then
//! decodes and encodes passengers' bodies and attachments: JSON, NDJSON, CSV, XML, Avro,
//! Protobuf and MessagePack, optionally inside gzip or zstd. Input that is not valid fails with
//! a [`FormatError`] that names the position (`CSV line 3: found 4 fields, expected 3`).
//!
//! The crate does no I/O except reading an Avro schema or a Protobuf descriptor set when a codec
//! is built. The JSON form of each format is documented in `docs/formats.md`.

mod avro;
mod compression;
mod config;
mod csv;
mod error;
mod json;
mod msgpack;
mod protobuf;
pub mod records;
mod xml;

use std::fs;

use apache_avro::Schema;
use ferry_core::BuildError;
use ferry_core::sandbox::Sandbox;
use prost_reflect::DescriptorPool;
use serde_json::Value;

pub use compression::DEFAULT_MAX_DECOMPRESSED;
pub use config::{AvroEncoding, ByteSize, CodecConfig, CodecOptions, Compression, FormatName};
pub use error::{FormatError, Position};

/// A format (with its options, schema or descriptor) and its compression, ready to decode and
/// encode.
#[derive(Clone, Debug)]
pub struct Codec {
    format: Format,
    compression: Option<Compression>,
    max_decompressed: ByteSize,
}

#[derive(Clone, Debug)]
enum Format {
    Json,
    Ndjson,
    Csv(csv::CsvFormat),
    Xml(xml::XmlFormat),
    Avro(avro::AvroFormat),
    Protobuf(protobuf::ProtobufFormat),
    Msgpack,
    Parquet,
    Xlsx,
}

/// The options each format takes, for "not an option of" messages; `compression` and
/// `max_decompressed` belong to every format.
fn options_of(format: FormatName) -> &'static [&'static str] {
    match format {
        FormatName::Json
        | FormatName::Ndjson
        | FormatName::Msgpack
        | FormatName::Parquet
        | FormatName::Xlsx => &[],
        FormatName::Csv => &["header", "delimiter", "quote", "columns"],
        FormatName::Xml => &["root", "order"],
        FormatName::Avro => &["schema", "encoding"],
        FormatName::Protobuf => &["descriptor", "message"],
    }
}

impl Codec {
    /// Validates `config` and builds the codec, reading an Avro schema or a Protobuf descriptor
    /// set (paths relative to the project directory, inside the client's directories: `files`).
    ///
    /// Errors carry the key path inside the `codec` mapping (`["schema"]`), so the caller
    /// prefixes its own key.
    pub fn build(config: &CodecConfig, files: &Sandbox) -> Result<Codec, BuildError> {
        let options = config.options();
        check_options_belong(options)?;
        if options.compression.is_none() && options.max_decompressed.is_some() {
            return Err(BuildError::at(
                "max_decompressed",
                "only applies with `compression: gzip` or `compression: zstd`",
            ));
        }
        let format = match options.format {
            FormatName::Json => Format::Json,
            FormatName::Ndjson => Format::Ndjson,
            FormatName::Msgpack => Format::Msgpack,
            FormatName::Parquet | FormatName::Xlsx if options.compression.is_some() => {
                return Err(BuildError::at(
                    "compression",
                    format!(
                        "`{}` files compress themselves (Parquet pages with snappy, xlsx as \
                         zip); leave `compression` out",
                        options.format
                    ),
                ));
            }
            FormatName::Parquet => Format::Parquet,
            FormatName::Xlsx => Format::Xlsx,
            FormatName::Csv => Format::Csv(csv_format(options)?),
            FormatName::Xml => {
                if let Some(root) = &options.root
                    && !xml::is_name(root)
                {
                    return Err(BuildError::at(
                        "root",
                        format!("`{root}` is not a valid XML element name"),
                    ));
                }
                let order = options.order.clone().unwrap_or_default();
                if let Some(name) = order.iter().find(|name| !xml::is_name(name)) {
                    return Err(BuildError::at(
                        "order",
                        format!("`{name}` is not a valid XML element name"),
                    ));
                }
                Format::Xml(xml::XmlFormat {
                    root: options.root.clone(),
                    order,
                })
            }
            FormatName::Avro => Format::Avro(avro_format(options, files)?),
            FormatName::Protobuf => Format::Protobuf(protobuf_format(options, files)?),
        };
        Ok(Codec {
            format,
            compression: options.compression,
            max_decompressed: options.max_decompressed.unwrap_or(DEFAULT_MAX_DECOMPRESSED),
        })
    }

    /// Refuses, at build time, a codec that cannot encode: an Avro container codec without a
    /// schema can only read. Components that encode call this in their `build`.
    pub fn check_encode(&self) -> Result<(), BuildError> {
        match &self.format {
            Format::Avro(avro) if avro.schema.is_none() => Err(BuildError::at(
                "schema",
                "encoding Avro needs a `schema` (only reading a container works without one)",
            )),
            _ => Ok(()),
        }
    }

    /// Decodes `bytes` (decompressing them first, within the limit) into a JSON value.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let inflated;
        let bytes = match self.compression {
            Some(compression) => {
                inflated = compression.decompress(bytes, self.max_decompressed)?;
                inflated.as_slice()
            }
            None => bytes,
        };
        match &self.format {
            Format::Json => json::decode_json(bytes),
            Format::Ndjson => json::decode_ndjson(bytes),
            Format::Csv(csv) => csv.decode(bytes),
            Format::Xml(xml) => xml.decode(bytes),
            Format::Avro(avro) => avro.decode(bytes),
            Format::Protobuf(protobuf) => protobuf.decode(bytes),
            Format::Msgpack => msgpack::decode(bytes),
            Format::Parquet => records::parquet::read(bytes),
            Format::Xlsx => records::xlsx::read(bytes),
        }
    }

    /// Encodes `value` (then compresses it, when configured).
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let encoded = match &self.format {
            Format::Json => json::encode_json(value),
            Format::Ndjson => json::encode_ndjson(value),
            Format::Csv(csv) => csv.encode(value),
            Format::Xml(xml) => xml.encode(value),
            Format::Avro(avro) => avro.encode(value),
            Format::Protobuf(protobuf) => protobuf.encode(value),
            Format::Msgpack => msgpack::encode(value),
            Format::Parquet | Format::Xlsx => Err(FormatError::new(
                if matches!(self.format, Format::Parquet) {
                    "Parquet"
                } else {
                    "xlsx"
                },
                "only record batches are written in this format, since it needs typed \
                 columns; turn JSON into records with `decode` and `columns` first",
            )),
        }?;
        match self.compression {
            Some(compression) => compression.compress(&encoded),
            None => Ok(encoded),
        }
    }

    /// The media type of what [`Codec::encode`] produces: the compression's
    /// (`application/gzip`, `application/zstd`) when there is one, else the format's.
    pub fn media_type(&self) -> &'static str {
        match self.compression {
            Some(compression) => compression.media_type(),
            None => self.format_media_type(),
        }
    }

    /// The media type of the format itself, inside any compression: `application/json`,
    /// `application/x-ndjson`, `text/csv`, `application/xml`, `application/avro`,
    /// `application/x-protobuf`, `application/msgpack`.
    pub fn format_media_type(&self) -> &'static str {
        match &self.format {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv(_) => "text/csv",
            Format::Xml(_) => "application/xml",
            Format::Avro(_) => "application/avro",
            Format::Protobuf(_) => "application/x-protobuf",
            Format::Msgpack => "application/msgpack",
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        }
    }

    /// The format's name, as written in definitions.
    pub fn format_name(&self) -> FormatName {
        match &self.format {
            Format::Json => FormatName::Json,
            Format::Ndjson => FormatName::Ndjson,
            Format::Csv(_) => FormatName::Csv,
            Format::Xml(_) => FormatName::Xml,
            Format::Avro(_) => FormatName::Avro,
            Format::Protobuf(_) => FormatName::Protobuf,
            Format::Msgpack => FormatName::Msgpack,
            Format::Parquet => FormatName::Parquet,
            Format::Xlsx => FormatName::Xlsx,
        }
    }

    /// Encodes a record batch (`columns` and its rows in COPY text, as
    /// [`ferry_core::records::read`] gives them), then compresses it when configured. Parquet
    /// and xlsx write typed columns; the other formats write each row as an object (see
    /// [`records`] for the JSON of each type), CSV its text. A field that does not parse as its
    /// column's type names its row and column.
    pub fn encode_records(
        &self,
        columns: &[ferry_core::records::Column],
        data: &[u8],
    ) -> Result<Vec<u8>, FormatError> {
        let rows = records::typed_rows(columns, data).collect::<Result<Vec<_>, _>>()?;
        let encoded = match &self.format {
            Format::Parquet => records::parquet::write(columns, &rows)?,
            Format::Xlsx => records::xlsx::write(columns, &rows)?,
            Format::Csv(csv) => csv.encode_records(columns, &rows)?,
            Format::Json | Format::Ndjson => {
                json::encode_records(columns, &rows, matches!(self.format, Format::Ndjson))?
            }
            _ => {
                let value = serde_json::Value::Array(
                    rows.iter()
                        .map(|cells| records::json_object(columns, cells))
                        .collect(),
                );
                return self.encode(&value);
            }
        };
        match self.compression {
            Some(compression) => compression.compress(&encoded),
            None => Ok(encoded),
        }
    }

    /// Decodes `bytes` (see [`Codec::decode`]) and writes its rows, an array of objects, into
    /// `writer` as values of the writer's columns; the error names the row and the column.
    pub fn decode_records(
        &self,
        bytes: &[u8],
        writer: &mut ferry_core::records::BatchWriter,
    ) -> Result<(), FormatError> {
        let value = self.decode(bytes)?;
        let columns = writer.columns().to_vec();
        records::batch_from_json(&columns, &value, writer)
    }

    /// The compression, if any.
    pub fn compression(&self) -> Option<Compression> {
        self.compression
    }
}

/// Refuses an option given for a format it does not belong to, naming the ones that do.
fn check_options_belong(options: &config::CodecOptions) -> Result<(), BuildError> {
    let given = [
        ("header", options.header.is_some()),
        ("delimiter", options.delimiter.is_some()),
        ("quote", options.quote.is_some()),
        ("columns", options.columns.is_some()),
        ("root", options.root.is_some()),
        ("order", options.order.is_some()),
        ("schema", options.schema.is_some()),
        ("encoding", options.encoding.is_some()),
        ("descriptor", options.descriptor.is_some()),
        ("message", options.message.is_some()),
    ];
    let valid = options_of(options.format);
    for (key, is_given) in given {
        if is_given && !valid.contains(&key) {
            let mut takes: Vec<String> = valid.iter().map(|key| format!("`{key}`")).collect();
            takes.extend(["`compression`".into(), "`max_decompressed`".into()]);
            return Err(BuildError::at(
                key,
                format!(
                    "`{key}` is not an option of `{}`, which takes {}",
                    options.format,
                    takes.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// One ASCII character, for CSV's `delimiter` and `quote`.
fn single_byte(key: &str, value: Option<&str>, default: u8) -> Result<u8, BuildError> {
    match value {
        None => Ok(default),
        Some(text) if text.len() == 1 && text.is_ascii() && text != "\n" && text != "\r" => {
            Ok(text.as_bytes()[0])
        }
        Some(text) => Err(BuildError::at(
            key,
            format!("give one ASCII character other than a line break, not `{text}`"),
        )),
    }
}

fn csv_format(options: &config::CodecOptions) -> Result<csv::CsvFormat, BuildError> {
    let delimiter = single_byte("delimiter", options.delimiter.as_deref(), b',')?;
    let quote = single_byte("quote", options.quote.as_deref(), b'"')?;
    if delimiter == quote {
        return Err(BuildError::at(
            "quote",
            "the quote character must differ from the delimiter",
        ));
    }
    if let Some(columns) = &options.columns {
        if columns.is_empty() {
            return Err(BuildError::at("columns", "give at least one column"));
        }
        let mut seen = std::collections::HashSet::new();
        for column in columns {
            if !seen.insert(column) {
                return Err(BuildError::at(
                    "columns",
                    format!("column `{column}` is listed twice"),
                ));
            }
        }
    }
    Ok(csv::CsvFormat {
        header: options.header.unwrap_or(true),
        delimiter,
        quote,
        columns: options.columns.clone(),
    })
}

/// Reads the file `name` named by `key`, relative to the project, if the client may.
fn read_file(key: &str, name: &str, files: &Sandbox) -> Result<Vec<u8>, BuildError> {
    if name.is_empty() {
        return Err(BuildError::at(key, "the file name is empty"));
    }
    let path = files
        .definition(name)
        .map_err(|message| BuildError::at(key, message))?;
    fs::read(&path).map_err(|error| BuildError::at(key, format!("cannot read `{name}`: {error}")))
}

fn avro_format(
    options: &config::CodecOptions,
    files: &Sandbox,
) -> Result<avro::AvroFormat, BuildError> {
    let encoding = options.encoding.unwrap_or_default();
    let schema = match &options.schema {
        None if encoding == AvroEncoding::Container => None,
        None => {
            return Err(BuildError::at(
                "schema",
                "missing: `single_object` and `raw` Avro need the schema file (`.avsc`)",
            ));
        }
        Some(name) => {
            let text = read_file("schema", name, files)?;
            let text = String::from_utf8(text)
                .map_err(|_| BuildError::at("schema", format!("{name} is not UTF-8 text")))?;
            let schema = Schema::parse_str(&text).map_err(|error| {
                BuildError::at(
                    "schema",
                    format!("{name} is not a valid Avro schema: {error}"),
                )
            })?;
            Some(schema)
        }
    };
    avro::AvroFormat::new(schema, encoding).map_err(|message| {
        BuildError::at(
            "schema",
            format!(
                "{} is not a valid Avro schema: {message}",
                options.schema.as_deref().unwrap_or_default()
            ),
        )
    })
}

fn protobuf_format(
    options: &config::CodecOptions,
    files: &Sandbox,
) -> Result<protobuf::ProtobufFormat, BuildError> {
    let Some(name) = &options.descriptor else {
        return Err(BuildError::at(
            "descriptor",
            "missing: the descriptor set file, as written by \
             `protoc --include_imports --descriptor_set_out=FILE`",
        ));
    };
    let Some(message) = &options.message else {
        return Err(BuildError::at(
            "message",
            "missing: the full name of the message type, e.g. `shop.Order`",
        ));
    };
    let bytes = read_file("descriptor", name, files)?;
    let pool = DescriptorPool::decode(bytes.as_slice()).map_err(|error| {
        BuildError::at(
            "descriptor",
            format!("{name} is not a valid descriptor set: {error}"),
        )
    })?;
    let Some(descriptor) = pool.get_message_by_name(message) else {
        let mut known: Vec<String> = pool
            .all_messages()
            .map(|message| message.full_name().to_string())
            .collect();
        known.sort();
        let listed = if known.len() > 20 {
            format!("{}, … ({} in all)", known[..20].join(", "), known.len())
        } else {
            known.join(", ")
        };
        return Err(BuildError::at(
            "message",
            format!("{name} has no message type `{message}`; it has: {listed}"),
        ));
    };
    Ok(protobuf::ProtobufFormat {
        message: descriptor,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn build(config: Value) -> Result<Codec, BuildError> {
        let config: CodecConfig = serde_json::from_value(config).unwrap();
        Codec::build(
            &config,
            &Sandbox::within(std::path::Path::new("/nonexistent"), ""),
        )
    }

    #[test]
    fn options_of_another_format_are_refused() {
        let error = build(json!({ "type": "json", "delimiter": ";" })).unwrap_err();
        assert_eq!(error.path, ["delimiter"]);
        assert_eq!(
            error.message,
            "`delimiter` is not an option of `json`, which takes `compression`, \
             `max_decompressed`"
        );
        let error = build(json!({ "type": "csv", "schema": "x.avsc" })).unwrap_err();
        assert!(
            error
                .message
                .contains("`header`, `delimiter`, `quote`, `columns`"),
            "{error}"
        );
        let error = build(json!({ "type": "json", "max_decompressed": "1MiB" })).unwrap_err();
        assert_eq!(error.path, ["max_decompressed"]);
    }

    #[test]
    fn csv_options_are_checked() {
        let error = build(json!({ "type": "csv", "delimiter": ";;" })).unwrap_err();
        assert_eq!(error.path, ["delimiter"]);
        let error = build(json!({ "type": "csv", "delimiter": "\n" })).unwrap_err();
        assert_eq!(error.path, ["delimiter"]);
        let error = build(json!({ "type": "csv", "quote": "," })).unwrap_err();
        assert_eq!(error.path, ["quote"]);
        let error = build(json!({ "type": "xml", "root": "1st" })).unwrap_err();
        assert_eq!(error.path, ["root"]);
        let error = build(json!({ "type": "xml", "order": ["EDI_DC40", "a b"] })).unwrap_err();
        assert_eq!(error.path, ["order"]);
        assert!(error.message.contains("`a b`"), "{}", error.message);
        let error = build(json!({ "type": "csv", "order": ["a"] })).unwrap_err();
        assert_eq!(error.path, ["order"]);
        let error = build(json!({ "type": "csv", "columns": ["a", "a"] })).unwrap_err();
        assert_eq!(error.message, "column `a` is listed twice");
        build(json!({ "type": "csv", "delimiter": "\t", "header": false })).unwrap();
    }

    #[test]
    fn files_are_named_in_errors() {
        let error = build(json!({ "type": "avro", "schema": "schemas/order.avsc" })).unwrap_err();
        assert_eq!(error.path, ["schema"]);
        assert!(
            error
                .message
                .starts_with("cannot read `schemas/order.avsc`: "),
            "{error}"
        );
        let error = build(json!({ "type": "avro", "encoding": "raw" })).unwrap_err();
        assert_eq!(error.path, ["schema"]);
        let error = build(json!({ "type": "protobuf", "message": "a.B" })).unwrap_err();
        assert_eq!(error.path, ["descriptor"]);
        let error = build(json!({ "type": "protobuf", "descriptor": "x.desc" })).unwrap_err();
        assert_eq!(error.path, ["message"]);
    }

    #[test]
    fn media_types() {
        let media = |config: Value| build(config).unwrap().media_type();
        assert_eq!(media(json!("json")), "application/json");
        assert_eq!(media(json!("ndjson")), "application/x-ndjson");
        assert_eq!(media(json!("csv")), "text/csv");
        assert_eq!(media(json!("xml")), "application/xml");
        assert_eq!(media(json!("msgpack")), "application/msgpack");
        assert_eq!(media(json!("avro")), "application/avro");
        let gzip = build(json!({ "type": "csv", "compression": "gzip" })).unwrap();
        assert_eq!(gzip.media_type(), "application/gzip");
        assert_eq!(gzip.format_media_type(), "text/csv");
    }

    #[test]
    fn compression_wraps_the_format() {
        let codec = build(json!({ "type": "ndjson", "compression": "zstd" })).unwrap();
        let value = json!([{ "a": 1 }, { "a": 2 }]);
        let bytes = codec.encode(&value).unwrap();
        assert_eq!(&bytes[..4], [0x28, 0xB5, 0x2F, 0xFD], "zstd magic");
        assert_eq!(codec.decode(&bytes).unwrap(), value);
        let error = codec.decode(b"{\"a\":1}").unwrap_err();
        assert_eq!(error.format, "zstd");
    }

    #[test]
    fn a_schemaless_avro_codec_can_only_read() {
        let codec = build(json!("avro")).unwrap();
        let error = codec.check_encode().unwrap_err();
        assert_eq!(error.path, ["schema"]);
        assert!(build(json!("json")).unwrap().check_encode().is_ok());
    }
}
