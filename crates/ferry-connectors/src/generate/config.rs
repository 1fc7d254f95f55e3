//! The `generate` puller's configuration, as written in a pipeline definition.

use serde::Deserialize;

/// Configuration of the `generate` puller.
///
/// ```yaml
/// pullers:
///   - type: generate
///     count: 100000
///     size: 1024
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratePullerConfig {
    /// How many passengers the puller makes in its life; after that it pulls nothing. Default:
    /// no limit (then each pull makes one batch and does not ask to be pulled again at once:
    /// use a `continuous` schedule to generate flat out).
    #[serde(default)]
    pub count: Option<u64>,
    /// At most this many passengers per pull. Default: as many as the pipeline asks for.
    #[serde(default)]
    pub per_pull: Option<usize>,
    /// Approximate size of each body in bytes (the JSON is padded up to it). Default 256.
    #[serde(default = "default_size")]
    pub size: usize,
    /// The passengers' `source_system`. Default `generate`.
    #[serde(default = "default_source_system")]
    pub source_system: String,
    /// Start of every `external_id`, followed by the puller's start time in milliseconds and a
    /// sequence number. Default: the pipeline's name and `-`, or `gen-` without one.
    #[serde(default)]
    pub external_id_prefix: Option<String>,
}

fn default_size() -> usize {
    256
}

fn default_source_system() -> String {
    "generate".into()
}
