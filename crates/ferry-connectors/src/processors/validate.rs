//! `validate`: checks the JSON body against a JSON Schema; a passenger that violates it fails
//! permanently with the list of violations.
//!
//! ```yaml
//! processors:
//!   - type: validate
//!     schema:
//!       type: object
//!       required: [order_id, amount]
//!       properties:
//!         amount: { type: number, minimum: 0 }
//! ```

use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, StepError,
};
use jsonschema::Validator;
use serde::Deserialize;

/// Violations listed in one error, sorted by their pointers; the rest are counted.
const MAX_LISTED: usize = 20;
/// Characters of one violation's message; long ones quote large parts of the body.
const MAX_MESSAGE: usize = 200;

/// Configuration of the `validate` processor: the schema inline or in a file, not both.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    /// The JSON Schema, written as YAML or JSON in the definition. The draft follows its
    /// `$schema` (default 2020-12); `format` is checked, not only an annotation.
    #[serde(default)]
    pub schema: Option<serde_json::Value>,
    /// A JSON file holding the schema, relative to the project directory; read when the
    /// definition is validated.
    #[serde(default)]
    pub schema_file: Option<String>,
}

/// Builds `validate` processors.
pub struct ValidateFactory;

impl ProcessorFactory for ValidateFactory {
    const TYPE: &'static str = "validate";
    type Config = ValidateConfig;

    fn build(
        &self,
        config: ValidateConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        let validator = match (config.schema, config.schema_file) {
            (Some(schema), None) => compile(&schema).map_err(|(pointer, message)| {
                let mut path = vec!["schema".to_string()];
                path.extend(pointer);
                BuildError {
                    path,
                    message,
                    within: None,
                }
            })?,
            (None, Some(file)) => {
                let path = ctx.definition_path("schema_file", &file)?;
                let text = std::fs::read_to_string(path).map_err(|error| {
                    BuildError::at("schema_file", format!("cannot read `{file}`: {error}"))
                })?;
                let schema: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
                    BuildError::at("schema_file", format!("`{file}` is not JSON: {error}"))
                })?;
                compile(&schema).map_err(|(pointer, message)| {
                    let at = if pointer.is_empty() {
                        String::new()
                    } else {
                        format!(" at /{}", pointer.join("/"))
                    };
                    BuildError::at("schema_file", format!("`{file}`{at}: {message}"))
                })?
            }
            (Some(_), Some(_)) => {
                return Err(BuildError::new(
                    "give the schema either inline as `schema` or in a file as `schema_file`, \
                     not both",
                ));
            }
            (None, None) => {
                return Err(BuildError::new(
                    "give the schema inline as `schema` or in a file as `schema_file`",
                ));
            }
        };
        Ok(Box::new(Validate { validator }))
    }
}

/// Compiles a schema; an error as the key path inside the schema and a message.
fn compile(schema: &serde_json::Value) -> Result<Validator, (Vec<String>, String)> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|error| {
            let pointer = pointer_keys(error.instance_path().as_str());
            (pointer, format!("invalid schema: {error}"))
        })
}

/// `/a/b~1c/0` as keys `["a", "b/c", "0"]`.
fn pointer_keys(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|key| key.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Checks passengers against a schema.
pub struct Validate {
    validator: Validator,
}

impl std::fmt::Debug for Validate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validate").finish_non_exhaustive()
    }
}

impl Processor for Validate {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let body: serde_json::Value =
            serde_json::from_slice(&passenger.body.data).map_err(|error| {
                StepError::permanent(format!(
                    "the body is not JSON ({}), so it cannot match the schema: {error}",
                    passenger.body.media_type
                ))
            })?;
        let mut violations: Vec<(String, String)> = self
            .validator
            .iter_errors(&body)
            .map(|error| {
                let pointer = match error.instance_path().as_str() {
                    "" => "/".to_string(),
                    pointer => pointer.to_string(),
                };
                (pointer, shorten(&error.to_string()))
            })
            .collect();
        if violations.is_empty() {
            return Ok(Outcome::Continue(passenger));
        }
        // In the order of the body's parts, whatever order the schema's keywords ran in.
        violations.sort();
        let count = violations.len();
        let violations: Vec<String> = violations
            .into_iter()
            .take(MAX_LISTED)
            .map(|(pointer, message)| format!("{pointer}: {message}"))
            .collect();
        let mut message = format!(
            "the body violates the schema ({count} violation{}): {}",
            if count == 1 { "" } else { "s" },
            violations.join("; ")
        );
        if count > violations.len() {
            message.push_str(&format!("; and {} more", count - violations.len()));
        }
        Err(StepError::permanent(message))
    }
}

/// A message on one line, at most [`MAX_MESSAGE`] characters.
fn shorten(message: &str) -> String {
    let one_line = message.replace('\n', " ");
    match one_line.char_indices().nth(MAX_MESSAGE) {
        Some((at, _)) => format!("{}…", &one_line[..at]),
        None => one_line,
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::Body;
    use serde_json::json;

    use super::*;

    fn validate(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        ValidateFactory.build(config, &BuildContext::default())
    }

    fn order_schema() -> serde_json::Value {
        json!({
            "type": "object",
            "required": ["order_id", "amount"],
            "properties": {
                "order_id": { "type": "string" },
                "amount": { "type": "number", "minimum": 0 },
                "email": { "type": "string", "format": "email" },
            },
        })
    }

    fn passenger(body: serde_json::Value) -> Passenger {
        Passenger::pulled("shop", "1").with_body(Body::json(&body))
    }

    #[test]
    fn a_valid_body_travels_on_unchanged() {
        let v = validate(json!({ "schema": order_schema() })).unwrap();
        let input = passenger(json!({ "order_id": "A-1", "amount": 3.5 }));
        match v.process(input.clone()).unwrap() {
            Outcome::Continue(out) => assert_eq!(out, input),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn violations_are_listed_with_their_pointers() {
        let v = validate(json!({ "schema": order_schema() })).unwrap();
        let error = v
            .process(passenger(json!({ "amount": -1, "email": "nope" })))
            .unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "the body violates the schema (3 violations): /: \"order_id\" is a required \
             property; /amount: -1 is less than the minimum of 0; /email: \"nope\" is not a \
             \"email\""
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let schema = json!({ "type": "array", "items": { "type": "string" } });
        let v = validate(json!({ "schema": schema })).unwrap();
        let error = v
            .process(passenger(json!((0..25).collect::<Vec<_>>())))
            .unwrap_err();
        assert!(
            error
                .message
                .starts_with("the body violates the schema (25 violations): /0: ")
        );
        assert!(error.message.ends_with("; and 5 more"), "{error}");
    }

    #[test]
    fn a_body_that_is_not_json_fails_permanently() {
        let v = validate(json!({ "schema": order_schema() })).unwrap();
        let input = Passenger::pulled("shop", "1").with_body(Body {
            media_type: "text/plain".into(),
            data: "hello".into(),
        });
        let error = v.process(input).unwrap_err();
        assert!(!error.retryable);
        assert!(
            error
                .message
                .starts_with("the body is not JSON (text/plain)"),
            "{error}"
        );
    }

    #[test]
    fn a_bad_schema_is_reported_at_its_key() {
        let error = validate(json!({ "schema": {
            "type": "object",
            "properties": { "amount": { "type": "numbr" } },
        }}))
        .err()
        .unwrap();
        assert_eq!(error.path, ["schema", "properties", "amount", "type"]);
        assert!(error.message.starts_with("invalid schema: "), "{error}");
        let error = validate(json!({ "schema": { "$ref": "https://example.com/s.json" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["schema"]);
    }

    #[test]
    fn a_schema_file_works_and_its_errors_name_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("order.json"), order_schema().to_string()).unwrap();
        std::fs::write(dir.path().join("bad.json"), r#"{"minimum": "zero"}"#).unwrap();
        std::fs::write(dir.path().join("broken.json"), "{").unwrap();
        let ctx = BuildContext {
            project_dir: dir.path().to_path_buf(),
            sandbox: ferry_core::sandbox::Sandbox::within(dir.path(), ""),
            ..BuildContext::default()
        };
        let build = |file: &str| {
            let config = ValidateConfig {
                schema: None,
                schema_file: Some(file.into()),
            };
            ValidateFactory.build(config, &ctx)
        };
        let v = build("order.json").unwrap();
        assert!(
            v.process(passenger(json!({ "order_id": "A", "amount": 1 })))
                .is_ok()
        );
        assert!(v.process(passenger(json!({ "order_id": "A" }))).is_err());

        let error = build("bad.json").err().unwrap();
        assert_eq!(error.path, ["schema_file"]);
        assert!(
            error
                .message
                .starts_with("`bad.json` at /minimum: invalid schema"),
            "{error}"
        );
        let error = build("broken.json").err().unwrap();
        assert!(
            error.message.starts_with("`broken.json` is not JSON"),
            "{error}"
        );
        let error = build("missing.json").err().unwrap();
        assert!(
            error.message.starts_with("cannot read `missing.json`"),
            "{error}"
        );
    }

    #[test]
    fn schema_or_schema_file_but_not_both() {
        let both = validate(json!({ "schema": {}, "schema_file": "x.json" }));
        assert!(both.err().unwrap().message.contains("not both"));
        let neither = validate(json!({}));
        assert!(
            neither
                .err()
                .unwrap()
                .message
                .contains("inline as `schema`")
        );
    }

    #[test]
    fn pointers_unescape() {
        assert_eq!(pointer_keys(""), Vec::<String>::new());
        assert_eq!(pointer_keys("/a/b~1c/0/~0"), ["a", "b/c", "0", "~"]);
    }
}
