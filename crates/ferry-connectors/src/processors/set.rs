//! `set`: sets metadata keys from templates.
//!
//! ```yaml
//! processors:
//!   - type: set
//!     metadata:
//!       origin: "{source_system}-{external_id}"
//! ```

use std::collections::BTreeMap;

use ferry_core::template::Template;
use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, StepError,
};
use serde::Deserialize;

/// Configuration of the `set` processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetConfig {
    /// Metadata keys to set (or overwrite), each with a template for its value, e.g.
    /// `"{source_system}-{external_id}"`. Placeholders: `{id}`, `{client}`, `{pipeline}`,
    /// `{source_system}`, `{external_id}`, `{date}`, `{metadata.KEY}`.
    pub metadata: BTreeMap<String, String>,
}

/// Builds `set` processors.
pub struct SetFactory;

impl ProcessorFactory for SetFactory {
    const TYPE: &'static str = "set";
    type Config = SetConfig;

    fn build(
        &self,
        config: SetConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        if config.metadata.is_empty() {
            return Err(BuildError::at("metadata", "give at least one key to set"));
        }
        let mut values = Vec::with_capacity(config.metadata.len());
        for (key, text) in config.metadata {
            if key.is_empty() {
                return Err(BuildError::at("metadata", "a metadata key is empty"));
            }
            let template = Template::parse(&text).map_err(|message| BuildError {
                path: vec!["metadata".into(), key.clone()],
                message,
                within: None,
            })?;
            values.push((key, template));
        }
        Ok(Box::new(Set { values }))
    }
}

/// Sets metadata keys from templates.
#[derive(Debug)]
pub struct Set {
    values: Vec<(String, Template)>,
}

impl Processor for Set {
    fn process(&self, mut passenger: Passenger) -> Result<Outcome, StepError> {
        // Every value is rendered from the passenger as it came in, so the order of the keys
        // does not matter (`{metadata.a}` in `b` sees the old `a`).
        let rendered: Vec<String> = self
            .values
            .iter()
            .map(|(_, template)| template.render_text(&passenger))
            .collect();
        for ((key, _), value) in self.values.iter().zip(rendered) {
            passenger.metadata.insert(key.clone(), value);
        }
        Ok(Outcome::Continue(passenger))
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::ProcessorFactory;
    use serde_json::json;

    use super::*;

    fn set(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        SetFactory.build(config, &BuildContext::default())
    }

    fn processed(processor: &dyn Processor, passenger: Passenger) -> Passenger {
        match processor.process(passenger).unwrap() {
            Outcome::Continue(passenger) => passenger,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn renders_templates_into_metadata() {
        let processor = set(json!({ "metadata": {
            "origin": "{source_system}-{external_id}",
            "fixed": "yes",
            "kind": "{metadata.kind}!",
        }}))
        .unwrap();
        let mut passenger = Passenger::pulled("edi", "42");
        passenger.metadata.insert("kind".into(), "invoice".into());
        passenger.metadata.insert("other".into(), "kept".into());
        let passenger = processed(&*processor, passenger);
        assert_eq!(passenger.metadata["origin"], "edi-42");
        assert_eq!(passenger.metadata["fixed"], "yes");
        assert_eq!(passenger.metadata["kind"], "invoice!", "overwritten");
        assert_eq!(passenger.metadata["other"], "kept");
    }

    #[test]
    fn values_see_the_passenger_as_it_came_in() {
        let processor = set(json!({ "metadata": { "a": "new", "b": "{metadata.a}" } })).unwrap();
        let mut passenger = Passenger::pulled("edi", "42");
        passenger.metadata.insert("a".into(), "old".into());
        let passenger = processed(&*processor, passenger);
        assert_eq!(passenger.metadata["a"], "new");
        assert_eq!(passenger.metadata["b"], "old");
    }

    #[test]
    fn bad_template_is_reported_at_its_key() {
        let error = set(json!({ "metadata": { "origin": "{nope}" } }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["metadata", "origin"]);
        assert!(error.message.contains("unknown placeholder"), "{error}");
    }

    #[test]
    fn refuses_empty_configuration() {
        assert_eq!(
            set(json!({ "metadata": {} })).err().unwrap().path,
            ["metadata"]
        );
        assert!(
            set(json!({}))
                .err()
                .unwrap()
                .message
                .contains("missing field `metadata`")
        );
    }
}
