//! `encode`: writes the passenger's JSON body or record batch in a format (CSV, XML, Avro,
//! Parquet, xlsx…), as the new body or as an attachment. A record batch is written with its
//! column types (see `ferry_formats::records`); Parquet and xlsx take record batches only.
//!
//! ```yaml
//! processors:
//!   - type: encode
//!     codec: { type: csv, columns: [id, name, amount] }
//!     to: attachment
//!     name_template: "{external_id}.csv"
//! ```
//!
//! A body that the format cannot hold fails the passenger permanently, naming the part:
//! ``cannot encode the body: Avro at /lines/2/qty: expected an int, found a string``.

use bytes::Bytes;
use ferry_core::records;
use ferry_core::template::Template;
use ferry_core::{
    Attachment, Body, BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory,
    StepError,
};
use ferry_formats::{Codec, CodecConfig};
use serde::Deserialize;
use serde_json::Value;

use super::decode::build_codec;

/// Configuration of the `encode` processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeConfig {
    /// How to write the JSON body: a format name (`csv`) or a mapping with options
    /// (`{ type: avro, schema: schemas/order.avsc }`); see `docs/formats.md`. Required.
    pub codec: CodecConfig,
    /// Where the encoded bytes go: `body` (the default; the body's media type becomes the
    /// codec's) or `attachment` (added under `name_template`, replacing an attachment of the
    /// same name; the JSON body stays).
    #[serde(default)]
    pub to: EncodeTarget,
    /// With `to: attachment`, required: the attachment's name, a template such as
    /// `"{external_id}.csv"`. Placeholders: `{id}`, `{client}`, `{pipeline}`, `{source_system}`,
    /// `{external_id}`, `{date}`, `{metadata.KEY}`.
    #[serde(default)]
    pub name_template: Option<String>,
}

/// Where the `encode` processor puts what it wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncodeTarget {
    /// The body.
    #[default]
    Body,
    /// An attachment named by `name_template`.
    Attachment,
}

/// Builds `encode` processors.
pub struct EncodeFactory;

impl ProcessorFactory for EncodeFactory {
    const TYPE: &'static str = "encode";
    type Config = EncodeConfig;

    fn build(
        &self,
        config: EncodeConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        let codec = build_codec(&config.codec, ctx)?;
        codec.check_encode().map_err(|mut error| {
            error.path.insert(0, "codec".into());
            error
        })?;
        let name = match (config.to, config.name_template) {
            (EncodeTarget::Body, None) => None,
            (EncodeTarget::Body, Some(_)) => {
                return Err(BuildError::at(
                    "name_template",
                    "only applies with `to: attachment`",
                ));
            }
            (EncodeTarget::Attachment, None) => {
                return Err(BuildError::at(
                    "name_template",
                    "missing: `to: attachment` needs the attachment's name, e.g. \
                     \"{external_id}.csv\"",
                ));
            }
            (EncodeTarget::Attachment, Some(text)) => Some(
                Template::parse(&text)
                    .map_err(|message| BuildError::at("name_template", message))?,
            ),
        };
        Ok(Box::new(Encode { codec, name }))
    }
}

/// Encodes the JSON body.
#[derive(Debug)]
pub struct Encode {
    codec: Codec,
    /// `None`: into the body; else the attachment's name.
    name: Option<Template>,
}

impl Processor for Encode {
    fn process(&self, mut passenger: Passenger) -> Result<Outcome, StepError> {
        let encoded = encode_body(&self.codec, &passenger.body)?;
        let media_type = self.codec.media_type().to_string();
        let Some(template) = &self.name else {
            passenger.body = Body {
                media_type,
                data: Bytes::from(encoded),
            };
            return Ok(Outcome::Continue(passenger));
        };
        let name = template.render(&passenger);
        if name.is_empty() {
            return Err(StepError::permanent(
                "the name template rendered an empty attachment name",
            ));
        }
        let attachment = Attachment {
            name,
            media_type,
            content: Bytes::from(encoded),
        };
        // Replacing a namesake keeps a replayed passenger from collecting copies.
        match passenger
            .attachments
            .iter_mut()
            .find(|existing| existing.name == attachment.name)
        {
            Some(existing) => *existing = attachment,
            None => passenger.attachments.push(attachment),
        }
        Ok(Outcome::Continue(passenger))
    }
}

/// Encodes a JSON body or a record batch (with its column types) with `codec`: for `encode`
/// and the `file` pusher's `codec`.
pub(crate) fn encode_body(codec: &Codec, body: &Body) -> Result<Vec<u8>, StepError> {
    if body.media_type == records::MEDIA_TYPE {
        let batch = records::read(body).map_err(StepError::permanent)?;
        return codec
            .encode_records(&batch.columns, &batch.data)
            .map_err(|error| {
                StepError::permanent(format!("cannot encode the record batch: {error}"))
            });
    }
    let value = json_body(body)?;
    codec
        .encode(&value)
        .map_err(|error| StepError::permanent(format!("cannot encode the body: {error}")))
}

/// The body as JSON, or why it is not: `encode` works on JSON bodies (pulled as JSON or made
/// by `decode`).
fn json_body(body: &Body) -> Result<Value, StepError> {
    if !body.media_type.contains("json") {
        return Err(StepError::permanent(format!(
            "the body is `{}`, not JSON: encoding needs a JSON body (use `decode` first)",
            body.media_type
        )));
    }
    serde_json::from_slice(&body.data)
        .map_err(|error| StepError::permanent(format!("the body is not valid JSON: {error}")))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    fn encode(config: Value) -> Result<Box<dyn Processor>, BuildError> {
        encode_in(Path::new("/nonexistent"), config)
    }

    fn encode_in(project: &Path, config: Value) -> Result<Box<dyn Processor>, BuildError> {
        let ctx = BuildContext {
            project_dir: project.to_path_buf(),
            sandbox: ferry_core::sandbox::Sandbox::within(project, ""),
            ..BuildContext::default()
        };
        crate::registry().processor("encode", &config, &ctx)
    }

    fn json_passenger(value: Value) -> Passenger {
        Passenger::pulled("test", "order-7").with_body(Body::json(&value))
    }

    fn continued(outcome: Outcome) -> Passenger {
        match outcome {
            Outcome::Continue(passenger) => passenger,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn encodes_the_body_with_the_codec_media_type() {
        let processor = encode(json!({ "codec": "csv" })).unwrap();
        let rows = json!([{ "id": 1, "name": "Ann" }, { "id": 2, "name": "Bob, Jr." }]);
        let passenger = continued(processor.process(json_passenger(rows)).unwrap());
        assert_eq!(passenger.body.media_type, "text/csv");
        assert_eq!(
            &passenger.body.data[..],
            b"id,name\n1,Ann\n2,\"Bob, Jr.\"\n"
        );
    }

    #[test]
    fn encode_then_decode_gives_the_body_back() {
        let value = json!({ "order": { "@id": "7", "line": ["a", "b"] } });
        for codec in [
            json!("xml"),
            json!("msgpack"),
            json!({ "type": "json", "compression": "zstd" }),
        ] {
            let encoder = encode(json!({ "codec": codec })).unwrap();
            let decoder = crate::registry()
                .processor(
                    "decode",
                    &json!({ "codec": codec }),
                    &BuildContext::default(),
                )
                .unwrap();
            let encoded = continued(encoder.process(json_passenger(value.clone())).unwrap());
            assert_ne!(encoded.body.media_type, "application/json", "{codec}");
            let decoded = continued(decoder.process(encoded).unwrap());
            assert_eq!(decoded.body.as_json().unwrap(), value, "{codec}");
        }
    }

    #[test]
    fn writes_an_attachment_and_keeps_the_body() {
        let processor = encode(json!({
            "codec": { "type": "ndjson", "compression": "gzip" },
            "to": "attachment",
            "name_template": "{external_id}.ndjson.gz",
        }))
        .unwrap();
        let value = json!([{ "a": 1 }, { "a": 2 }]);
        let passenger = continued(processor.process(json_passenger(value.clone())).unwrap());
        assert_eq!(passenger.body.as_json().unwrap(), value);
        assert_eq!(passenger.attachments.len(), 1);
        let attachment = &passenger.attachments[0];
        assert_eq!(attachment.name, "order-7.ndjson.gz");
        assert_eq!(attachment.media_type, "application/gzip");
        // Processing again (a replay) replaces the attachment instead of adding a copy.
        let again = continued(processor.process(passenger.clone()).unwrap());
        assert_eq!(again.attachments, passenger.attachments);
    }

    #[test]
    fn a_body_the_format_cannot_hold_fails_with_its_path() {
        let processor = encode(json!({ "codec": "csv" })).unwrap();
        let error = processor
            .process(json_passenger(json!([{ "a": 1 }, "oops"])))
            .unwrap_err();
        assert_eq!(
            error.message,
            "cannot encode the body: CSV at /1: expected an object, found a string"
        );
        assert!(!error.retryable);
    }

    #[test]
    fn a_body_that_is_not_json_fails() {
        let processor = encode(json!({ "codec": "csv" })).unwrap();
        let passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "text/csv".into(),
            data: Bytes::from_static(b"a,b\n"),
        });
        let error = processor.process(passenger).unwrap_err();
        assert_eq!(
            error.message,
            "the body is `text/csv`, not JSON: encoding needs a JSON body (use `decode` first)"
        );
        let broken = Passenger::pulled("test", "1").with_body(Body {
            media_type: "application/json".into(),
            data: Bytes::from_static(b"{"),
        });
        let error = processor.process(broken).unwrap_err();
        assert!(
            error.message.starts_with("the body is not valid JSON"),
            "{error}"
        );
    }

    #[test]
    fn configuration_errors_name_their_key() {
        let error = encode(json!({ "codec": "avro" })).err().unwrap();
        assert_eq!(error.path, ["codec", "schema"]);
        let error = encode(json!({ "codec": "csv", "to": "attachment" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["name_template"]);
        assert!(error.message.starts_with("missing"), "{error}");
        let error = encode(json!({ "codec": "csv", "name_template": "x.csv" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["name_template"]);
        let error = encode(json!({ "codec": "csv", "to": "attachment", "name_template": "{x}" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["name_template"]);
        let error = encode(json!({ "codec": { "type": "xml", "header": true } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["codec", "header"]);
        let error = encode(json!({ "codec": "csv", "to": "file" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["to"]);
    }

    #[test]
    fn avro_encoding_uses_the_project_schema() {
        let project = tempfile::tempdir().unwrap();
        let schema = r#"{ "type": "record", "name": "Point", "fields": [
            { "name": "x", "type": "int" }, { "name": "y", "type": "int" } ] }"#;
        std::fs::write(project.path().join("point.avsc"), schema).unwrap();
        let codec = json!({ "type": "avro", "schema": "point.avsc", "encoding": "raw" });
        let processor = encode_in(project.path(), json!({ "codec": codec })).unwrap();
        let passenger = continued(
            processor
                .process(json_passenger(json!({ "x": 1, "y": -2 })))
                .unwrap(),
        );
        assert_eq!(&passenger.body.data[..], [2, 3]);
        assert_eq!(passenger.body.media_type, "application/avro");
        let error = processor
            .process(json_passenger(json!({ "x": 1, "y": "two" })))
            .unwrap_err();
        assert_eq!(
            error.message,
            "cannot encode the body: Avro at /y: expected an int, found a string"
        );
    }

    /// Two rows of five typed columns.
    fn batch() -> Passenger {
        use ferry_core::records::{BatchWriter, Column, ColumnType};
        let mut writer = BatchWriter::new(vec![
            Column::new("id", ColumnType::Integer),
            Column::new("name", ColumnType::Text),
            Column::new("amount", ColumnType::Numeric),
            Column::new("at", ColumnType::Timestamptz),
            Column::new("ok", ColumnType::Boolean),
        ]);
        writer.raw("1");
        writer.text("Ann, \"A\"");
        writer.raw("12345678901234567890.25");
        writer.raw("2024-05-31 12:00:00+02");
        writer.raw("t");
        writer.end_row();
        for _ in 0..5 {
            writer.null();
        }
        writer.end_row();
        Passenger::pulled("db", "c1").with_body(writer.finish())
    }

    #[test]
    fn record_batches_encode_with_their_types_in_every_format() {
        let encoded = |codec: Value| {
            let processor = encode(json!({ "codec": codec })).unwrap();
            continued(processor.process(batch()).unwrap()).body
        };
        let csv = encoded(json!("csv"));
        assert_eq!(csv.media_type, "text/csv");
        assert_eq!(
            std::str::from_utf8(&csv.data).unwrap(),
            "id,name,amount,at,ok\n1,\"Ann, \"\"A\"\"\",12345678901234567890.25,2024-05-31 10:00:00+00,true\n,,,,\n"
        );
        let ndjson = encoded(json!("ndjson"));
        assert_eq!(
            std::str::from_utf8(&ndjson.data).unwrap(),
            "{\"id\":1,\"name\":\"Ann, \\\"A\\\"\",\"amount\":\"12345678901234567890.25\",\"at\":\"2024-05-31T10:00:00Z\",\"ok\":true}\n\
             {\"id\":null,\"name\":null,\"amount\":null,\"at\":null,\"ok\":null}\n"
        );
        let json_body = encoded(json!("json"));
        assert_eq!(
            json_body.as_json().unwrap()[0]["amount"],
            "12345678901234567890.25"
        );
        let msgpack = encoded(json!("msgpack"));
        assert_eq!(msgpack.media_type, "application/msgpack");

        let parquet = encoded(json!("parquet"));
        assert_eq!(parquet.media_type, "application/vnd.apache.parquet");
        let back = ferry_formats::Codec::build(
            &ferry_formats::CodecConfig::new(ferry_formats::FormatName::Parquet),
            &ferry_core::sandbox::Sandbox::within(Path::new("/nonexistent"), ""),
        )
        .unwrap()
        .decode(&parquet.data)
        .unwrap();
        assert_eq!(
            back[0],
            json!({ "id": 1, "name": "Ann, \"A\"", "amount": "12345678901234567890.25",
                    "at": "2024-05-31T10:00:00Z", "ok": true })
        );
        let xlsx = encoded(json!("xlsx"));
        assert_eq!(&xlsx.data[..2], b"PK");
    }

    #[test]
    fn a_record_batch_that_does_not_parse_names_row_and_column() {
        let mut passenger = batch();
        let text = String::from_utf8(passenger.body.data.to_vec())
            .unwrap()
            .replace("2024-05-31 12:00:00+02", "yesterday");
        passenger.body.data = Bytes::from(text);
        let processor = encode(json!({ "codec": "parquet" })).unwrap();
        let error = processor.process(passenger).unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "cannot encode the record batch: records: row 1, column `at`: `yesterday` is not a \
             timestamp with a zone (`2024-05-31 12:00:00+02`)"
        );
    }

    #[test]
    fn parquet_and_xlsx_take_record_batches_only() {
        let processor = encode(json!({ "codec": "parquet" })).unwrap();
        let error = processor
            .process(json_passenger(json!([{ "a": 1 }])))
            .unwrap_err();
        assert!(error.message.contains("only record batches"), "{error}");
        let error = encode(json!({ "codec": { "type": "xlsx", "compression": "gzip" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["codec", "compression"]);
    }
}
