//! VRL (the Vector Remap Language) for the processors that run programs over a passenger:
//! `remap`, `filter`, `route`, `split` and `dedupe`.
//!
//! A program sees the passenger as two VRL values: `.` is the body (a JSON body as its value,
//! any other body as bytes) and `%` the metadata (an object of strings). Programs are compiled
//! when the definition is validated; a compile error becomes a [`BuildError`] at its line and
//! column, a runtime error (`abort`, a failing `!` call) a permanent [`StepError`].
//!
//! The standard library comes without its environment, system and network functions (they are
//! not compiled into ferry, so `get_env_var` cannot read ferry's secrets and no program reaches
//! the outside), without `log` (it would write payloads into ferry's log), and without the
//! parsers that recurse without a bound or read files from anywhere ([`LEFT_OUT`]).

use std::sync::OnceLock;

use bytes::Bytes;
use ferry_core::{Body, BuildContext, BuildError, Metadata, Passenger, StepError, TextPosition};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::state::ExternalEnv;
use vrl::compiler::{CompileConfig, ExpressionError, Function, Program, TargetValueRef, TimeZone};
use vrl::diagnostic::{Diagnostic, DiagnosticList};
use vrl::path::PathPrefix;
use vrl::value::kind::Collection;
use vrl::value::{Kind, ObjectMap, Secrets, Value};

/// Functions of VRL's standard library that ferry leaves out, with the reason, for errors and
/// the documentation. (The environment, system and network functions are not even compiled in.)
const LEFT_OUT: &[(&str, &str)] = &[
    (
        "log",
        "it would write passenger data into ferry's log; set metadata instead",
    ),
    // Issue 12: these parse outside data with unbounded recursion, so one deeply nested
    // document would overflow the stack and stop the whole process.
    (
        "parse_xml",
        "it has no depth bound (a deeply nested document stops the process); decode XML with \
         the `decode` processor (`codec: xml`) before the program",
    ),
    (
        "parse_ruby_hash",
        "it has no depth bound (a deeply nested hash stops the process)",
    ),
    // It reads alias files from any path of the server, outside the client's directories.
    (
        "parse_groks",
        "its `alias_sources` read files anywhere on the server; use `parse_grok` once per \
         pattern",
    ),
];

/// The functions a program may call: VRL's standard library minus [`LEFT_OUT`].
fn functions() -> &'static [Box<dyn Function>] {
    static FUNCTIONS: OnceLock<Vec<Box<dyn Function>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        vrl::stdlib::all()
            .into_iter()
            .filter(|function| {
                !LEFT_OUT
                    .iter()
                    .any(|(name, _)| *name == function.identifier())
            })
            .collect()
    })
}

/// A compiled VRL program, ready to run over passengers from several threads at once.
#[derive(Debug)]
pub(crate) struct VrlProgram {
    program: Program,
    /// Where the program is, for runtime errors: `line 2, column 5` or `check.vrl:2:5`.
    origin: Origin,
    /// The program text, for finding lines and columns of runtime errors.
    source: String,
    /// Whether the program reads or writes `.`; if not, the body is not parsed at all.
    uses_body: bool,
    /// Whether the program reads or writes `%`.
    uses_metadata: bool,
    mode: Mode,
    timezone: TimeZone,
}

/// What a program may do with the passenger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Change `.` and `%` (`remap`).
    Remap,
    /// Only read them: a condition, a key, a list of items. Assigning to or deleting from `.`
    /// or `%` is a compile error, so several expressions can look at one parsed body.
    Expression,
}

/// Where a program's text comes from.
#[derive(Clone, Debug)]
enum Origin {
    /// Inline in the definition.
    Inline,
    /// In a file, by the name the definition gave.
    File(String),
}

impl VrlProgram {
    /// Compiles the program written inline at `path` (a key path in the component's
    /// configuration, e.g. `["routes", "0", "when"]`); an error points at the line and column
    /// inside that text.
    pub(crate) fn inline(
        path: &[&str],
        source: &str,
        mode: Mode,
    ) -> Result<VrlProgram, BuildError> {
        compile(source, Origin::Inline, mode).map_err(|(position, message)| BuildError {
            path: path.iter().map(|key| key.to_string()).collect(),
            message,
            within: Some(position),
        })
    }

    /// Compiles the program in `file` (relative to the project directory, inside the client's
    /// directories or `clients/<client>/`); an error is
    /// reported at `key` with the file's name, line and column in its message.
    pub(crate) fn file(
        key: &str,
        file: &str,
        ctx: &BuildContext,
        mode: Mode,
    ) -> Result<VrlProgram, BuildError> {
        let path = ctx.definition_path(key, file)?;
        let source = std::fs::read_to_string(&path).map_err(|error| {
            BuildError::at(key, format!("cannot read the program `{file}`: {error}"))
        })?;
        compile(&source, Origin::File(file.to_string()), mode).map_err(|(at, message)| {
            BuildError::at(key, format!("{file}:{}:{}: {message}", at.line, at.column))
        })
    }

    /// Compiles the program given either inline as `source_key` or as a file in `file_key`:
    /// exactly one of them.
    pub(crate) fn inline_or_file(
        source_key: &str,
        source: Option<&str>,
        file_key: &str,
        file: Option<&str>,
        ctx: &BuildContext,
        mode: Mode,
    ) -> Result<VrlProgram, BuildError> {
        match (source, file) {
            (Some(source), None) => Self::inline(&[source_key], source, mode),
            (None, Some(file)) => Self::file(file_key, file, ctx, mode),
            (Some(_), Some(_)) => Err(BuildError::new(format!(
                "give the program either inline as `{source_key}` or in a file as `{file_key}`, \
                 not both"
            ))),
            (None, None) => Err(BuildError::new(format!(
                "give the program inline as `{source_key}` or in a file as `{file_key}`"
            ))),
        }
    }

    /// What the program's last expression can give, as VRL names kinds (`boolean`, `string or
    /// null`…), when it can never be one of `wanted`; `None` when it can.
    pub(crate) fn cannot_give(&self, wanted: fn(&Kind) -> bool) -> Option<String> {
        let kind = self.program.final_type_info().result.kind().clone();
        (!wanted(&kind)).then(|| kind.to_string())
    }

    /// The program, shortened to one line, to name it in reasons and errors.
    pub(crate) fn summary(&self) -> String {
        summary(&self.source)
    }

    /// Runs the program over the passenger and keeps what it changed in the body and the
    /// metadata. Returns the value of the program's last expression.
    pub(crate) fn remap(&self, passenger: &mut Passenger) -> Result<Value, StepError> {
        let json = self.uses_body && is_json(&passenger.body.media_type);
        let mut body = if self.uses_body {
            body_value(&passenger.body)?
        } else {
            Value::Null
        };
        let mut metadata = if self.uses_metadata {
            metadata_value(std::mem::take(&mut passenger.metadata))
        } else {
            Value::Null
        };
        let result = self.run(&mut body, &mut metadata)?;
        if self.uses_metadata {
            passenger.metadata = metadata_of(metadata)?;
        }
        if self.uses_body {
            set_body(&mut passenger.body, body, json)?;
        }
        Ok(result)
    }

    /// Runs an expression (compiled with [`Mode::Expression`]) over the passenger in `input`
    /// and returns its value.
    pub(crate) fn evaluate(&self, input: &mut Input<'_>) -> Result<Value, StepError> {
        debug_assert_eq!(
            self.mode,
            Mode::Expression,
            "only expressions leave `.` alone"
        );
        if self.uses_body && input.body.is_none() {
            input.body = Some(body_value(&input.passenger.body)?);
        }
        if self.uses_metadata && input.metadata.is_none() {
            input.metadata = Some(metadata_value(input.passenger.metadata.clone()));
        }
        // An expression that does not use one of them gets whatever is there, or null.
        let (mut no_body, mut no_metadata) = (Value::Null, Value::Null);
        let body = input.body.as_mut().unwrap_or(&mut no_body);
        let metadata = input.metadata.as_mut().unwrap_or(&mut no_metadata);
        self.run(body, metadata)
    }

    /// Runs the expression as a condition: its value must be a boolean.
    pub(crate) fn condition(&self, input: &mut Input<'_>) -> Result<bool, StepError> {
        match self.evaluate(input)? {
            Value::Boolean(value) => Ok(value),
            other => Err(StepError::permanent(format!(
                "the condition `{}` gave {} `{}`, not a boolean",
                self.summary(),
                kind_name(&other),
                shorten(&other.to_string_lossy(), 60),
            ))),
        }
    }

    fn run(&self, body: &mut Value, metadata: &mut Value) -> Result<Value, StepError> {
        self.run_in(&mut Runtime::default(), body, metadata)
    }

    /// Runs the program over `body` and `metadata` with `runtime`, which is cleared for the
    /// next run: one runtime serves every row of a record batch.
    pub(crate) fn run_in(
        &self,
        runtime: &mut Runtime,
        body: &mut Value,
        metadata: &mut Value,
    ) -> Result<Value, StepError> {
        let mut secrets = Secrets::default();
        let mut target = TargetValueRef {
            value: body,
            metadata,
            secrets: &mut secrets,
        };
        let result = runtime
            .resolve(&mut target, &self.program, &self.timezone)
            .map_err(|terminate| StepError::permanent(self.runtime_error(terminate)));
        runtime.clear();
        result
    }

    /// Whether the program reads or writes `.`: a program that does not runs once per record
    /// batch rather than once per row.
    pub(crate) fn uses_body(&self) -> bool {
        self.uses_body
    }

    /// Whether the program reads or writes `%`.
    pub(crate) fn uses_metadata(&self) -> bool {
        self.uses_metadata
    }

    /// A runtime error as one line, with VRL's byte offsets turned into lines and columns.
    fn runtime_error(&self, terminate: Terminate) -> String {
        let error = match terminate {
            Terminate::Interrupted => return "the program was interrupted".into(),
            Terminate::Abort(error) | Terminate::Error(error) => error,
        };
        match error {
            ExpressionError::Abort { span, message } => {
                let at = self.at(span.start());
                match message {
                    Some(message) => format!("aborted at {at}: {message}"),
                    None => format!("aborted at {at}"),
                }
            }
            ExpressionError::Error { message, .. } => {
                format!("the program failed: {}", self.with_positions(&message))
            }
            other => format!("the program failed: {other}"),
        }
    }

    /// `line 2, column 5` for an inline program, `check.vrl:2:5` for one in a file.
    fn at(&self, offset: usize) -> String {
        let TextPosition { line, column } = TextPosition::of_offset(self.source.as_bytes(), offset);
        match &self.origin {
            Origin::Inline => format!("line {line}, column {column}"),
            Origin::File(file) => format!("{file}:{line}:{column}"),
        }
    }

    /// VRL's `… at (16:29): …` (byte offsets) rewritten as `… at line 1, column 17: …`.
    fn with_positions(&self, message: &str) -> String {
        let mut out = String::with_capacity(message.len() + 16);
        let mut rest = message;
        while let Some(start) = rest.find(" at (") {
            let after = &rest[start + 5..];
            let Some(end) = after.find(')') else { break };
            let offsets = after[..end]
                .split_once(':')
                .and_then(|(from, _)| from.parse::<usize>().ok());
            out.push_str(&rest[..start]);
            match offsets {
                Some(from) => {
                    out.push_str(" at ");
                    out.push_str(&self.at(from));
                }
                None => out.push_str(&rest[start..start + 5 + end + 1]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// A passenger as expressions see it: the body parsed and the metadata converted once, when
/// the first expression that needs them runs, however many expressions look at them.
pub(crate) struct Input<'a> {
    passenger: &'a Passenger,
    body: Option<Value>,
    metadata: Option<Value>,
}

impl<'a> Input<'a> {
    pub(crate) fn new(passenger: &'a Passenger) -> Self {
        Input {
            passenger,
            body: None,
            metadata: None,
        }
    }
}

/// Compiles `source`; the first error as its position and a one-line message.
fn compile(source: &str, origin: Origin, mode: Mode) -> Result<VrlProgram, (TextPosition, String)> {
    // `.` may be any JSON value or bytes, not only the object VRL assumes by default; `%`
    // holds strings.
    let external = ExternalEnv::new_with_kind(
        Kind::any(),
        Kind::object(Collection::from_unknown(Kind::bytes())),
    );
    let mut config = CompileConfig::default();
    if mode == Mode::Expression {
        config.set_read_only();
    }
    let result = vrl::compiler::compile_with_external(source, functions(), &external, config)
        .map_err(|diagnostics| first_error(source, &diagnostics))?;
    let info = result.program.info();
    let uses = |prefix: PathPrefix| {
        info.target_queries
            .iter()
            .chain(&info.target_assignments)
            .any(|path| path.prefix == prefix)
    };
    Ok(VrlProgram {
        uses_body: uses(PathPrefix::Event),
        uses_metadata: uses(PathPrefix::Metadata),
        mode,
        program: result.program,
        origin,
        source: source.to_string(),
        // Programs that format or parse times without a zone get the same answer everywhere.
        timezone: TimeZone::parse("UTC").unwrap_or_default(),
    })
}

/// The first error of a failed compilation: where it is and what it says, on one line.
fn first_error(source: &str, diagnostics: &DiagnosticList) -> (TextPosition, String) {
    let errors = diagnostics.errors();
    let Some(first) = errors.first() else {
        return (
            TextPosition { line: 1, column: 1 },
            "invalid program".into(),
        );
    };
    let primary = first
        .labels
        .iter()
        .find(|label| label.primary)
        .or(first.labels.first());
    let offset = primary.map_or(0, |label| label.span.start());
    (
        TextPosition::of_offset(source.as_bytes(), offset),
        describe(source, first),
    )
}

/// `unhandled fallible assignment (E103); this expression is fallible because … (at
/// `to_int(.x)`)`: VRL's message and code, its primary labels and the text they point at.
fn describe(source: &str, diagnostic: &Diagnostic) -> String {
    let mut message = format!("{} (E{})", diagnostic.message, diagnostic.code);
    // The primary labels say what is wrong; context labels show fixes over several lines.
    for label in diagnostic.labels.iter().filter(|label| label.primary) {
        let text = label.message.trim();
        if !text.is_empty() && text != diagnostic.message && !message.contains(text) {
            message.push_str("; ");
            message.push_str(text);
        }
    }
    let mut near = None;
    if let Some(label) = diagnostic.labels.iter().find(|label| label.primary)
        && let Some(text) = source.get(label.span.start()..label.span.end())
    {
        let text = text.lines().next().unwrap_or_default().trim();
        if !text.is_empty() {
            near = Some(shorten(text, 60));
        }
    }
    if let Some(near) = near {
        message.push_str(&format!(" (at `{near}`)"));
    }
    // The functions ferry leaves out are "undefined" to VRL; say why.
    for (name, why) in LEFT_OUT {
        if message.contains("undefined function") && message.contains(&format!("`{name}`")) {
            message.push_str(&format!("; ferry leaves out `{name}`: {why}"));
        }
    }
    message.replace('\n', " ")
}

/// `text` on one line, at most `max` characters.
fn shorten(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

/// A program on one line (whitespace runs as one space), at most 80 characters.
fn summary(source: &str) -> String {
    let one_line = source.split_whitespace().collect::<Vec<_>>().join(" ");
    shorten(&one_line, 80)
}

/// Whether a media type is JSON: `application/json` or a `+json` type such as
/// `application/ld+json`, parameters aside. NDJSON is not one JSON value, so it is bytes.
pub(crate) fn is_json(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    let ends_with = |suffix: &str| {
        essence.len() >= suffix.len()
            && essence.as_bytes()[essence.len() - suffix.len()..]
                .eq_ignore_ascii_case(suffix.as_bytes())
    };
    essence.eq_ignore_ascii_case("application/json") || ends_with("+json")
}

/// The body as a VRL value: a JSON body parsed straight into VRL values (no `serde_json::Value`
/// in between), any other body as bytes (a string when it is UTF-8), without copying.
pub(crate) fn body_value(body: &Body) -> Result<Value, StepError> {
    if is_json(&body.media_type) {
        parse_json(&body.data).map_err(|error| {
            StepError::permanent(format!(
                "the body is not valid JSON ({}): {error}",
                body.media_type
            ))
        })
    } else {
        Ok(Value::from_utf8_or_bytes(body.data.clone()))
    }
}

/// JSON text parsed straight into a VRL value. Strings without escapes are not copied: they
/// become slices of `data` (the hot path of a `remap`: most of a JSON document is strings).
pub(crate) fn parse_json(data: &Bytes) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(data);
    let value = JsonSeed { source: data }.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes one JSON value into a VRL value, slicing strings out of `source`.
#[derive(Clone, Copy)]
struct JsonSeed<'s> {
    /// The whole JSON text being parsed; every borrowed string lies inside it.
    source: &'s Bytes,
}

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Boolean(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Integer(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Value, E> {
        // VRL integers are i64; larger ones become floats, as VRL's own parser does.
        Ok(match i64::try_from(value) {
            Ok(value) => Value::Integer(value),
            Err(_) => Value::from_f64_or_zero(value as f64),
        })
    }

    fn visit_f64<E>(self, value: f64) -> Result<Value, E> {
        // JSON has no NaN, so nothing becomes zero here.
        Ok(Value::from_f64_or_zero(value))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Value, E> {
        if value.is_empty() {
            return Ok(Value::from(""));
        }
        // `value` points into `source` (serde_json borrows only from its input), so this is
        // a reference-counted slice rather than a copy.
        Ok(Value::from_utf8_or_bytes(
            self.source.slice_ref(value.as_bytes()),
        ))
    }

    fn visit_str<E>(self, value: &str) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_string<E>(self, value: String) -> Result<Value, E> {
        Ok(Value::from(value))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = ObjectMap::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            fields.insert(key.into(), value);
        }
        Ok(Value::Object(fields))
    }
}

/// Writes `value` back as the body. A body that was not JSON stays bytes with its media type
/// while the program leaves `.` a string or bytes; anything else becomes JSON.
fn set_body(body: &mut Body, value: Value, was_json: bool) -> Result<(), StepError> {
    if !was_json {
        match value {
            Value::Bytes(bytes) => {
                body.data = bytes;
                return Ok(());
            }
            Value::String(text) => {
                body.data = text.into_bytes();
                return Ok(());
            }
            _ => body.media_type = "application/json".into(),
        }
    }
    body.data = json_bytes(&value, body.data.len())?;
    Ok(())
}

/// `value` as JSON text; `capacity` is a guess of its size.
pub(crate) fn json_bytes(value: &Value, capacity: usize) -> Result<Bytes, StepError> {
    let mut out = Vec::with_capacity(capacity + 64);
    serde_json::to_writer(&mut out, value).map_err(|error| {
        StepError::permanent(format!("the result cannot be written as JSON: {error}"))
    })?;
    Ok(Bytes::from(out))
}

/// The metadata as the VRL object `%`, moving the strings rather than copying them.
pub(crate) fn metadata_value(metadata: Metadata) -> Value {
    Value::Object(
        metadata
            .into_iter()
            .map(|(key, value)| (key.into(), Value::from(value)))
            .collect(),
    )
}

/// `%` back as metadata: strings as they are, anything else as its JSON text; a key the
/// program deleted (or set to null) is gone.
pub(crate) fn metadata_of(value: Value) -> Result<Metadata, StepError> {
    let fields = match value {
        Value::Object(fields) => fields,
        Value::Null => return Ok(Metadata::new()),
        other => {
            return Err(StepError::permanent(format!(
                "the program set `%` to {}; metadata must stay an object",
                kind_name(&other)
            )));
        }
    };
    let mut metadata = Metadata::new();
    for (key, value) in fields {
        let text = match value {
            Value::Null => continue,
            Value::String(text) => String::from(text),
            Value::Bytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => String::from_utf8_lossy(&json_bytes(&other, 16)?).into_owned(),
        };
        metadata.insert(key.into(), text);
    }
    Ok(metadata)
}

/// A value as text for keys and metadata: strings as they are, anything else as JSON.
pub(crate) fn text_of(value: &Value) -> Result<String, StepError> {
    Ok(match value {
        Value::String(text) => text.to_string(),
        Value::Bytes(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => String::from_utf8_lossy(&json_bytes(other, 16)?).into_owned(),
    })
}

/// `a string`, `an integer`… for messages.
pub(crate) fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Bytes(_) | Value::String(_) => "a string",
        Value::Regex(_) => "a regex",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Timestamp(_) => "a timestamp",
        Value::Object(_) => "an object",
        Value::Array(_) => "an array",
        Value::Null => "null",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn compiled(source: &str) -> VrlProgram {
        VrlProgram::inline(&["source"], source, Mode::Remap).unwrap()
    }

    fn expression(source: &str) -> VrlProgram {
        VrlProgram::inline(&["source"], source, Mode::Expression).unwrap()
    }

    fn compile_error(source: &str) -> BuildError {
        VrlProgram::inline(&["source"], source, Mode::Remap).unwrap_err()
    }

    fn json_passenger(body: serde_json::Value) -> Passenger {
        Passenger::pulled("test", "1").with_body(Body::json(&body))
    }

    #[test]
    fn a_syntax_error_has_its_line_and_column() {
        let error = compile_error(".a = 1\n.b = (\n");
        assert_eq!(error.path, ["source"]);
        // VRL points just past the `(`, where the program ends too early.
        assert_eq!(error.within, Some(TextPosition { line: 2, column: 7 }));
        assert!(
            error.message.starts_with("syntax error (E203)"),
            "{}",
            error.message
        );
        assert!(!error.message.contains('\n'), "{}", error.message);
    }

    #[test]
    fn an_undefined_function_is_named() {
        let error = compile_error(".a = 1\n.b = nope(.a)");
        assert_eq!(error.within, Some(TextPosition { line: 2, column: 6 }));
        assert!(
            error.message.contains("undefined function"),
            "{}",
            error.message
        );
        assert!(error.message.contains("nope"), "{}", error.message);
    }

    #[test]
    fn an_unhandled_error_is_a_compile_error() {
        let error = compile_error(".a = to_int(.b)");
        assert_eq!(
            error.message,
            "unhandled fallible assignment (E103); this expression is fallible because at least \
             one argument's type cannot be verified to be valid (at `to_int(.b)`)"
        );
        assert_eq!(error.within, Some(TextPosition { line: 1, column: 6 }));
    }

    #[test]
    fn environment_system_network_and_log_functions_are_left_out() {
        for call in [
            "get_env_var!(\"HOME\")",
            "get_hostname!()",
            "http_request!(\"http://example.com\")",
            "dns_lookup!(\"example.com\")",
            "log(\"x\")",
        ] {
            let error = compile_error(call);
            assert!(
                error.message.contains("undefined function"),
                "{call}: {error}"
            );
        }
        assert!(
            compile_error("log(.)")
                .message
                .contains("ferry leaves out `log`")
        );
        // Issue 12: 20,000 nested elements overflowed the stack in these (a poison passenger
        // stopped every pipeline); a file read from anywhere in the other.
        for (call, name) in [
            ("parse_xml!(\"<a/>\")", "parse_xml"),
            ("parse_ruby_hash!(\"{}\")", "parse_ruby_hash"),
            (
                "parse_groks!(\"x\", patterns: [\"%{WORD:w}\"])",
                "parse_groks",
            ),
        ] {
            let error = compile_error(call);
            assert!(
                error
                    .message
                    .contains(&format!("ferry leaves out `{name}`")),
                "{call}: {error}"
            );
        }
        // The rest of the standard library, crypto included, is there.
        compiled("sha2(\"x\") ; md5(\"x\") ; upcase(\"x\") ; parse_json!(\"{}\")");
    }

    #[test]
    fn a_program_from_a_file_reports_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.vrl"), ".a = 1\n  .b = nope()\n").unwrap();
        let ctx = BuildContext {
            project_dir: dir.path().to_path_buf(),
            sandbox: ferry_core::sandbox::Sandbox::within(dir.path(), ""),
            ..BuildContext::default()
        };
        let error = VrlProgram::file("file", "t.vrl", &ctx, Mode::Remap).unwrap_err();
        assert_eq!(error.path, ["file"]);
        assert_eq!(error.within, None);
        assert!(
            error.message.starts_with("t.vrl:2:8: "),
            "{}",
            error.message
        );
        let error = VrlProgram::file("file", "missing.vrl", &ctx, Mode::Remap).unwrap_err();
        assert!(
            error
                .message
                .starts_with("cannot read the program `missing.vrl`")
        );
    }

    #[test]
    fn inline_or_file_wants_exactly_one() {
        let ctx = BuildContext::default();
        let both =
            VrlProgram::inline_or_file("source", Some("."), "file", Some("x"), &ctx, Mode::Remap);
        assert!(both.unwrap_err().message.contains("not both"));
        let none = VrlProgram::inline_or_file("source", None, "file", None, &ctx, Mode::Remap);
        assert!(none.unwrap_err().message.contains("inline as `source`"));
    }

    #[test]
    fn json_bodies_round_trip_and_other_bodies_are_bytes() {
        let program = compiled(".n = to_int!(.n) + 1");
        let mut passenger = json_passenger(json!({ "n": 1, "s": "ü", "a": [1.5, null, true] }));
        program.remap(&mut passenger).unwrap();
        assert_eq!(
            passenger.body.as_json().unwrap(),
            json!({ "n": 2, "s": "ü", "a": [1.5, null, true] })
        );

        let program = compiled(". = upcase(string!(.))");
        let mut passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "text/plain".into(),
            data: Bytes::from_static(b"hello"),
        });
        program.remap(&mut passenger).unwrap();
        assert_eq!(&passenger.body.data[..], b"HELLO");
        assert_eq!(passenger.body.media_type, "text/plain");

        // A text body turned into an object becomes JSON.
        let program = compiled(". = { \"text\": . }");
        let mut passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "text/plain".into(),
            data: Bytes::from_static(b"hi"),
        });
        program.remap(&mut passenger).unwrap();
        assert_eq!(passenger.body.media_type, "application/json");
        assert_eq!(passenger.body.as_json().unwrap(), json!({ "text": "hi" }));
    }

    #[test]
    fn metadata_is_strings_both_ways() {
        let program = compiled(
            "%n = 3\n%o = { \"a\": 1 }\n%s = string!(%kind) + \"!\"\ndel(%gone)\n%z = null",
        );
        let mut passenger = json_passenger(json!({}));
        passenger.metadata.insert("kind".into(), "order".into());
        passenger.metadata.insert("gone".into(), "x".into());
        program.remap(&mut passenger).unwrap();
        let metadata: Vec<(&str, &str)> = passenger
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            metadata,
            [
                ("kind", "order"),
                ("n", "3"),
                ("o", "{\"a\":1}"),
                ("s", "order!")
            ]
        );
    }

    #[test]
    fn the_body_may_be_any_value_and_metadata_values_are_strings() {
        // `.` is not assumed to be an object: it may be an array, a string, bytes.
        let program = compiled(". = push(array!(.), 3)");
        let mut passenger = json_passenger(json!([1, 2]));
        program.remap(&mut passenger).unwrap();
        assert_eq!(passenger.body.as_json().unwrap(), json!([1, 2, 3]));
        // A metadata value is a string or missing.
        let error = compile_error("%a = upcase(%b)");
        assert!(
            error
                .message
                .contains("`%b` argument type is `string or undefined`"),
            "{error}"
        );
        compiled("%a = upcase(%b) ?? \"none\"");
        // Fields set on a text body make it a JSON object.
        let mut passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "text/plain".into(),
            data: Bytes::from_static(b"hi"),
        });
        compiled(".a = 1").remap(&mut passenger).unwrap();
        assert_eq!(passenger.body.media_type, "application/json");
        assert_eq!(passenger.body.as_json().unwrap(), json!({ "a": 1 }));
    }

    #[test]
    fn metadata_must_stay_an_object() {
        let error = compiled("% = 1")
            .remap(&mut json_passenger(json!({})))
            .unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("must stay an object"), "{error}");
    }

    #[test]
    fn a_program_that_does_not_use_the_body_leaves_it_alone() {
        // Not JSON although it says so: a metadata-only program never parses it.
        let mut passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "application/json".into(),
            data: Bytes::from_static(b"{broken"),
        });
        compiled("%seen = \"yes\"").remap(&mut passenger).unwrap();
        assert_eq!(&passenger.body.data[..], b"{broken");
        assert_eq!(passenger.metadata["seen"], "yes");
        let error = compiled(".a = 1").remap(&mut passenger).unwrap_err();
        assert!(error.message.contains("not valid JSON"), "{error}");
        assert!(!error.retryable);
    }

    #[test]
    fn runtime_errors_are_permanent_with_lines_and_columns() {
        let program = compiled(".a = 1\nif to_int!(.n) > 1 { abort \"too big\" }");
        let error = program
            .remap(&mut json_passenger(json!({ "n": 2 })))
            .unwrap_err();
        assert!(!error.retryable);
        assert_eq!(error.message, "aborted at line 2, column 22: too big");

        let program = compiled("\n.a = to_int!(.b)");
        let error = program
            .remap(&mut json_passenger(json!({ "b": "x" })))
            .unwrap_err();
        assert!(!error.retryable);
        assert!(
            error.message.starts_with(
                "the program failed: function call error for \"to_int\" at line 2, column 6: "
            ),
            "{error}"
        );
    }

    #[test]
    fn expressions_cannot_change_the_passenger_and_conditions_want_booleans() {
        let error =
            VrlProgram::inline(&["when"], "x = 1\n.a = 2\n.a == 2", Mode::Expression).unwrap_err();
        assert_eq!(error.within, Some(TextPosition { line: 2, column: 1 }));
        assert!(error.message.contains("read-only"), "{error}");
        assert!(VrlProgram::inline(&["when"], "del(%a) == \"x\"", Mode::Expression).is_err());

        let passenger = json_passenger(json!({ "a": 1 }));
        let mut input = Input::new(&passenger);
        assert!(expression("x = .a\nx == 1").condition(&mut input).unwrap());
        assert!(!expression(".a == 2").condition(&mut input).unwrap());
        let error = expression(".a").condition(&mut input).unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "the condition `.a` gave an integer `1`, not a boolean"
        );
    }

    #[test]
    fn expressions_over_metadata_only_never_parse_the_body() {
        let mut passenger = Passenger::pulled("test", "1").with_body(Body {
            media_type: "application/json".into(),
            data: Bytes::from_static(b"{broken"),
        });
        passenger.metadata.insert("kind".into(), "order".into());
        let mut input = Input::new(&passenger);
        assert!(
            expression("%kind == \"order\"")
                .condition(&mut input)
                .unwrap()
        );
        let error = expression(".a == 1").condition(&mut input).unwrap_err();
        assert!(
            error.message.starts_with("the body is not valid JSON"),
            "{error}"
        );
    }

    #[test]
    fn result_kinds_are_known_at_compile_time() {
        assert_eq!(
            expression(".a == 1").cannot_give(Kind::contains_boolean),
            None
        );
        assert_eq!(
            expression("\"x\"")
                .cannot_give(Kind::contains_boolean)
                .as_deref(),
            Some("string")
        );
        assert_eq!(expression(".a").cannot_give(Kind::contains_boolean), None);
    }

    #[test]
    fn json_is_parsed_into_vrl_values() {
        let data = Bytes::from_static(
            br#"{"s":"plain","e":"esc\"aped","n":-3,"u":18446744073709551615,"f":1.5,
                "b":true,"z":null,"a":[1,"x",{}],"o":{"k":""}}"#,
        );
        let value = parse_json(&data).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&json_bytes(&value, 0).unwrap()).unwrap();
        assert_eq!(
            json,
            json!({ "s": "plain", "e": "esc\"aped", "n": -3, "u": 18446744073709551615.0,
                    "f": 1.5, "b": true, "z": null, "a": [1, "x", {}], "o": { "k": "" } })
        );
        assert!(
            parse_json(&Bytes::from_static(b"{} x")).is_err(),
            "trailing text"
        );
        assert!(parse_json(&Bytes::from_static(b"[1,")).is_err());
        let deep = Bytes::from("[".repeat(1000) + &"]".repeat(1000));
        assert!(parse_json(&deep).is_err(), "nesting is bounded");
    }

    #[test]
    fn json_media_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/ld+json"));
        assert!(is_json("Application/JSON"));
        assert!(!is_json("application/x-ndjson"));
        assert!(!is_json("text/plain"));
    }

    #[test]
    fn summaries_are_one_short_line() {
        assert_eq!(summary("  .a == 1 &&\n   .b == 2\n"), ".a == 1 && .b == 2");
        assert_eq!(summary(&"x".repeat(100)).chars().count(), 81);
    }
}
