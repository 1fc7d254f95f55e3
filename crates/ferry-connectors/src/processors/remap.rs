//! `remap`: a VRL program (the Vector Remap Language) over the passenger's body and metadata.
//!
//! ```yaml
//! processors:
//!   - type: remap
//!     source: |
//!       .customer_id = to_int!(.cust)
//!       del(.cust)
//!       %desk = "sales"
//! ```
//!
//! `.` is the body (a JSON body as its value; any other body as bytes), `%` the metadata
//! (strings; other values are written back as JSON text). The program is compiled when the
//! definition is loaded, so `ferry validate` reports its errors at their line in the file. The
//! environment, system and network functions of VRL's standard library are not compiled in: a
//! program cannot read ferry's secrets or reach the outside.

use std::collections::BTreeMap;

use bytes::Bytes;
use ferry_core::{
    Body, BuildContext, BuildError, Metadata, Outcome, Passenger, Processor, ProcessorFactory,
    StepError, TextPosition,
};
use serde::Deserialize;
use vrl::compiler::state::RuntimeState;
use vrl::compiler::{Context, Program, TargetValue, TimeZone};
use vrl::value::{Secrets, Value};

/// Configuration of the `remap` processor: the program inline or in a file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// The program.
    #[serde(default)]
    pub source: Option<String>,
    /// A file holding the program, relative to the project directory.
    #[serde(default)]
    pub file: Option<String>,
}

/// Builds `remap` processors.
pub struct RemapFactory;

impl ProcessorFactory for RemapFactory {
    const TYPE: &'static str = "remap";
    type Config = RemapConfig;

    fn build(
        &self,
        config: RemapConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        let program = match (config.source, config.file) {
            (Some(source), None) => compile(&source)
                .map_err(|(position, message)| BuildError::within("source", position, message))?,
            (None, Some(file)) => {
                let path = ctx.resolve(&file);
                let source = std::fs::read_to_string(&path).map_err(|error| {
                    BuildError::at("file", format!("cannot read {file}: {error}"))
                })?;
                compile(&source).map_err(|(at, message)| {
                    BuildError::at(
                        "file",
                        format!("{file}:{}:{}: {message}", at.line, at.column),
                    )
                })?
            }
            _ => {
                return Err(BuildError::new(
                    "give the program in exactly one of `source` and `file`",
                ));
            }
        };
        Ok(Box::new(Remap { program }))
    }
}

/// Compiles a program with ferry's VRL functions; the first error with its position.
pub(crate) fn compile(source: &str) -> Result<Program, (TextPosition, String)> {
    let functions = vrl::stdlib::all();
    match vrl::compiler::compile(source, &functions) {
        Ok(result) => Ok(result.program),
        Err(diagnostics) => {
            let errors = diagnostics.errors();
            let Some(first) = errors.first() else {
                return Err((
                    TextPosition { line: 1, column: 1 },
                    "invalid program".into(),
                ));
            };
            let span = first
                .labels
                .iter()
                .find(|label| label.primary)
                .or(first.labels.first())
                .map(|label| label.span);
            let offset = span.map_or(0, |span| span.start());
            // What the error is about, as written: VRL's messages do not name it.
            let near = span
                .and_then(|span| source.get(span.start()..span.end()))
                .map(|text| text.lines().next().unwrap_or_default().trim())
                .filter(|text| !text.is_empty())
                .map(|text| format!(" (at `{}`)", text.chars().take(60).collect::<String>()))
                .unwrap_or_default();
            let detail = first
                .labels
                .iter()
                .filter(|label| !label.message.is_empty())
                .map(|label| label.message.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let message = if detail.is_empty() {
                format!("VRL error E{}: {}{near}", first.code, first.message)
            } else {
                format!(
                    "VRL error E{}: {}: {detail}{near}",
                    first.code, first.message
                )
            };
            Err((position(source, offset), message))
        }
    }
}

/// The line and column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> TextPosition {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    TextPosition { line, column }
}

struct Remap {
    program: Program,
}

impl Processor for Remap {
    fn process(&self, mut passenger: Passenger) -> Result<Outcome, StepError> {
        let json = passenger.body.media_type.contains("json");
        let value = if json {
            serde_json::from_slice::<Value>(&passenger.body.data).map_err(|error| {
                StepError::permanent(format!("remap: the body is not valid JSON: {error}"))
            })?
        } else {
            Value::Bytes(passenger.body.data.clone())
        };
        let metadata = Value::Object(
            passenger
                .metadata
                .iter()
                .map(|(key, value)| (key.as_str().into(), Value::from(value.as_str())))
                .collect(),
        );
        let mut target = TargetValue {
            value,
            metadata,
            secrets: Secrets::default(),
        };
        let mut state = RuntimeState::default();
        let timezone = TimeZone::default();
        let mut context = Context::new(&mut target, &mut state, &timezone);
        self.program
            .resolve(&mut context)
            .map_err(|error| StepError::permanent(format!("remap: {error}")))?;

        passenger.body = match target.value {
            Value::Bytes(bytes) if !json => Body {
                media_type: passenger.body.media_type,
                data: bytes,
            },
            Value::String(text) if !json => Body {
                media_type: passenger.body.media_type,
                data: Bytes::copy_from_slice(text.as_bytes()),
            },
            value => Body {
                media_type: "application/json".into(),
                data: Bytes::from(serde_json::to_vec(&value).map_err(|error| {
                    StepError::permanent(format!("remap: the result is not JSON: {error}"))
                })?),
            },
        };
        passenger.metadata = metadata_of(target.metadata);
        Ok(Outcome::Continue(passenger))
    }
}

/// `%` back as metadata: strings as they are, anything else as its JSON text.
fn metadata_of(value: Value) -> Metadata {
    let Value::Object(fields) = value else {
        return Metadata::new();
    };
    fields
        .into_iter()
        .filter(|(_, value)| !matches!(value, Value::Null))
        .map(|(key, value)| {
            let text = match value.to_str_lossy() {
                Some(text) => text.into_owned(),
                None => serde_json::to_string(&value).unwrap_or_default(),
            };
            (key.to_string(), text)
        })
        .collect::<BTreeMap<_, _>>()
}

#[cfg(test)]
mod tests {
    use ferry_core::config::{SourceFile, validate};
    use serde_json::json;

    use super::*;

    fn remap(source: &str) -> Box<dyn Processor> {
        RemapFactory
            .build(
                RemapConfig {
                    source: Some(source.into()),
                    file: None,
                },
                &BuildContext::default(),
            )
            .unwrap()
    }

    fn passenger(body: serde_json::Value) -> Passenger {
        let mut passenger = Passenger::pulled("test", "x").with_body(Body::json(&body));
        passenger.metadata.insert("kind".into(), "order".into());
        passenger
    }

    fn continued(outcome: Outcome) -> Passenger {
        match outcome {
            Outcome::Continue(passenger) => passenger,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn renames_and_converts_fields_and_sets_metadata() {
        let processor = remap(
            ".customer_id = to_int!(.cust)\ndel(.cust)\n.name = upcase!(.name)\n%desk = \"sales\"\n%count = 3\ndel(%kind)",
        );
        let out = continued(
            processor
                .process(passenger(
                    json!({ "cust": "42", "name": "acme", "keep": true }),
                ))
                .unwrap(),
        );
        assert_eq!(
            out.body.as_json().unwrap(),
            json!({ "customer_id": 42, "name": "ACME", "keep": true })
        );
        assert_eq!(out.metadata.get("desk").map(String::as_str), Some("sales"));
        assert_eq!(out.metadata.get("count").map(String::as_str), Some("3"));
        assert!(!out.metadata.contains_key("kind"));
    }

    #[test]
    fn a_body_that_is_not_json_is_bytes() {
        let processor = remap(". = upcase(string!(.))");
        let mut passenger = Passenger::pulled("test", "x");
        passenger.body = Body {
            media_type: "text/plain".into(),
            data: Bytes::from_static(b"hello"),
        };
        let out = continued(processor.process(passenger).unwrap());
        assert_eq!(&out.body.data[..], b"HELLO");
        assert_eq!(out.body.media_type, "text/plain");
    }

    #[test]
    fn an_abort_fails_the_passenger_for_good() {
        let processor = remap("if to_int!(.amount) < 0 { abort \"negative amount\" }");
        let error = processor
            .process(passenger(json!({ "amount": -1 })))
            .unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.contains("negative amount"),
            "{}",
            error.message
        );
        assert!(processor.process(passenger(json!({ "amount": 1 }))).is_ok());
    }

    #[test]
    fn invalid_json_in_a_json_body_fails_for_good() {
        let processor = remap(".a = 1");
        let mut passenger = passenger(json!({}));
        passenger.body.data = Bytes::from_static(b"{not json");
        let error = processor.process(passenger).unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.contains("not valid JSON"),
            "{}",
            error.message
        );
    }

    #[test]
    fn environment_functions_are_not_available() {
        let Err((_, message)) = compile("get_env_var!(\"HOME\")") else {
            panic!("get_env_var must not compile");
        };
        assert!(
            message.contains("undefined function") && message.contains("get_env_var"),
            "{message}"
        );
    }

    /// The error a user sees from `ferry validate`: the line of the program in the file.
    #[test]
    fn a_program_error_points_at_its_line_in_the_definition() {
        let pipeline = "pullers:\n  - { type: generate, count: 1 }\nprocessors:\n  - type: remap\n    source: |\n      .a = 1\n      .b = nope(.a)\npushers:\n  - { type: file, path: out }\n";
        let files = vec![
            SourceFile {
                path: "ferry.yaml".into(),
                content: String::new(),
            },
            SourceFile {
                path: "clients/acme/client.yaml".into(),
                content: String::new(),
            },
            SourceFile {
                path: "clients/acme/pipelines/p.yaml".into(),
                content: pipeline.into(),
            },
        ];
        let errors = validate(
            std::path::Path::new("/tmp"),
            files,
            &crate::registry(),
            &|_| None,
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(
            text[0].starts_with("clients/acme/pipelines/p.yaml:7:12: processors[0].source: "),
            "{text:?}"
        );
        assert!(text[0].contains("nope"), "{text:?}");
    }

    #[test]
    fn source_or_file_but_not_both() {
        let both = RemapFactory.build(
            RemapConfig {
                source: Some(".a = 1".into()),
                file: Some("x.vrl".into()),
            },
            &BuildContext::default(),
        );
        assert!(both.is_err());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.vrl"), ".a = 1\n.b = nope()\n").unwrap();
        let ctx = BuildContext {
            project_dir: dir.path().to_path_buf(),
            ..BuildContext::default()
        };
        let Err(error) = RemapFactory.build(
            RemapConfig {
                source: None,
                file: Some("x.vrl".into()),
            },
            &ctx,
        ) else {
            panic!("a broken program file must not build");
        };
        assert_eq!(error.path, ["file"]);
        assert!(
            error.message.starts_with("x.vrl:2:6: "),
            "{}",
            error.message
        );
    }
}
