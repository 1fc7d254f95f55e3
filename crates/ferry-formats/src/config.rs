//! The `codec` option as written in definitions: a format name, or a mapping with the format's
//! options. [`crate::Codec::build`] validates it.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess};

/// How bytes become a JSON value and back: a format name (`codec: csv`) or a mapping with a
/// `type` and that format's options (`codec: { type: csv, delimiter: ";" }`).
///
/// Every option is parsed for every format, then [`crate::Codec::build`] refuses an option that
/// does not belong to the `type`, naming the options that do. See `docs/formats.md`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodecOptions {
    /// The format: `json`, `ndjson`, `csv`, `xml`, `avro`, `protobuf`, `msgpack`, `parquet` or
    /// `xlsx`.
    #[serde(rename = "type")]
    pub format: FormatName,
    /// Compression around the format: `gzip` or `zstd`. Default: none.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// With `compression`: the most bytes one input may decompress to, as a number of bytes or
    /// with a unit (`512KiB`, `256MiB`, `1GiB`, `100MB`). Default `256MiB`. Input that would
    /// inflate beyond it fails instead of filling the memory.
    #[serde(default)]
    pub max_decompressed: Option<ByteSize>,
    /// CSV: the first line names the columns. Default `true`.
    #[serde(default)]
    pub header: Option<bool>,
    /// CSV: the field separator, one ASCII character. Default `,`.
    #[serde(default)]
    pub delimiter: Option<String>,
    /// CSV: the quote character, one ASCII character. Default `"`.
    #[serde(default)]
    pub quote: Option<String>,
    /// CSV: the columns, in order. Encoding writes these columns in this order (other keys are
    /// left out); decoding a file without a header names its fields with them. Default: the
    /// header on decode, every key of the rows on encode.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// XML: the name of the root element. Decoding checks it and returns its content; encoding
    /// wraps the value in it. Default: the value is an object with the root element's name as
    /// its only key.
    #[serde(default)]
    pub root: Option<String>,
    /// XML: element names written first, in this order, wherever they are siblings (an IDoc's
    /// `EDI_DC40` before its segments, a schema's sequence); other children follow in
    /// alphabetical order. Default none (alphabetical).
    #[serde(default)]
    pub order: Option<Vec<String>>,
    /// Avro: the schema file (`.avsc`), relative to the project directory. Required for
    /// `single_object` and `raw`, and for encoding; a container file carries its own schema,
    /// so decoding one works without (with it, records are resolved to this schema).
    #[serde(default)]
    pub schema: Option<String>,
    /// Avro: `container` (an object container file, default), `single_object` (the 10-byte
    /// single-object header and one datum) or `raw` (one datum, nothing else).
    #[serde(default)]
    pub encoding: Option<AvroEncoding>,
    /// Protobuf: the descriptor set file (`protoc --include_imports --descriptor_set_out`),
    /// relative to the project directory. Required.
    #[serde(default)]
    pub descriptor: Option<String>,
    /// Protobuf: the full name of the message type, e.g. `shop.Order`. Required.
    #[serde(default)]
    pub message: Option<String>,
}

/// The `codec` option: a format name, or the format with options. Both spellings deserialize to
/// the same [`CodecOptions`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecConfig(pub CodecOptions);

impl CodecConfig {
    /// A format with every option at its default.
    pub fn new(format: FormatName) -> Self {
        CodecConfig(CodecOptions {
            format,
            ..CodecOptions::default()
        })
    }

    /// The options.
    pub fn options(&self) -> &CodecOptions {
        &self.0
    }
}

impl From<CodecOptions> for CodecConfig {
    fn from(options: CodecOptions) -> Self {
        CodecConfig(options)
    }
}

// By hand rather than `untagged`, so that a wrong value says what would be right instead of
// "data did not match any variant", and so that errors inside the mapping keep their key path.
impl<'de> Deserialize<'de> for CodecConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl<'de> de::Visitor<'de> for Visitor {
            type Value = CodecConfig;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    formatter,
                    "a format name ({}) or a mapping such as `{{ type: csv, delimiter: \";\" }}`",
                    FormatName::NAMES.join(", ")
                )
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<CodecConfig, E> {
                value
                    .parse::<FormatName>()
                    .map(CodecConfig::new)
                    .map_err(E::custom)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CodecConfig, A::Error> {
                CodecOptions::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(CodecConfig)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// A format ferry can read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FormatName {
    #[default]
    Json,
    Ndjson,
    Csv,
    Xml,
    Avro,
    Protobuf,
    Msgpack,
    /// Columnar files; record batches are written natively, any file read to JSON rows.
    Parquet,
    /// Excel workbooks (the first sheet).
    Xlsx,
}

impl FormatName {
    /// Every format's name, as written in definitions.
    pub const NAMES: [&'static str; 9] = [
        "json", "ndjson", "csv", "xml", "avro", "protobuf", "msgpack", "parquet", "xlsx",
    ];

    /// The name as written in definitions.
    pub fn as_str(self) -> &'static str {
        match self {
            FormatName::Json => "json",
            FormatName::Ndjson => "ndjson",
            FormatName::Csv => "csv",
            FormatName::Xml => "xml",
            FormatName::Avro => "avro",
            FormatName::Protobuf => "protobuf",
            FormatName::Msgpack => "msgpack",
            FormatName::Parquet => "parquet",
            FormatName::Xlsx => "xlsx",
        }
    }
}

impl fmt::Display for FormatName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FormatName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Ok(match name {
            "json" => FormatName::Json,
            "ndjson" => FormatName::Ndjson,
            "csv" => FormatName::Csv,
            "xml" => FormatName::Xml,
            "avro" => FormatName::Avro,
            "protobuf" => FormatName::Protobuf,
            "msgpack" => FormatName::Msgpack,
            "parquet" => FormatName::Parquet,
            "xlsx" => FormatName::Xlsx,
            _ => {
                return Err(format!(
                    "unknown codec type `{name}`; valid types are: {}",
                    FormatName::NAMES.join(", ")
                ));
            }
        })
    }
}

impl<'de> Deserialize<'de> for FormatName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

/// Compression around a format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// gzip (RFC 1952); decoding also reads several concatenated gzip members.
    Gzip,
    /// Zstandard.
    Zstd,
}

/// How Avro data is framed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvroEncoding {
    /// An object container file: header with the schema, then blocks of records. Decodes to an
    /// array of records; encodes an array.
    #[default]
    Container,
    /// Single-object encoding: `C3 01`, the schema's 8-byte CRC-64-AVRO fingerprint, one datum.
    SingleObject,
    /// One binary datum without any header.
    Raw,
}

/// A number of bytes, written as a number or with a unit: `512KiB`, `256MiB`, `1GiB`, `100MB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    const FORMS: &'static str = "a number of bytes or a size such as 512KiB, 256MiB, 1GiB, 100MB";
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let invalid = || format!("invalid size `{text}`: write {}", ByteSize::FORMS);
        let number: u64 = number.parse().map_err(|_| invalid())?;
        let factor: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1000,
            "MB" => 1000 * 1000,
            "GB" => 1000 * 1000 * 1000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(invalid()),
        };
        number
            .checked_mul(factor)
            .map(ByteSize)
            .ok_or_else(|| format!("size `{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if bytes >= size && bytes.is_multiple_of(size) {
                return write!(f, "{} {unit}", bytes / size);
            }
        }
        write!(f, "{bytes} bytes")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str(ByteSize::FORMS)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<ByteSize, E> {
                u64::try_from(value)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative: {value}")))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<ByteSize, E> {
                value.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: serde_json::Value) -> Result<CodecConfig, String> {
        serde_json::from_value(value).map_err(|error| error.to_string())
    }

    #[test]
    fn a_bare_name_or_a_mapping() {
        assert_eq!(
            parse(json!("csv")).unwrap(),
            CodecConfig::new(FormatName::Csv)
        );
        let config = parse(json!({ "type": "csv", "delimiter": ";", "header": false })).unwrap();
        assert_eq!(config.0.format, FormatName::Csv);
        assert_eq!(config.0.delimiter.as_deref(), Some(";"));
        assert_eq!(config.0.header, Some(false));
        let config = parse(json!({ "type": "json", "compression": "gzip" })).unwrap();
        assert_eq!(config.0.compression, Some(Compression::Gzip));
    }

    #[test]
    fn unknown_types_and_keys_say_what_is_valid() {
        let error = parse(json!("yaml")).unwrap_err();
        assert!(
            error.contains(
                "unknown codec type `yaml`; valid types are: json, ndjson, csv, xml, avro, \
                 protobuf, msgpack, parquet, xlsx"
            ),
            "{error}"
        );
        let error = parse(json!({ "type": "orc" })).unwrap_err();
        assert!(error.contains("valid types are"), "{error}");
        let error = parse(json!({ "type": "csv", "separator": ";" })).unwrap_err();
        assert!(error.contains("unknown field `separator`"), "{error}");
        let error = parse(json!({ "delimiter": ";" })).unwrap_err();
        assert!(error.contains("missing field `type`"), "{error}");
        let error = parse(json!({ "type": "json", "compression": "bzip2" })).unwrap_err();
        assert!(error.contains("expected `gzip` or `zstd`"), "{error}");
        let error = parse(json!(3)).unwrap_err();
        assert!(error.contains("a format name (json, ndjson"), "{error}");
    }

    #[test]
    fn sizes_with_units() {
        assert_eq!("1024".parse::<ByteSize>().unwrap(), ByteSize(1024));
        assert_eq!("256MiB".parse::<ByteSize>().unwrap(), ByteSize(256 << 20));
        assert_eq!("100MB".parse::<ByteSize>().unwrap(), ByteSize(100_000_000));
        assert_eq!("2 GiB".parse::<ByteSize>().unwrap(), ByteSize(2 << 30));
        assert!("lots".parse::<ByteSize>().unwrap_err().contains("256MiB"));
        assert!("5TB".parse::<ByteSize>().is_err());
        let config =
            parse(json!({ "type": "json", "compression": "zstd", "max_decompressed": 10 }))
                .unwrap();
        assert_eq!(config.0.max_decompressed, Some(ByteSize(10)));
        assert_eq!(ByteSize(256 << 20).to_string(), "256 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 bytes");
    }
}
