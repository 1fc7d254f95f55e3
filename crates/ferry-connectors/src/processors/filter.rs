//! `filter`: lets passengers through by their metadata or by a VRL condition, or stops them
//! with a recorded reason.
//!
//! ```yaml
//! processors:
//!   - type: filter
//!     keep: { metadata: kind, equals: invoice }
//!     drop: { metadata: customer, matches: "^test-" }
//!     condition: .amount > 100 && %country == "DE"
//! ```

use std::fmt;

use ferry_core::records;
use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, StepError,
};
use regex::Regex;
use serde::Deserialize;
use vrl::value::Kind;

use super::program::{Input, Mode, VrlProgram};
use super::rows;

/// Configuration of the `filter` processor. At least one of `keep`, `drop` and `condition` is
/// required; with several, a passenger travels on only when it meets `keep`, does not meet
/// `drop` and the condition is true. They are checked in that order, and the first that stops
/// the passenger is named in the reason.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Only passengers that meet this condition travel on.
    #[serde(default)]
    pub keep: Option<Condition>,
    /// Passengers that meet this condition stop here.
    #[serde(default)]
    pub drop: Option<Condition>,
    /// A VRL boolean expression over the body (`.`) and the metadata (`%`), e.g.
    /// `.amount > 100`; only passengers for which it is true travel on. A result that is not a
    /// boolean fails the passenger permanently. Changes the expression makes are discarded.
    /// Over a record batch it is checked row by row (`.` is the row): the rows for which it is
    /// false are dropped and counted in the metadata `rows_dropped`.
    #[serde(default)]
    pub condition: Option<String>,
}

/// A test of one metadata value: exactly one of `equals`, `matches` and `exists`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The metadata key to look at.
    pub metadata: String,
    /// The value equals this text exactly.
    #[serde(default)]
    pub equals: Option<String>,
    /// The value matches this regular expression somewhere (anchor it with `^…$` to match the
    /// whole value). A missing key never matches.
    #[serde(default)]
    pub matches: Option<String>,
    /// `true`: the key is present; `false`: it is absent.
    #[serde(default)]
    pub exists: Option<bool>,
}

/// Builds `filter` processors.
pub struct FilterFactory;

impl ProcessorFactory for FilterFactory {
    const TYPE: &'static str = "filter";
    type Config = FilterConfig;

    fn build(
        &self,
        config: FilterConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        if config.keep.is_none() && config.drop.is_none() && config.condition.is_none() {
            return Err(BuildError::new(
                "give `keep`, `drop`, `condition` or several of them, e.g. \
                 `keep: { metadata: kind, equals: invoice }` or `condition: .amount > 100`",
            ));
        }
        let keep = config.keep.map(|c| Test::validate(c, "keep")).transpose()?;
        let drop = config.drop.map(|c| Test::validate(c, "drop")).transpose()?;
        let condition = match config.condition {
            Some(source) => Some(boolean_program("condition", &source)?),
            None => None,
        };
        Ok(Box::new(Filter {
            keep,
            drop,
            condition,
        }))
    }
}

/// Keeps or drops passengers by their metadata.
#[derive(Debug)]
pub struct Filter {
    keep: Option<Test>,
    drop: Option<Test>,
    condition: Option<VrlProgram>,
}

/// Compiles the VRL condition at `key`, refusing one that can never give a boolean.
pub(crate) fn boolean_program(key: &str, source: &str) -> Result<VrlProgram, BuildError> {
    let program = VrlProgram::inline(&[key], source, Mode::Expression)?;
    if let Some(kind) = program.cannot_give(Kind::contains_boolean) {
        return Err(BuildError::at(
            key,
            format!("the condition must give a boolean (`true` or `false`) but gives {kind}"),
        ));
    }
    Ok(program)
}

impl Processor for Filter {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        if let Some(keep) = &self.keep
            && !keep.is_met(&passenger)
        {
            return Ok(Outcome::Filtered {
                reason: format!("keep condition not met: {keep}"),
            });
        }
        if let Some(drop) = &self.drop
            && drop.is_met(&passenger)
        {
            return Ok(Outcome::Filtered {
                reason: format!("drop condition met: {drop}"),
            });
        }
        if let Some(condition) = &self.condition
            && rows::is_records(&passenger.body)
        {
            return self.filter_rows(condition, passenger);
        }
        if let Some(condition) = &self.condition
            && !condition.condition(&mut Input::new(&passenger))?
        {
            return Ok(Outcome::Filtered {
                reason: format!("condition is false: `{}`", condition.summary()),
            });
        }
        Ok(Outcome::Continue(passenger))
    }
}

impl Filter {
    /// Keeps the rows of a record batch for which the condition is true. A batch left without
    /// rows is filtered, unless it is a chunk of a load: that travels on empty, so that the
    /// pusher still sees every chunk of the load and completes it.
    fn filter_rows(
        &self,
        condition: &VrlProgram,
        mut passenger: Passenger,
    ) -> Result<Outcome, StepError> {
        let dropped = rows::filter(condition, &mut passenger)?;
        let kept = records::read(&passenger.body).map_or(0, |batch| batch.rows);
        if kept == 0 && dropped > 0 && records::Chunk::of(&passenger).is_none() {
            return Ok(Outcome::Filtered {
                reason: format!(
                    "the condition is false for every row ({dropped}): `{}`",
                    condition.summary()
                ),
            });
        }
        Ok(Outcome::Continue(passenger))
    }
}

/// A validated [`Condition`].
#[derive(Debug)]
struct Test {
    key: String,
    check: Check,
}

#[derive(Debug)]
enum Check {
    Equals(String),
    Matches(Regex),
    Exists(bool),
}

impl Test {
    /// `config` as a test; `at` is its key in the configuration, for errors.
    fn validate(config: Condition, at: &str) -> Result<Test, BuildError> {
        let error = |key: Option<&str>, message: String| BuildError {
            path: std::iter::once(at).chain(key).map(String::from).collect(),
            message,
            within: None,
        };
        if config.metadata.is_empty() {
            return Err(error(Some("metadata"), "the metadata key is empty".into()));
        }
        let check = match (config.equals, config.matches, config.exists) {
            (Some(value), None, None) => Check::Equals(value),
            (None, Some(pattern), None) => match Regex::new(&pattern) {
                Ok(regex) => Check::Matches(regex),
                Err(e) => return Err(error(Some("matches"), format!("invalid regex: {e}"))),
            },
            (None, None, Some(exists)) => Check::Exists(exists),
            _ => {
                return Err(error(
                    None,
                    "give exactly one of `equals`, `matches` and `exists`".into(),
                ));
            }
        };
        Ok(Test {
            key: config.metadata,
            check,
        })
    }

    fn is_met(&self, passenger: &Passenger) -> bool {
        let value = passenger.metadata.get(&self.key);
        match &self.check {
            Check::Equals(expected) => value == Some(expected),
            Check::Matches(regex) => value.is_some_and(|value| regex.is_match(value)),
            Check::Exists(exists) => value.is_some() == *exists,
        }
    }
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        match &self.check {
            Check::Equals(value) => write!(f, "metadata `{key}` equals `{value}`"),
            Check::Matches(regex) => write!(f, "metadata `{key}` matches `{regex}`"),
            Check::Exists(true) => write!(f, "metadata `{key}` exists"),
            Check::Exists(false) => write!(f, "metadata `{key}` does not exist"),
        }
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::ProcessorFactory;
    use serde_json::json;

    use super::*;

    fn filter(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        FilterFactory.build(config, &BuildContext::default())
    }

    fn passenger(kind: Option<&str>) -> Passenger {
        let mut passenger = Passenger::pulled("test", "1");
        if let Some(kind) = kind {
            passenger.metadata.insert("kind".into(), kind.into());
        }
        passenger
    }

    /// `Some(reason)` when filtered, `None` when it travels on.
    fn run(processor: &dyn Processor, kind: Option<&str>) -> Option<String> {
        match processor.process(passenger(kind)).unwrap() {
            Outcome::Continue(_) => None,
            Outcome::Filtered { reason } => Some(reason),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn keep_equals() {
        let f = filter(json!({ "keep": { "metadata": "kind", "equals": "invoice" } })).unwrap();
        assert_eq!(run(&*f, Some("invoice")), None);
        assert_eq!(
            run(&*f, Some("order")).unwrap(),
            "keep condition not met: metadata `kind` equals `invoice`"
        );
        assert!(run(&*f, None).is_some());
    }

    #[test]
    fn keep_matches() {
        let f = filter(json!({ "keep": { "metadata": "kind", "matches": "^in" } })).unwrap();
        assert_eq!(run(&*f, Some("invoice")), None);
        assert!(run(&*f, Some("refund")).unwrap().contains("matches `^in`"));
        assert!(run(&*f, None).is_some(), "a missing key never matches");
    }

    #[test]
    fn keep_exists() {
        let f = filter(json!({ "keep": { "metadata": "kind", "exists": true } })).unwrap();
        assert_eq!(run(&*f, Some("anything")), None);
        assert!(run(&*f, None).unwrap().contains("`kind` exists"));
        let f = filter(json!({ "keep": { "metadata": "kind", "exists": false } })).unwrap();
        assert_eq!(run(&*f, None), None);
        assert!(run(&*f, Some("x")).unwrap().contains("does not exist"));
    }

    #[test]
    fn drop_is_the_inverse() {
        let f = filter(json!({ "drop": { "metadata": "kind", "equals": "refund" } })).unwrap();
        assert_eq!(run(&*f, Some("order")), None);
        assert_eq!(run(&*f, None), None);
        assert_eq!(
            run(&*f, Some("refund")).unwrap(),
            "drop condition met: metadata `kind` equals `refund`"
        );
    }

    #[test]
    fn keep_and_drop_together() {
        let f = filter(json!({
            "keep": { "metadata": "kind", "exists": true },
            "drop": { "metadata": "kind", "matches": "^ref" },
        }))
        .unwrap();
        assert_eq!(run(&*f, Some("order")), None);
        assert!(run(&*f, Some("refund")).unwrap().starts_with("drop"));
        assert!(run(&*f, None).unwrap().starts_with("keep"));
    }

    #[test]
    fn bad_regex_is_reported_at_its_key() {
        let error = filter(json!({ "keep": { "metadata": "kind", "matches": "(" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["keep", "matches"]);
        assert!(error.message.starts_with("invalid regex"), "{error}");
    }

    #[test]
    fn exactly_one_check_is_required() {
        let error = filter(json!({ "keep": { "metadata": "kind" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["keep"]);
        assert!(error.message.contains("exactly one of"), "{error}");
        let two = json!({ "drop": { "metadata": "kind", "equals": "a", "exists": true } });
        assert_eq!(filter(two).err().unwrap().path, ["drop"]);
    }

    fn json_passenger(body: serde_json::Value) -> Passenger {
        let mut passenger = Passenger::pulled("test", "1").with_body(ferry_core::Body::json(&body));
        passenger.metadata.insert("country".into(), "DE".into());
        passenger
    }

    fn outcome(processor: &dyn Processor, body: serde_json::Value) -> Option<String> {
        match processor.process(json_passenger(body)).unwrap() {
            Outcome::Continue(_) => None,
            Outcome::Filtered { reason } => Some(reason),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn condition_keeps_passengers_for_which_it_is_true() {
        let f =
            filter(json!({ "condition": "(to_int(.amount) ?? 0) > 100 && %country == \"DE\"" }))
                .unwrap();
        assert_eq!(outcome(&*f, json!({ "amount": 150 })), None);
        assert_eq!(
            outcome(&*f, json!({ "amount": 50 })).unwrap(),
            "condition is false: `(to_int(.amount) ?? 0) > 100 && %country == \"DE\"`"
        );
        assert!(outcome(&*f, json!({})).is_some(), "a missing amount is 0");
    }

    #[test]
    fn condition_combines_with_keep_and_drop() {
        let f = filter(json!({
            "keep": { "metadata": "country", "exists": true },
            "drop": { "metadata": "country", "equals": "FR" },
            "condition": ".ok == true",
        }))
        .unwrap();
        assert_eq!(outcome(&*f, json!({ "ok": true })), None);
        assert!(
            outcome(&*f, json!({ "ok": false }))
                .unwrap()
                .starts_with("condition is false")
        );
        let mut french = json_passenger(json!({ "ok": true }));
        french.metadata.insert("country".into(), "FR".into());
        match f.process(french).unwrap() {
            Outcome::Filtered { reason } => assert!(reason.starts_with("drop"), "{reason}"),
            other => panic!("unexpected outcome {other:?}"),
        }
        // keep is checked first: the condition is not even run.
        let mut nowhere = json_passenger(json!({ "ok": true }));
        nowhere.metadata.clear();
        match f.process(nowhere).unwrap() {
            Outcome::Filtered { reason } => assert!(reason.starts_with("keep"), "{reason}"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn a_condition_that_is_not_boolean_fails_permanently() {
        let f = filter(json!({ "condition": ".amount" })).unwrap();
        let error = f
            .process(json_passenger(json!({ "amount": 3 })))
            .unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "the condition `.amount` gave an integer `3`, not a boolean"
        );
    }

    #[test]
    fn a_condition_that_can_never_be_boolean_is_refused() {
        let error = filter(json!({ "condition": "upcase(\"x\")" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["condition"]);
        assert_eq!(
            error.message,
            "the condition must give a boolean (`true` or `false`) but gives string"
        );
    }

    #[test]
    fn a_condition_that_does_not_compile_is_reported_at_its_position() {
        let error = filter(json!({ "condition": ".a ==\n  nope(.b)" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["condition"]);
        assert_eq!(
            error.within,
            Some(ferry_core::TextPosition { line: 2, column: 3 })
        );
        assert!(error.message.contains("undefined function"), "{error}");
    }

    #[test]
    fn refuses_empty_and_unknown_configuration() {
        assert!(
            filter(json!({}))
                .err()
                .unwrap()
                .message
                .contains("`keep`, `drop`, `condition`")
        );
        let error = filter(json!({ "keep": { "metadata": "k", "equal": "a" } }))
            .err()
            .unwrap();
        assert!(error.message.contains("unknown field `equal`"), "{error}");
    }
}
