//! The `file` puller's and pusher's configuration, as written in a pipeline definition.

use std::fmt;

use ferry_formats::CodecConfig;
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Unexpected};

/// Configuration of the `file` puller.
///
/// ```yaml
/// pullers:
///   - type: file
///     path: inbox/orders
///     pattern: "*.xml"
///     after_seat: { move_to: archive/orders }
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePullerConfig {
    /// Directory to pull files from, relative to the project directory unless absolute. Only the
    /// directory itself is read, not its subdirectories.
    pub path: String,
    /// Glob matched against each file's name (not its path), e.g. `*.xml`. Default `*`. Hidden
    /// files (name starting with `.`) are never pulled.
    #[serde(default = "default_pattern")]
    pub pattern: String,
    /// What happens to a file once its passenger is seated in the queue: `delete`, or
    /// `{ move_to: DIR }` to move it into an archive directory. Required, so that nobody loses
    /// files by surprise. (`keep` is only for the `table` puller.)
    #[serde(default, deserialize_with = "after_seat_without_keep")]
    pub after_seat: Option<AfterSeat>,
    /// The passengers' `source_system`; with the file name (their `external_id`) it is the
    /// de-duplication key. Default `file`.
    #[serde(default = "default_source_system")]
    pub source_system: String,
    /// Media type of the attached files. Default: guessed from the extension (`json`, `xml`,
    /// `csv`, `txt`), else `application/octet-stream`.
    #[serde(default)]
    pub media_type: Option<String>,
    /// Files modified less than this long ago are left for a later pull, because they may still
    /// be being written, e.g. `500ms`, `5s`. Default `1s`; `0s` pulls every file at once.
    #[serde(default = "default_settle")]
    pub settle: String,
    /// Decode each file's content with this codec into the passenger's JSON body; the file
    /// still travels as the attachment and its description stays in the metadata. A format
    /// name (`csv`) or a mapping with options (`{ type: csv, delimiter: ";" }`), see
    /// `docs/formats.md`. A file that does not decode fails alone, with the position of the
    /// error, and stays where it is. Default: none (the body describes the file).
    #[serde(default)]
    pub codec: Option<CodecConfig>,
}

fn default_pattern() -> String {
    "*".into()
}

fn default_source_system() -> String {
    "file".into()
}

fn default_settle() -> String {
    "1s".into()
}

/// The two forms `after_seat` can take with the `file` puller, for error messages.
pub(super) const AFTER_SEAT_FORMS: &str = "`delete` or `{ move_to: DIR }`";

/// Every form `after_seat` can take, `keep` included (the `table` puller), for error messages.
pub(crate) const AFTER_SEAT_FORMS_WITH_KEEP: &str = "`delete`, `keep` or `{ move_to: DIR }`";

/// What a puller of files does with a file once it is seated: the `file` puller once its
/// passenger is, the `table` puller once all its chunks are.
///
/// Deserializing takes every form; the `file` puller's configuration reads `after_seat` without
/// `keep` (see [`FilePullerConfig::after_seat`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterSeat {
    /// `delete`: remove the file.
    Delete,
    /// `keep`: leave it; it is loaded again when its modification time changes. The `table`
    /// puller only: the `file` puller refuses it.
    Keep,
    /// `{ move_to: DIR }`: move the file into `DIR` (relative to the project directory unless
    /// absolute), never overwriting a file already there.
    MoveTo(String),
}

/// The map form of [`AfterSeat`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveTo {
    /// Archive directory.
    move_to: String,
}

/// Reads the forms of [`AfterSeat`], with or without `keep`.
//
// Written by hand rather than derived so that a wrong value names every form, instead of
// serde's "data did not match any variant of untagged enum".
struct AfterSeatVisitor {
    /// Whether `keep` is one of the forms.
    keep: bool,
}

impl<'de> de::Visitor<'de> for AfterSeatVisitor {
    type Value = AfterSeat;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(if self.keep {
            AFTER_SEAT_FORMS_WITH_KEEP
        } else {
            AFTER_SEAT_FORMS
        })
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<AfterSeat, E> {
        match value {
            "delete" => Ok(AfterSeat::Delete),
            "keep" if self.keep => Ok(AfterSeat::Keep),
            _ => Err(E::invalid_value(Unexpected::Str(value), &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AfterSeat, A::Error> {
        let MoveTo { move_to } = MoveTo::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(AfterSeat::MoveTo(move_to))
    }
}

impl<'de> Deserialize<'de> for AfterSeat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AfterSeatVisitor { keep: true })
    }
}

/// An [`AfterSeat`] read without the `keep` form, so that a wrong value names only the forms
/// the `file` puller takes.
struct WithoutKeep(AfterSeat);

impl<'de> Deserialize<'de> for WithoutKeep {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(AfterSeatVisitor { keep: false })
            .map(WithoutKeep)
    }
}

/// The `file` puller's `after_seat`: absent or null is `None`, `keep` is refused.
fn after_seat_without_keep<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<AfterSeat>, D::Error> {
    Ok(Option::<WithoutKeep>::deserialize(deserializer)?.map(|WithoutKeep(after_seat)| after_seat))
}

/// Configuration of the `file` pusher.
///
/// ```yaml
/// pushers:
///   - type: file
///     path: outbox/{client}
///     name_template: "{date}/{external_id}.xml"
/// ```
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePusherConfig {
    /// Directory to write into, relative to the project directory unless absolute; created when
    /// missing.
    pub path: String,
    /// Name of the written file, relative to `path`; a `/` in the template makes
    /// subdirectories. Placeholders: `{id}`, `{client}`, `{pipeline}`, `{source_system}`,
    /// `{external_id}`, `{date}`, `{metadata.KEY}`. Default `{external_id}`. A passenger with
    /// several attachments writes each as `<name>-<attachment name>`.
    #[serde(default = "default_name_template")]
    pub name_template: String,
    /// What to write: `attachments`, `body`, or `auto` (the default): the attachments when the
    /// passenger has any, else the body. With `codec`, the encoded body (`auto` or `body`).
    #[serde(default)]
    pub content: Content,
    /// Encode the passenger's JSON body (or record batch, with its column types) with this
    /// codec and write that: a format name (`csv`)
    /// or a mapping with options (`{ type: csv, columns: [id, name] }`), see
    /// `docs/formats.md`. A body that is not JSON, or that the format cannot hold, fails that
    /// passenger alone. Cannot go with `content: attachments`. Default: none (bytes are
    /// written as they are).
    #[serde(default)]
    pub codec: Option<CodecConfig>,
}

fn default_name_template() -> String {
    "{external_id}".into()
}

/// Which part of a passenger the `file` pusher writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// The attachments when there are any, else the body.
    #[default]
    Auto,
    /// Every attachment; a passenger without attachments fails.
    Attachments,
    /// The body.
    Body,
}
