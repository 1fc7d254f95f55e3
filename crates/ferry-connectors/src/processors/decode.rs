//! `decode`: reads the body or an attachment with a codec (CSV, XML, Avro, Parquet, xlsx…)
//! into the passenger's JSON body, or, with `columns`, into a record batch that the table
//! pushers load.
//!
//! ```yaml
//! processors:
//!   - type: decode
//!     codec: { type: csv, delimiter: ";" }
//!     from: attachment
//!     pattern: "*.csv"
//! ```
//!
//! Input that does not parse fails the passenger permanently, with the position of the error:
//! ``cannot decode attachment `orders.csv`: CSV line 3: found 4 fields, expected 3``.

use ferry_core::records::{BatchWriter, Column};
use ferry_core::{
    Attachment, Body, BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory,
    StepError,
};
use ferry_formats::{Codec, CodecConfig};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use serde_json::Value;

/// Configuration of the `decode` processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeConfig {
    /// How to read the bytes: a format name (`csv`) or a mapping with options
    /// (`{ type: avro, schema: schemas/order.avsc }`); see `docs/formats.md`. Required.
    pub codec: CodecConfig,
    /// What to decode: `body` (the default), `attachment` (the one attachment whose name
    /// matches `pattern`; none or several fail the passenger) or `attachments` (every matching
    /// attachment, in order; the body becomes the array of their values).
    #[serde(default)]
    pub from: DecodeSource,
    /// With `from: attachment` or `attachments`: a glob on attachment names, e.g. `*.csv`.
    /// Default `*`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The columns of a record batch to make, in order, each `{ name, type }`: each row of the
    /// document (an object of an array, an NDJSON line, a CSV line with a header, a Parquet
    /// row, a sheet row under its header) becomes a row, each column the row's value under
    /// its name, read as the column's type. A value that does not fit fails the passenger,
    /// naming the row and the column. With `from: attachments`, the rows of every attachment
    /// in order. Default: the body becomes the document's JSON.
    #[serde(default)]
    pub columns: Option<Vec<Column>>,
}

/// What the `decode` processor reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodeSource {
    /// The body.
    #[default]
    Body,
    /// Exactly one attachment matching `pattern`.
    Attachment,
    /// Every attachment matching `pattern`, at least one.
    Attachments,
}

/// Builds a codec from a component's `codec` key, with error paths under `codec`.
pub(crate) fn build_codec(config: &CodecConfig, ctx: &BuildContext) -> Result<Codec, BuildError> {
    Codec::build(config, &ctx.sandbox).map_err(|mut error| {
        error.path.insert(0, "codec".into());
        error
    })
}

/// Builds `decode` processors.
pub struct DecodeFactory;

impl ProcessorFactory for DecodeFactory {
    const TYPE: &'static str = "decode";
    type Config = DecodeConfig;

    fn build(
        &self,
        config: DecodeConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        let codec = build_codec(&config.codec, ctx)?;
        let pattern = match (config.from, config.pattern) {
            (DecodeSource::Body, Some(_)) => {
                return Err(BuildError::at(
                    "pattern",
                    "only applies with `from: attachment` or `from: attachments`",
                ));
            }
            (_, pattern) => {
                let text = pattern.unwrap_or_else(|| "*".into());
                let glob = Glob::new(&text)
                    .map_err(|error| BuildError::at("pattern", format!("invalid glob: {error}")))?;
                Pattern {
                    text,
                    matcher: glob.compile_matcher(),
                }
            }
        };
        if let Some(columns) = &config.columns {
            super::remap::check_columns(columns)?;
        }
        Ok(Box::new(Decode {
            codec,
            from: config.from,
            pattern,
            columns: config.columns,
        }))
    }
}

/// Decodes a body or attachments into the JSON body.
#[derive(Debug)]
pub struct Decode {
    codec: Codec,
    from: DecodeSource,
    pattern: Pattern,
    /// Make a record batch of these columns.
    columns: Option<Vec<Column>>,
}

#[derive(Debug)]
struct Pattern {
    text: String,
    matcher: GlobMatcher,
}

impl Processor for Decode {
    fn process(&self, mut passenger: Passenger) -> Result<Outcome, StepError> {
        if let Some(columns) = &self.columns {
            return self.records(columns, passenger);
        }
        let value = match self.from {
            DecodeSource::Body => self.codec.decode(&passenger.body.data).map_err(|error| {
                StepError::permanent(format!("cannot decode the body: {error}"))
            })?,
            DecodeSource::Attachment => match self.matching(&passenger)?.as_slice() {
                [attachment] => self.decode_attachment(attachment)?,
                several => {
                    return Err(StepError::permanent(format!(
                        "{} attachments match `{}` ({}); `from: attachment` takes exactly one: \
                         narrow `pattern`, or use `from: attachments`",
                        several.len(),
                        self.pattern.text,
                        names(several)
                    )));
                }
            },
            DecodeSource::Attachments => {
                let mut values = Vec::new();
                for attachment in self.matching(&passenger)? {
                    values.push(self.decode_attachment(attachment)?);
                }
                Value::Array(values)
            }
        };
        passenger.body = Body::json(&value);
        Ok(Outcome::Continue(passenger))
    }
}

impl Decode {
    /// Decodes into a record batch of `columns`.
    fn records(&self, columns: &[Column], mut passenger: Passenger) -> Result<Outcome, StepError> {
        let mut writer = BatchWriter::new(columns.to_vec());
        match self.from {
            DecodeSource::Body => self
                .codec
                .decode_records(&passenger.body.data, &mut writer)
                .map_err(|error| {
                    StepError::permanent(format!("cannot decode the body: {error}"))
                })?,
            DecodeSource::Attachment | DecodeSource::Attachments => {
                let matching = self.matching(&passenger)?;
                if self.from == DecodeSource::Attachment && matching.len() > 1 {
                    return Err(StepError::permanent(format!(
                        "{} attachments match `{}` ({}); `from: attachment` takes exactly one: \
                         narrow `pattern`, or use `from: attachments`",
                        matching.len(),
                        self.pattern.text,
                        names(&matching)
                    )));
                }
                for attachment in matching {
                    self.codec
                        .decode_records(&attachment.content, &mut writer)
                        .map_err(|error| {
                            StepError::permanent(format!(
                                "cannot decode attachment `{}`: {error}",
                                attachment.name
                            ))
                        })?;
                }
            }
        }
        passenger
            .metadata
            .insert(ferry_core::records::ROWS.into(), writer.rows().to_string());
        passenger.body = writer.finish();
        Ok(Outcome::Continue(passenger))
    }

    /// The attachments whose names match the pattern; at least one.
    fn matching<'p>(&self, passenger: &'p Passenger) -> Result<Vec<&'p Attachment>, StepError> {
        let matching: Vec<&Attachment> = passenger
            .attachments
            .iter()
            .filter(|attachment| self.pattern.matcher.is_match(&attachment.name))
            .collect();
        if !matching.is_empty() {
            return Ok(matching);
        }
        let all: Vec<&Attachment> = passenger.attachments.iter().collect();
        Err(StepError::permanent(if all.is_empty() {
            "the passenger has no attachments to decode".to_string()
        } else {
            format!(
                "no attachment matches `{}` (the passenger has {})",
                self.pattern.text,
                names(&all)
            )
        }))
    }

    fn decode_attachment(&self, attachment: &Attachment) -> Result<Value, StepError> {
        self.codec.decode(&attachment.content).map_err(|error| {
            StepError::permanent(format!(
                "cannot decode attachment `{}`: {error}",
                attachment.name
            ))
        })
    }
}

/// Attachment names for messages: `a.csv, b.csv`.
fn names(attachments: &[&Attachment]) -> String {
    let names: Vec<String> = attachments
        .iter()
        .map(|attachment| format!("`{}`", attachment.name))
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use bytes::Bytes;
    use serde_json::json;

    use super::*;

    fn attachment(name: &str, content: &[u8]) -> Attachment {
        Attachment {
            name: name.into(),
            media_type: "application/octet-stream".into(),
            content: Bytes::copy_from_slice(content),
        }
    }

    fn decode(config: Value) -> Result<Box<dyn Processor>, BuildError> {
        decode_in(Path::new("/nonexistent"), config)
    }

    fn decode_in(project: &Path, config: Value) -> Result<Box<dyn Processor>, BuildError> {
        let ctx = BuildContext {
            project_dir: project.to_path_buf(),
            sandbox: ferry_core::sandbox::Sandbox::within(project, ""),
            ..BuildContext::default()
        };
        crate::registry().processor("decode", &config, &ctx)
    }

    fn with_body(media_type: &str, data: &[u8]) -> Passenger {
        Passenger::pulled("test", "1").with_body(Body {
            media_type: media_type.into(),
            data: Bytes::copy_from_slice(data),
        })
    }

    fn continued(outcome: Outcome) -> Passenger {
        match outcome {
            Outcome::Continue(passenger) => passenger,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn body_of(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Continue(passenger) => {
                assert_eq!(passenger.body.media_type, "application/json");
                passenger.body.as_json().unwrap()
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn decodes_the_body() {
        let processor = decode(json!({ "codec": "csv" })).unwrap();
        let passenger = with_body("text/csv", b"id,name\n1,Ann\n2,Bob\n");
        let body = body_of(processor.process(passenger).unwrap());
        assert_eq!(
            body,
            json!([{ "id": "1", "name": "Ann" }, { "id": "2", "name": "Bob" }])
        );
    }

    #[test]
    fn malformed_input_fails_permanently_with_the_position() {
        let processor = decode(json!({ "codec": "csv" })).unwrap();
        let passenger = with_body("text/csv", b"a,b,c\n1,2,3\n4,5,6,7\n");
        let error = processor.process(passenger).unwrap_err();
        assert_eq!(
            error.message,
            "cannot decode the body: CSV line 3: found 4 fields, expected 3"
        );
        assert!(!error.retryable);

        let processor =
            decode(json!({ "codec": "xml", "from": "attachment", "pattern": "*.xml" })).unwrap();
        let mut passenger = with_body("application/json", b"{}");
        passenger
            .attachments
            .push(attachment("order.xml", b"<order>\n  <id>1</id>\n"));
        let error = processor.process(passenger).unwrap_err();
        assert_eq!(
            error.message,
            "cannot decode attachment `order.xml`: XML line 3, column 1: unexpected end of the \
             document: `<order>` is not closed"
        );
    }

    #[test]
    fn one_attachment_by_pattern() {
        let processor = decode(json!({
            "codec": { "type": "csv", "delimiter": ";" },
            "from": "attachment",
            "pattern": "*.csv",
        }))
        .unwrap();
        let mut passenger = with_body("application/json", b"{\"file\":\"x\"}");
        passenger
            .attachments
            .push(attachment("cover.pdf", b"%PDF-1.7"));
        passenger
            .attachments
            .push(attachment("rows.csv", b"a;b\n1;2\n"));
        let outcome = processor.process(passenger).unwrap();
        let Outcome::Continue(passenger) = outcome else {
            panic!("{outcome:?}");
        };
        // The attachments stay; only the body changes.
        assert_eq!(passenger.attachments.len(), 2);
        assert_eq!(
            passenger.body.as_json().unwrap(),
            json!([{ "a": "1", "b": "2" }])
        );
    }

    #[test]
    fn one_attachment_means_exactly_one() {
        let processor = decode(json!({ "codec": "json", "from": "attachment" })).unwrap();
        let none = with_body("application/json", b"{}");
        let error = processor.process(none).unwrap_err();
        assert_eq!(error.message, "the passenger has no attachments to decode");
        assert!(!error.retryable);

        let mut two = with_body("application/json", b"{}");
        two.attachments.push(attachment("a.json", b"1"));
        two.attachments.push(attachment("b.json", b"2"));
        let error = processor.process(two).unwrap_err();
        assert_eq!(
            error.message,
            "2 attachments match `*` (`a.json`, `b.json`); `from: attachment` takes exactly \
             one: narrow `pattern`, or use `from: attachments`"
        );

        let processor =
            decode(json!({ "codec": "json", "from": "attachment", "pattern": "*.csv" })).unwrap();
        let mut other = with_body("application/json", b"{}");
        other.attachments.push(attachment("a.json", b"1"));
        let error = processor.process(other).unwrap_err();
        assert_eq!(
            error.message,
            "no attachment matches `*.csv` (the passenger has `a.json`)"
        );
    }

    #[test]
    fn several_attachments_become_an_array() {
        let processor = decode(json!({
            "codec": { "type": "json", "compression": "gzip" },
            "from": "attachments",
            "pattern": "*.json.gz",
        }))
        .unwrap();
        let gzip = Codec::build(
            &serde_json::from_value(json!({ "type": "json", "compression": "gzip" })).unwrap(),
            &ferry_core::sandbox::Sandbox::default(),
        )
        .unwrap();
        let mut passenger = with_body("application/json", b"{}");
        for (name, value) in [("a.json.gz", json!({ "n": 1 })), ("b.json.gz", json!([2]))] {
            passenger
                .attachments
                .push(attachment(name, &gzip.encode(&value).unwrap()));
        }
        passenger.attachments.push(attachment("notes.txt", b"hi"));
        let body = body_of(processor.process(passenger).unwrap());
        assert_eq!(body, json!([{ "n": 1 }, [2]]));
    }

    #[test]
    fn avro_with_a_schema_file_from_the_project() {
        let project = tempfile::tempdir().unwrap();
        std::fs::create_dir(project.path().join("schemas")).unwrap();
        let schema = r#"{ "type": "record", "name": "Point", "fields": [
            { "name": "x", "type": "int" }, { "name": "y", "type": "int" } ] }"#;
        std::fs::write(project.path().join("schemas/point.avsc"), schema).unwrap();
        let codec = json!({ "type": "avro", "schema": "schemas/point.avsc", "encoding": "raw" });
        let processor = decode_in(project.path(), json!({ "codec": codec })).unwrap();
        // x = 1, y = -2 as zig-zag varints.
        let body = body_of(
            processor
                .process(with_body("application/avro", &[2, 3]))
                .unwrap(),
        );
        assert_eq!(body, json!({ "x": 1, "y": -2 }));
        let error = processor
            .process(with_body("application/avro", &[2]))
            .unwrap_err();
        assert!(
            error
                .message
                .starts_with("cannot decode the body: Avro byte 1: "),
            "{error}"
        );
    }

    #[test]
    fn configuration_errors_name_their_key() {
        let error = decode(json!({})).err().unwrap();
        assert!(error.message.contains("missing field `codec`"), "{error}");
        let error = decode(json!({ "codec": "yaml" })).err().unwrap();
        assert_eq!(error.path, ["codec"]);
        assert!(
            error.message.contains("valid types are: json, ndjson"),
            "{error}"
        );
        let error = decode(json!({ "codec": { "type": "csv", "delimiter": "ab" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["codec", "delimiter"]);
        let error = decode(json!({ "codec": { "type": "avro", "schema": "missing.avsc" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["codec", "schema"]);
        assert!(error.message.contains("missing.avsc"), "{error}");
        let error = decode(json!({ "codec": "csv", "pattern": "*.csv" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["pattern"]);
        let error = decode(json!({ "codec": "csv", "from": "attachment", "pattern": "[" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["pattern"]);
        let error = decode(json!({ "codec": "csv", "from": "header" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["from"]);
        let error = decode(json!({ "codec": "csv", "into": "body" }))
            .err()
            .unwrap();
        assert!(error.message.contains("unknown field `into`"), "{error}");
    }

    fn columns() -> Value {
        json!([
            { "name": "id", "type": "integer" },
            { "name": "amount", "type": "numeric" },
            { "name": "at", "type": "timestamptz" },
        ])
    }

    fn batch_text(passenger: &Passenger) -> (Vec<String>, String) {
        let batch = ferry_core::records::read(&passenger.body).unwrap();
        let columns = batch
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.kind))
            .collect();
        (columns, String::from_utf8(batch.data.to_vec()).unwrap())
    }

    #[test]
    fn declared_columns_make_a_record_batch_from_json_csv_and_attachments() {
        let processor = decode(json!({ "codec": "json", "columns": columns() })).unwrap();
        let passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "application/json".into(),
            data: Bytes::from_static(
                br#"[{"id": 1, "amount": 12.50, "at": "2024-05-31T12:00:00+02:00", "x": 1},
                     {"id": "2", "amount": "0.10"}]"#,
            ),
        });
        let out = continued(processor.process(passenger).unwrap());
        assert_eq!(out.body.media_type, ferry_core::records::MEDIA_TYPE);
        assert_eq!(out.metadata["rows"], "2");
        let (names, data) = batch_text(&out);
        assert_eq!(names, ["id:integer", "amount:numeric", "at:timestamptz"]);
        assert_eq!(data, "1\t12.5\t2024-05-31 10:00:00+00\n2\t0.10\t\\N\n");

        let processor = decode(json!({
            "codec": "csv", "columns": columns(), "from": "attachments", "pattern": "*.csv",
        }))
        .unwrap();
        let mut passenger = Passenger::pulled("test", "1");
        passenger.attachments = vec![
            attachment("a.csv", b"id,amount,at\n1,1.5,2024-01-01 00:00:00Z\n"),
            attachment("b.csv", b"amount,id\n2.25,2\n"),
        ];
        let out = continued(processor.process(passenger).unwrap());
        assert_eq!(
            batch_text(&out).1,
            "1\t1.5\t2024-01-01 00:00:00+00\n2\t2.25\t\\N\n"
        );
    }

    #[test]
    fn a_value_that_does_not_fit_names_row_and_column() {
        let processor = decode(json!({ "codec": "ndjson", "columns": columns() })).unwrap();
        let passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "application/x-ndjson".into(),
            data: Bytes::from_static(b"{\"id\": 1}\n{\"id\": 2, \"at\": \"2024-05-31 12:00\"}\n"),
        });
        let error = processor.process(passenger).unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "cannot decode the body: records: row 2, column `at`: `2024-05-31 12:00` is not a \
             timestamp with a zone (`2024-05-31 12:00:00+02`)"
        );
        let error = decode(json!({ "codec": "json", "columns": [] }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["columns"]);
    }
}
