//! Trials: a pipeline's processors run on passengers in memory, with no queue and no pusher
//! called, to show what the pipeline would make of them. `ferry test` and `ferry peek` are
//! built on this.

use std::path::Path;

use ferry_core::config::Pipeline;
use ferry_core::{Outcome, Passenger, PullFailure, Registry, StepError};

use crate::{EngineError, NamedProcessor, build_processors, build_pullers, worker};

/// A pipeline's processors, built from its definition, and the names of its pushers.
pub struct Trial {
    processors: Vec<NamedProcessor>,
    pushers: Vec<String>,
}

/// Where one passenger's journey through the processors ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It would be handed to these pushers (fewer than all when a processor routed it).
    Pushed { pushers: Vec<String> },
    /// A processor filtered it.
    Filtered { processor: String, reason: String },
    /// A processor split it into `children` passengers, whose arrivals follow.
    Split { processor: String, children: usize },
    /// A processor failed; the queue would retry a retryable error and make the passenger
    /// dead after a permanent one.
    Failed { processor: String, error: StepError },
}

/// A passenger as the processors left it, and its fate.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub passenger: Passenger,
    pub fate: Fate,
}

/// What one puller would bring now, and what the processors would make of each passenger.
#[derive(Debug)]
pub struct Peeked {
    pub puller: String,
    /// The pull itself failed: nothing to show from this puller.
    pub error: Option<StepError>,
    /// Items that could not be read on their own.
    pub failures: Vec<PullFailure>,
    /// The source holds more than was pulled.
    pub more: bool,
    /// Each passenger as pulled, with the arrivals of its trial.
    pub passengers: Vec<(Passenger, Vec<Arrival>)>,
}

/// Pulls at most `max` passengers from each puller of `def` and runs the processors on them.
/// Nothing is seated and nothing is acked, so the source is left as it was.
pub async fn peek(
    registry: &Registry,
    dir: &Path,
    def: &Pipeline,
    max: usize,
) -> Result<Vec<Peeked>, EngineError> {
    let trial = Trial::build(registry, dir, def)?;
    let mut peeked = Vec::new();
    for (name, mut puller) in build_pullers(registry, dir, def)? {
        let mut view = Peeked {
            puller: name,
            error: None,
            failures: Vec::new(),
            more: false,
            passengers: Vec::new(),
        };
        match puller.pull(max).await {
            Err(error) => view.error = Some(error),
            Ok(pulled) => {
                view.failures = pulled.failures;
                view.more = pulled.more;
                for mut passenger in pulled.passengers {
                    passenger.client.clone_from(&def.client);
                    passenger.pipeline.clone_from(&def.name);
                    let arrivals = trial.run(passenger.clone());
                    view.passengers.push((passenger, arrivals));
                }
            }
        }
        peeked.push(view);
    }
    Ok(peeked)
}

impl Trial {
    /// Builds the processors of `def`, as the engine would.
    pub fn build(registry: &Registry, dir: &Path, def: &Pipeline) -> Result<Trial, EngineError> {
        Ok(Trial {
            processors: build_processors(registry, dir, def)?,
            pushers: def.pushers.iter().map(|p| p.name.clone()).collect(),
        })
    }

    /// Runs `passenger` through every processor in order; a split's children go on from the
    /// next processor, and their arrivals follow their parent's.
    pub fn run(&self, passenger: Passenger) -> Vec<Arrival> {
        let mut arrivals = Vec::new();
        self.run_from(0, passenger, &mut arrivals);
        arrivals
    }

    fn run_from(&self, first: usize, mut passenger: Passenger, arrivals: &mut Vec<Arrival>) {
        let mut pushers = self.pushers.clone();
        for (index, (name, processor)) in self.processors.iter().enumerate().skip(first) {
            let processor_name = name.clone();
            let outcome = worker::call_processor(processor.as_ref(), passenger.clone());
            let fate = match outcome {
                Ok(Outcome::Continue(next)) => {
                    passenger = next;
                    continue;
                }
                Ok(Outcome::Route {
                    passenger: next,
                    pushers: to,
                }) => {
                    passenger = next;
                    pushers.retain(|pusher| to.contains(pusher));
                    continue;
                }
                Ok(Outcome::Filtered { reason }) => Fate::Filtered {
                    processor: processor_name,
                    reason,
                },
                Ok(Outcome::Split(children)) => {
                    arrivals.push(Arrival {
                        passenger: passenger.clone(),
                        fate: Fate::Split {
                            processor: processor_name,
                            children: children.len(),
                        },
                    });
                    for child in children {
                        self.run_from(index + 1, child, arrivals);
                    }
                    return;
                }
                Err(error) => Fate::Failed {
                    processor: processor_name,
                    error,
                },
            };
            arrivals.push(Arrival { passenger, fate });
            return;
        }
        arrivals.push(Arrival {
            passenger,
            fate: Fate::Pushed { pushers },
        });
    }
}

#[cfg(test)]
mod tests {
    use ferry_core::{Body, Processor, StepError};

    use super::*;

    /// Splits into children named by `ids`.
    struct SplitInto(Vec<&'static str>);

    impl Processor for SplitInto {
        fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
            let children = self
                .0
                .iter()
                .map(|id| passenger.child(*id, Body::empty()))
                .collect();
            Ok(Outcome::Split(children))
        }
    }

    fn trial(ids: Vec<&'static str>) -> Trial {
        Trial {
            processors: vec![("split".into(), Box::new(SplitInto(ids)))],
            pushers: vec!["out".into()],
        }
    }

    fn parent() -> Passenger {
        let mut passenger = Passenger::pulled("test", "p");
        passenger.client = "acme".into();
        passenger.pipeline = "orders".into();
        passenger
    }

    #[test]
    fn children_follow_their_parent_and_name_it() {
        let parent = parent();
        let arrivals = trial(vec!["p#1", "p#2"]).run(parent.clone());
        assert_eq!(arrivals.len(), 3);
        assert!(matches!(arrivals[0].fate, Fate::Split { children: 2, .. }));
        for child in &arrivals[1..] {
            assert_eq!(child.passenger.parent, Some(parent.id));
            assert_eq!(child.passenger.client, "acme");
            assert_eq!(child.passenger.pipeline, "orders");
            assert_eq!(
                child.fate,
                Fate::Pushed {
                    pushers: vec!["out".into()]
                }
            );
        }
    }

    #[test]
    fn children_sharing_an_external_id_fail_the_split_for_good() {
        let arrivals = trial(vec!["p#1", "p#1"]).run(parent());
        assert_eq!(arrivals.len(), 1);
        let Fate::Failed { error, .. } = &arrivals[0].fate else {
            panic!("expected a failure, got {:?}", arrivals[0].fate);
        };
        assert!(!error.retryable);
        assert!(
            error
                .message
                .contains("two children with external id `p#1`")
        );
    }
}
