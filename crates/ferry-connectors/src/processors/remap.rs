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
//! (strings; other values are written back as JSON text). Over a record batch the program runs
//! once per row, `.` being the row (see `rows.rs`); `columns` then fixes the output columns. The program is compiled when the
//! definition is validated, so `ferry validate` reports its errors at their line in the file;
//! an `abort` or a failing `!` call at runtime fails the passenger permanently.

use ferry_core::records::Column;
use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, StepError,
};
use serde::Deserialize;

use super::program::{Mode, VrlProgram};
use super::rows;

/// Configuration of the `remap` processor: the program inline or in a file, not both.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// The VRL program, usually as a block scalar (`source: |`).
    #[serde(default)]
    pub source: Option<String>,
    /// A file holding the VRL program, relative to the project directory (e.g.
    /// `clients/acme/vrl/orders.vrl`); read and compiled when the definition is validated.
    #[serde(default)]
    pub file: Option<String>,
    /// Over a record batch: the output's columns, in order, each `{ name, type }`. A row's
    /// field that is not declared fails the passenger; a declared one it lacks is NULL; a
    /// string is read as the text of its column's type (`"2024-05-31"` for a `date`). Default:
    /// the columns the rows have, typed as in the input or by their values.
    #[serde(default)]
    pub columns: Option<Vec<Column>>,
}

/// Refuses an empty list or a name given twice, at `columns`.
pub(crate) fn check_columns(columns: &[Column]) -> Result<(), BuildError> {
    if columns.is_empty() {
        return Err(BuildError::at("columns", "give at least one column"));
    }
    for (index, column) in columns.iter().enumerate() {
        if column.name.is_empty() {
            return Err(BuildError::at(
                "columns",
                format!("column {} has no name", index + 1),
            ));
        }
        if columns[..index]
            .iter()
            .any(|other| other.name == column.name)
        {
            return Err(BuildError::at(
                "columns",
                format!("column `{}` is declared twice", column.name),
            ));
        }
    }
    Ok(())
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
        let program = VrlProgram::inline_or_file(
            "source",
            config.source.as_deref(),
            "file",
            config.file.as_deref(),
            ctx,
            Mode::Remap,
        )?;
        if let Some(columns) = &config.columns {
            check_columns(columns)?;
        }
        Ok(Box::new(Remap {
            program,
            columns: config.columns,
        }))
    }
}

/// Runs a VRL program over each passenger.
#[derive(Debug)]
pub struct Remap {
    program: VrlProgram,
    /// The declared output columns of a record batch.
    columns: Option<Vec<Column>>,
}

impl Processor for Remap {
    fn process(&self, mut passenger: Passenger) -> Result<Outcome, StepError> {
        if rows::is_records(&passenger.body) {
            rows::remap(&self.program, &mut passenger, self.columns.as_deref())?;
            return Ok(Outcome::Continue(passenger));
        }
        if self.columns.is_some() {
            return Err(StepError::permanent(format!(
                "`columns` applies to record batches, and the body is `{}`",
                passenger.body.media_type
            )));
        }
        self.program.remap(&mut passenger)?;
        Ok(Outcome::Continue(passenger))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ferry_core::Body;
    use ferry_core::config::{SourceFile, validate};
    use serde_json::json;

    use super::*;

    fn remap(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        RemapFactory.build(config, &BuildContext::default())
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

    /// The errors `ferry validate` prints for a project whose one pipeline is `pipeline`.
    fn validation_errors(dir: &std::path::Path, pipeline: &str) -> Vec<String> {
        let files = vec![
            SourceFile {
                path: "ferry.yaml".into(),
                content: "clients: { acme: { paths: [out] } }\n".into(),
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
        match validate(dir, files, &crate::registry(), &|_| None) {
            Ok(_) => panic!("the project is valid"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn renames_and_converts_fields_and_sets_metadata() {
        let processor = remap(json!({ "source": r#"
            .customer_id = to_int!(.cust)
            del(.cust)
            .amount = to_float!(.amount_text)
            del(.amount_text)
            .name = upcase!(.name)
            %desk = "sales"
            %count = 3
            del(%kind)
        "# }))
        .unwrap();
        let input = json!({ "cust": "42", "amount_text": "12.50", "name": "acme", "keep": true });
        let out = continued(processor.process(passenger(input)).unwrap());
        assert_eq!(
            out.body.as_json().unwrap(),
            json!({ "customer_id": 42, "amount": 12.5, "name": "ACME", "keep": true })
        );
        assert_eq!(out.body.media_type, "application/json");
        assert_eq!(out.metadata["desk"], "sales");
        assert_eq!(out.metadata["count"], "3");
        assert!(!out.metadata.contains_key("kind"));
    }

    #[test]
    fn a_body_that_is_not_json_is_bytes() {
        let processor = remap(json!({ "source": ". = upcase(string!(.))" })).unwrap();
        let passenger = Passenger::pulled("test", "x").with_body(Body {
            media_type: "text/plain".into(),
            data: Bytes::from_static(b"hello"),
        });
        let out = continued(processor.process(passenger).unwrap());
        assert_eq!(&out.body.data[..], b"HELLO");
        assert_eq!(out.body.media_type, "text/plain");
    }

    #[test]
    fn an_abort_fails_the_passenger_for_good() {
        let processor =
            remap(json!({ "source": "if to_int!(.amount) < 0 { abort \"negative amount\" }" }))
                .unwrap();
        let error = processor
            .process(passenger(json!({ "amount": -1 })))
            .unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "aborted at line 1, column 27: negative amount"
        );
        assert!(processor.process(passenger(json!({ "amount": 1 }))).is_ok());
    }

    #[test]
    fn a_failing_call_fails_the_passenger_for_good() {
        let processor = remap(json!({ "source": ".n = to_int!(.n)" })).unwrap();
        let error = processor
            .process(passenger(json!({ "n": "twelve" })))
            .unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("to_int"), "{error}");
        assert!(error.message.contains("line 1, column 6"), "{error}");
    }

    #[test]
    fn invalid_json_in_a_json_body_fails_for_good() {
        let processor = remap(json!({ "source": ".a = 1" })).unwrap();
        let mut passenger = passenger(json!({}));
        passenger.body.data = Bytes::from_static(b"{not json");
        let error = processor.process(passenger).unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("not valid JSON"), "{error}");
    }

    /// What the user sees from `ferry validate`: the line and column in the definition file.
    #[test]
    fn a_program_error_points_at_its_line_in_the_definition() {
        let pipeline = "pullers:\n  - { type: generate, count: 1 }\nprocessors:\n  - type: remap\n    source: |\n      .a = 1\n      .b = nope(.a)\npushers:\n  - { type: file, path: out }\n";
        let errors = validation_errors(std::path::Path::new("/tmp"), pipeline);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "clients/acme/pipelines/p.yaml:7:12: processors[0].source: call to undefined \
                 function (E105)"
            ),
            "{errors:?}"
        );
        assert!(errors[0].ends_with("(at `nope`)"), "{errors:?}");

        // Inline on the key's line, in quotes.
        let pipeline = "pullers: [{ type: generate, count: 1 }]\nprocessors:\n  - { type: remap, source: \".a = to_int(.b)\" }\npushers: [{ type: file, path: out }]\n";
        let errors = validation_errors(std::path::Path::new("/tmp"), pipeline);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "clients/acme/pipelines/p.yaml:3:34: processors[0].source: unhandled \
                 fallible assignment (E103)"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_program_file_error_names_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let client_dir = dir.path().join("clients/acme");
        std::fs::create_dir_all(&client_dir).unwrap();
        std::fs::write(client_dir.join("orders.vrl"), ".a = 1\n.b = nope()\n").unwrap();
        let pipeline = "pullers: [{ type: generate, count: 1 }]\nprocessors:\n  - type: remap\n    file: clients/acme/orders.vrl\npushers: [{ type: file, path: out }]\n";
        let errors = validation_errors(dir.path(), pipeline);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "clients/acme/pipelines/p.yaml:4:5: processors[0].file: \
                 clients/acme/orders.vrl:2:6: call to undefined function"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn a_program_file_works_like_an_inline_program() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.vrl"), ".b = to_int!(.a) * 2\n").unwrap();
        let ctx = BuildContext {
            project_dir: dir.path().to_path_buf(),
            sandbox: ferry_core::sandbox::Sandbox::within(dir.path(), ""),
            ..BuildContext::default()
        };
        let config = ferry_core::component::parse_config(&json!({ "file": "t.vrl" })).unwrap();
        let processor = RemapFactory.build(config, &ctx).unwrap();
        let out = continued(processor.process(passenger(json!({ "a": 2 }))).unwrap());
        assert_eq!(out.body.as_json().unwrap(), json!({ "a": 2, "b": 4 }));
    }

    #[test]
    fn source_or_file_but_not_both_and_no_unknown_keys() {
        let both = remap(json!({ "source": ".a = 1", "file": "x.vrl" }));
        assert!(both.err().unwrap().message.contains("not both"));
        let neither = remap(json!({}));
        assert!(
            neither
                .err()
                .unwrap()
                .message
                .contains("inline as `source`")
        );
        let unknown = remap(json!({ "program": ".a = 1" }));
        assert!(
            unknown
                .err()
                .unwrap()
                .message
                .contains("unknown field `program`")
        );
    }
}
