//! `route`: sends a passenger to some of the pipeline's pushers, chosen by VRL conditions.
//!
//! ```yaml
//! processors:
//!   - type: route
//!     routes:
//!       - when: .country == "DE"
//!         to: [erp-de]
//!       - when: '%kind == "invoice"'
//!         to: [archive]
//!     otherwise: [review]
//! ```
//!
//! Every route whose condition is true adds its pushers; the passenger goes to all of them
//! together and skips the pipeline's other pushers. One that matches no route goes to
//! `otherwise`, or is filtered with the reason when there is no `otherwise`.

use ferry_core::{
    BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory, StepError,
};
use serde::Deserialize;

use super::filter::boolean_program;
use super::program::{Input, VrlProgram};

/// Configuration of the `route` processor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The routes, at least one. A passenger goes to the pushers of every route whose `when`
    /// is true.
    pub routes: Vec<RouteRule>,
    /// Pushers (by name) for a passenger that matches no route. Without it, such a passenger
    /// is filtered with the reason `no route matched`.
    #[serde(default)]
    pub otherwise: Option<Vec<String>>,
}

/// One route: a condition and where a passenger that meets it goes.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// A VRL boolean expression over the body (`.`) and the metadata (`%`), e.g.
    /// `.country == "DE"`. A result that is not a boolean fails the passenger permanently.
    pub when: String,
    /// Names of the pipeline's pushers, at least one.
    pub to: Vec<String>,
}

/// Builds `route` processors.
pub struct RouteFactory;

impl ProcessorFactory for RouteFactory {
    const TYPE: &'static str = "route";
    type Config = RouteConfig;

    fn build(
        &self,
        config: RouteConfig,
        ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        if config.routes.is_empty() {
            return Err(BuildError::at(
                "routes",
                "give at least one route, e.g. `routes: [{ when: '.country == \"DE\"', to: \
                 [erp] }]`",
            ));
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (index, rule) in config.routes.iter().enumerate() {
            let index = index.to_string();
            let condition = boolean_program("when", &rule.when).map_err(|mut error| {
                error
                    .path
                    .splice(0..0, ["routes".to_string(), index.clone()]);
                error
            })?;
            let pushers = pushers(&rule.to, &["routes", &index, "to"], ctx)?;
            routes.push(Route { condition, pushers });
        }
        let otherwise = match &config.otherwise {
            Some(names) => Some(pushers(names, &["otherwise"], ctx)?),
            None => None,
        };
        Ok(Box::new(Router {
            routes,
            otherwise,
            pusher_names: ctx.pushers.clone(),
        }))
    }
}

/// The positions in `ctx.pushers` of the pushers named in the list at `path`.
fn pushers(names: &[String], path: &[&str], ctx: &BuildContext) -> Result<Vec<usize>, BuildError> {
    let path: Vec<String> = path.iter().map(|key| key.to_string()).collect();
    if names.is_empty() {
        return Err(BuildError {
            path,
            message: format!(
                "give at least one pusher; the pipeline's pushers are: {}",
                ctx.pushers.join(", ")
            ),
            within: None,
        });
    }
    let mut positions = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        let Some(position) = ctx.pushers.iter().position(|pusher| pusher == name) else {
            let mut path = path.clone();
            path.push(index.to_string());
            let known = if ctx.pushers.is_empty() {
                "the pipeline has no pushers".to_string()
            } else {
                format!("the pipeline's pushers are: {}", ctx.pushers.join(", "))
            };
            return Err(BuildError {
                path,
                message: format!("unknown pusher `{name}`; {known}"),
                within: None,
            });
        };
        positions.push(position);
    }
    Ok(positions)
}

/// A validated [`RouteRule`].
#[derive(Debug)]
struct Route {
    condition: VrlProgram,
    /// Positions in the pipeline's list of pushers.
    pushers: Vec<usize>,
}

/// Chooses pushers for each passenger.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    otherwise: Option<Vec<usize>>,
    /// The pipeline's pushers, in order.
    pusher_names: Vec<String>,
}

impl Processor for Router {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let mut chosen = vec![false; self.pusher_names.len()];
        let mut matched = false;
        {
            // One parse of the body for all the conditions.
            let mut input = Input::new(&passenger);
            for route in &self.routes {
                if route.condition.condition(&mut input)? {
                    matched = true;
                    for &pusher in &route.pushers {
                        chosen[pusher] = true;
                    }
                }
            }
        }
        if !matched {
            match &self.otherwise {
                Some(pushers) => {
                    for &pusher in pushers {
                        chosen[pusher] = true;
                    }
                }
                None => {
                    return Ok(Outcome::Filtered {
                        reason: self.no_match(),
                    });
                }
            }
        }
        // In the pipeline's order, each once.
        let pushers = self
            .pusher_names
            .iter()
            .zip(&chosen)
            .filter(|(_, chosen)| **chosen)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Outcome::Route { passenger, pushers })
    }
}

impl Router {
    /// `no route matched and there is no \`otherwise\`: \`.a == 1\`, \`.b == 2\``.
    fn no_match(&self) -> String {
        let conditions: Vec<String> = self
            .routes
            .iter()
            .map(|route| format!("`{}`", route.condition.summary()))
            .collect();
        format!(
            "no route matched and there is no `otherwise`; the conditions were {}",
            conditions.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{Body, TextPosition};
    use serde_json::json;

    use super::*;

    fn ctx() -> BuildContext {
        BuildContext {
            pushers: vec!["erp".into(), "archive".into(), "review".into()],
            ..BuildContext::default()
        }
    }

    fn route(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        RouteFactory.build(config, &ctx())
    }

    fn passenger(body: serde_json::Value) -> Passenger {
        let mut passenger = Passenger::pulled("test", "1").with_body(Body::json(&body));
        passenger.metadata.insert("kind".into(), "invoice".into());
        passenger
    }

    /// The pushers chosen, or the reason it was filtered.
    fn run(processor: &dyn Processor, body: serde_json::Value) -> Result<Vec<String>, String> {
        match processor.process(passenger(body)).unwrap() {
            Outcome::Route { pushers, .. } => Ok(pushers),
            Outcome::Filtered { reason } => Err(reason),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn matching_routes_are_united_in_pipeline_order() {
        let r = route(json!({ "routes": [
            { "when": ".country == \"DE\"", "to": ["review", "erp"] },
            { "when": "%kind == \"invoice\"", "to": ["archive", "erp"] },
        ]}))
        .unwrap();
        assert_eq!(
            run(&*r, json!({ "country": "DE" })).unwrap(),
            ["erp", "archive", "review"]
        );
        assert_eq!(
            run(&*r, json!({ "country": "FR" })).unwrap(),
            ["erp", "archive"]
        );
    }

    #[test]
    fn the_passenger_travels_on_unchanged() {
        let r = route(json!({ "routes": [{ "when": "true", "to": ["erp"] }] })).unwrap();
        let input = passenger(json!({ "a": 1 }));
        match r.process(input.clone()).unwrap() {
            Outcome::Route { passenger, .. } => assert_eq!(passenger, input),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn no_match_goes_to_otherwise_or_is_filtered() {
        let routes = json!([{ "when": ".country == \"DE\"", "to": ["erp"] }]);
        let r = route(json!({ "routes": routes, "otherwise": ["review"] })).unwrap();
        assert_eq!(run(&*r, json!({ "country": "FR" })).unwrap(), ["review"]);
        assert_eq!(run(&*r, json!({ "country": "DE" })).unwrap(), ["erp"]);

        let r = route(json!({ "routes": routes })).unwrap();
        assert_eq!(
            run(&*r, json!({ "country": "FR" })).unwrap_err(),
            "no route matched and there is no `otherwise`; the conditions were \
             `.country == \"DE\"`"
        );
    }

    #[test]
    fn a_condition_that_is_not_boolean_fails_permanently() {
        let r = route(json!({ "routes": [{ "when": ".country", "to": ["erp"] }] })).unwrap();
        let error = r
            .process(passenger(json!({ "country": "DE" })))
            .unwrap_err();
        assert!(!error.retryable);
        assert!(error.message.contains("not a boolean"), "{error}");
    }

    #[test]
    fn unknown_pushers_are_refused_at_their_key() {
        let error = route(json!({ "routes": [
            { "when": "true", "to": ["erp"] },
            { "when": "true", "to": ["erp", "ftp"] },
        ]}))
        .err()
        .unwrap();
        assert_eq!(error.path, ["routes", "1", "to", "1"]);
        assert_eq!(
            error.message,
            "unknown pusher `ftp`; the pipeline's pushers are: erp, archive, review"
        );
        let error = route(json!({
            "routes": [{ "when": "true", "to": ["erp"] }],
            "otherwise": ["nowhere"],
        }))
        .err()
        .unwrap();
        assert_eq!(error.path, ["otherwise", "0"]);
    }

    /// What `ferry validate` prints: the pushers are the pipeline's, the error at its place.
    #[test]
    fn validation_checks_pusher_names_against_the_pipeline() {
        let pipeline = "pullers: [{ type: generate, count: 1 }]\n\
                        processors:\n\
                        \x20 - type: route\n\
                        \x20   routes:\n\
                        \x20     - { when: '.a == 1', to: [de] }\n\
                        \x20     - { when: '.a == 2', to: [de, erp] }\n\
                        pushers:\n\
                        \x20 - { type: file, name: de, path: out/de }\n\
                        \x20 - { type: file, name: fr, path: out/fr }\n";
        let files = [
            ("ferry.yaml", "clients: { acme: { paths: [out] } }\n"),
            ("clients/acme/client.yaml", ""),
        ]
        .into_iter()
        .map(|(path, content)| ferry_core::config::SourceFile {
            path: path.into(),
            content: content.into(),
        })
        .chain([ferry_core::config::SourceFile {
            path: "clients/acme/pipelines/p.yaml".into(),
            content: pipeline.into(),
        }])
        .collect();
        let registry = crate::registry();
        let result =
            ferry_core::config::validate(std::path::Path::new("/tmp"), files, &registry, &|_| None);
        let errors: Vec<String> = result
            .err()
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "clients/acme/pipelines/p.yaml:6:37: processors[0].routes[1].to[1]: unknown pusher \
              `erp`; the pipeline's pushers are: de, fr"
            ]
        );
    }

    #[test]
    fn empty_lists_are_refused() {
        assert_eq!(
            route(json!({ "routes": [] })).err().unwrap().path,
            ["routes"]
        );
        let error = route(json!({ "routes": [{ "when": "true", "to": [] }] }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["routes", "0", "to"]);
        let error =
            route(json!({ "routes": [{ "when": "true", "to": ["erp"] }], "otherwise": [] }))
                .err()
                .unwrap();
        assert_eq!(error.path, ["otherwise"]);
    }

    #[test]
    fn condition_errors_point_into_the_route() {
        let error = route(json!({ "routes": [
            { "when": "true", "to": ["erp"] },
            { "when": ".a ==\n  nope()", "to": ["erp"] },
        ]}))
        .err()
        .unwrap();
        assert_eq!(error.path, ["routes", "1", "when"]);
        assert_eq!(error.within, Some(TextPosition { line: 2, column: 3 }));
        let error = route(json!({ "routes": [{ "when": "\"DE\"", "to": ["erp"] }] }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["routes", "0", "when"]);
        assert!(error.message.contains("must give a boolean"), "{error}");
        let error = route(json!({ "routes": [{ "when": "true", "to": ["erp"], "then": 1 }] }))
            .err()
            .unwrap();
        assert!(error.message.contains("unknown field `then`"), "{error}");
    }
}
