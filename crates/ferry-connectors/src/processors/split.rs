//! `split`: one passenger into many — the items of an array, the attachments, or the members of
//! a zip archive — each child travelling on as a passenger of its own.
//!
//! ```yaml
//! processors:
//!   - type: split
//!     items: .orders              # or `attachments: true`, or `zip: body` / `zip: attachments`
//! ```
//!
//! A child's `external_id` is its parent's with `#` and its index (`mail-17#0`), so splitting the
//! same parent again after a crash seats no duplicates; it carries its parent's metadata plus
//! `split.index` and `split.count` (and `split.name` for attachments and zip members).

use std::io::{Cursor, Read};

use bytes::Bytes;
use ferry_core::records;
use ferry_core::{
    Attachment, Body, BuildContext, BuildError, Outcome, Passenger, Processor, ProcessorFactory,
    StepError,
};
use globset::{Glob, GlobMatcher};
use serde::Deserialize;
use vrl::value::{Kind, Value};

use super::program::{Input, Mode, VrlProgram, json_bytes, kind_name};

/// Children per passenger unless `max_children` says otherwise.
const DEFAULT_MAX_CHILDREN: usize = 10_000;
/// Uncompressed bytes per zip archive unless `max_bytes` says otherwise: 256 MiB.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Configuration of the `split` processor: exactly one of `items`, `attachments` and `zip`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// A VRL expression over the body (`.`) and metadata (`%`) that gives an array, e.g.
    /// `.orders`: one child per item, with the item's JSON as its body.
    #[serde(default)]
    pub items: Option<String>,
    /// `true`: one child per attachment, with the attachment's content and media type as its
    /// body.
    #[serde(default)]
    pub attachments: Option<bool>,
    /// `body`: one child per file in the zip archive that is the body; `attachments`: one
    /// child per file in every zip attachment (by media type or a `.zip` name).
    #[serde(default)]
    pub zip: Option<ZipSource>,
    /// On a record batch: one child per this many rows (`1`: one per row), each a record batch
    /// with the same columns. The children are not chunks of the parent's load (`load`,
    /// `chunk`, `last` and `series` are removed; `rows` is theirs).
    #[serde(default)]
    pub rows: Option<usize>,
    /// A glob on attachment or zip member names (`*.pdf`, `invoices/*.xml`); others are left
    /// out. Default: all.
    #[serde(default)]
    pub pattern: Option<String>,
    /// The most children one passenger may have; more fail it permanently. Default 10000.
    #[serde(default)]
    pub max_children: Option<usize>,
    /// The most bytes a zip archive may hold uncompressed, all its files together; more fail
    /// the passenger permanently (a zip bomb stops here). Default 268435456 (256 MiB).
    #[serde(default)]
    pub max_bytes: Option<u64>,
}

/// Where the zip archives to split are.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ZipSource {
    /// The passenger's body is the archive.
    Body,
    /// The passenger's zip attachments.
    Attachments,
}

/// Builds `split` processors.
pub struct SplitFactory;

impl ProcessorFactory for SplitFactory {
    const TYPE: &'static str = "split";
    type Config = SplitConfig;

    fn build(
        &self,
        config: SplitConfig,
        _ctx: &BuildContext,
    ) -> Result<Box<dyn Processor>, BuildError> {
        let by = match (config.items, config.attachments, config.zip) {
            (None, None, None) if config.rows.is_some() => match config.rows {
                Some(0) => return Err(BuildError::at("rows", "must be at least 1")),
                _ => By::Rows(config.rows.unwrap_or(1)),
            },
            _ if config.rows.is_some() => {
                return Err(BuildError::new(
                    "give exactly one of `items: EXPRESSION`, `attachments: true`, \
                     `zip: body|attachments` and `rows: N`",
                ));
            }
            (Some(items), None, None) => {
                let program = VrlProgram::inline(&["items"], &items, Mode::Expression)?;
                if let Some(kind) = program.cannot_give(Kind::contains_array) {
                    return Err(BuildError::at(
                        "items",
                        format!("`items` must give an array but gives {kind}"),
                    ));
                }
                By::Items(Box::new(program))
            }
            (None, Some(true), None) => By::Attachments,
            (None, Some(false), None) => {
                return Err(BuildError::at(
                    "attachments",
                    "`attachments: false` splits nothing; write `attachments: true` or leave \
                     the processor out",
                ));
            }
            (None, None, Some(zip)) => By::Zip(zip),
            _ => {
                return Err(BuildError::new(
                    "give exactly one of `items: EXPRESSION`, `attachments: true`, \
                     `zip: body|attachments` and `rows: N`",
                ));
            }
        };
        let pattern = match config.pattern {
            Some(_) if matches!(by, By::Items(_) | By::Rows(_)) => {
                return Err(BuildError::at(
                    "pattern",
                    "`pattern` chooses attachments or zip members by name; it does not apply \
                     to `items`",
                ));
            }
            Some(pattern) => match Glob::new(&pattern) {
                Ok(glob) => Some((pattern, glob.compile_matcher())),
                Err(error) => {
                    return Err(BuildError::at("pattern", format!("invalid glob: {error}")));
                }
            },
            None => None,
        };
        let max_children = config.max_children.unwrap_or(DEFAULT_MAX_CHILDREN);
        if max_children == 0 {
            return Err(BuildError::at("max_children", "must be at least 1"));
        }
        let max_bytes = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        if config.max_bytes.is_some() && !matches!(by, By::Zip(_)) {
            return Err(BuildError::at(
                "max_bytes",
                "`max_bytes` applies to `zip` only",
            ));
        }
        Ok(Box::new(Split {
            by,
            pattern,
            max_children,
            max_bytes,
        }))
    }
}

#[derive(Debug)]
enum By {
    /// Boxed: a program is large, and there is one `By` per processor anyway.
    Items(Box<VrlProgram>),
    Attachments,
    Zip(ZipSource),
    /// Rows of a record batch per child.
    Rows(usize),
}

/// Splits passengers into children.
#[derive(Debug)]
pub struct Split {
    by: By,
    /// The glob as written, and compiled.
    pattern: Option<(String, GlobMatcher)>,
    max_children: usize,
    max_bytes: u64,
}

/// A child before it is made a passenger: its body and, for files, its name.
struct Piece {
    body: Body,
    name: Option<String>,
    /// The zip attachment it came from.
    archive: Option<String>,
    /// For a part of a record batch: its rows.
    rows: Option<usize>,
}

impl Processor for Split {
    fn process(&self, passenger: Passenger) -> Result<Outcome, StepError> {
        let pieces = match &self.by {
            By::Items(program) => self.items(program, &passenger)?,
            By::Attachments => self.attachments(&passenger)?,
            By::Zip(ZipSource::Body) => {
                let mut pieces = Vec::new();
                let mut budget = self.max_bytes;
                self.zip_members(&passenger.body.data, None, &mut pieces, &mut budget)?;
                pieces
            }
            By::Zip(ZipSource::Attachments) => self.zip_attachments(&passenger)?,
            By::Rows(size) => self.rows(*size, &passenger)?,
        };
        if pieces.is_empty() {
            return Ok(Outcome::Filtered {
                reason: format!("split made no children: {}", self.why_empty(&passenger)),
            });
        }
        let count = pieces.len().to_string();
        let children = pieces
            .into_iter()
            .enumerate()
            .map(|(index, piece)| {
                let external_id = format!("{}#{index}", passenger.external_id);
                let rows = piece.rows;
                let mut child = passenger.child(external_id, piece.body);
                if let Some(rows) = rows {
                    // A part of a chunk is no chunk of the load: a pusher would take the
                    // second part for the chunk already loaded.
                    for key in [
                        records::LOAD,
                        records::CHUNK,
                        records::LAST,
                        records::SERIES,
                    ] {
                        child.metadata.remove(key);
                    }
                    child
                        .metadata
                        .insert(records::ROWS.into(), rows.to_string());
                }
                child
                    .metadata
                    .insert("split.index".into(), index.to_string());
                child.metadata.insert("split.count".into(), count.clone());
                if let Some(name) = piece.name {
                    child.metadata.insert("split.name".into(), name);
                }
                if let Some(archive) = piece.archive {
                    child.metadata.insert("split.archive".into(), archive);
                }
                child
            })
            .collect();
        Ok(Outcome::Split(children))
    }
}

impl Split {
    /// The record batch in `size` rows per piece.
    fn rows(&self, size: usize, passenger: &Passenger) -> Result<Vec<Piece>, StepError> {
        let batch = records::read(&passenger.body).map_err(|error| {
            StepError::permanent(format!("`rows` splits record batches: {error}"))
        })?;
        self.check_count(batch.rows.div_ceil(size))?;
        let mut pieces = Vec::new();
        let mut writer = records::BatchWriter::new(batch.columns.clone());
        for line in records::lines(&batch.data) {
            writer.line(line);
            if writer.rows() == size {
                let full = std::mem::replace(
                    &mut writer,
                    records::BatchWriter::new(batch.columns.clone()),
                );
                pieces.push(Piece {
                    rows: Some(full.rows()),
                    body: full.finish(),
                    name: None,
                    archive: None,
                });
            }
        }
        if writer.rows() > 0 {
            pieces.push(Piece {
                rows: Some(writer.rows()),
                body: writer.finish(),
                name: None,
                archive: None,
            });
        }
        Ok(pieces)
    }

    fn items(&self, program: &VrlProgram, passenger: &Passenger) -> Result<Vec<Piece>, StepError> {
        let items = match program.evaluate(&mut Input::new(passenger))? {
            Value::Array(items) => items,
            other => {
                return Err(StepError::permanent(format!(
                    "`items` (`{}`) gave {}, not an array",
                    program.summary(),
                    kind_name(&other)
                )));
            }
        };
        self.check_count(items.len())?;
        let mut pieces = Vec::with_capacity(items.len());
        for item in &items {
            pieces.push(Piece {
                body: Body {
                    media_type: "application/json".into(),
                    data: json_bytes(item, 64)?,
                },
                name: None,
                archive: None,
                rows: None,
            });
        }
        Ok(pieces)
    }

    fn attachments(&self, passenger: &Passenger) -> Result<Vec<Piece>, StepError> {
        let chosen: Vec<&Attachment> = passenger
            .attachments
            .iter()
            .filter(|attachment| self.wanted(&attachment.name))
            .collect();
        self.check_count(chosen.len())?;
        Ok(chosen
            .into_iter()
            .map(|attachment| Piece {
                body: Body {
                    media_type: attachment.media_type.clone(),
                    data: attachment.content.clone(),
                },
                name: Some(attachment.name.clone()),
                archive: None,
                rows: None,
            })
            .collect())
    }

    fn zip_attachments(&self, passenger: &Passenger) -> Result<Vec<Piece>, StepError> {
        let mut pieces = Vec::new();
        // One budget for all archives of the passenger: its children live in memory together.
        let mut budget = self.max_bytes;
        for attachment in passenger.attachments.iter().filter(|a| is_zip(a)) {
            self.zip_members(
                &attachment.content,
                Some(&attachment.name),
                &mut pieces,
                &mut budget,
            )?;
        }
        Ok(pieces)
    }

    /// Adds a piece for every file of the archive in `data` that the pattern wants. `budget` is
    /// what is left of `max_bytes`.
    fn zip_members(
        &self,
        data: &Bytes,
        archive_name: Option<&str>,
        pieces: &mut Vec<Piece>,
        budget: &mut u64,
    ) -> Result<(), StepError> {
        let what = match archive_name {
            Some(name) => format!("zip attachment `{name}`"),
            None => "the zip body".to_string(),
        };
        let mut archive = zip::ZipArchive::new(Cursor::new(data.as_ref())).map_err(|error| {
            StepError::permanent(format!("{what} is not a zip archive: {error}"))
        })?;
        for index in 0..archive.len() {
            let mut member = archive.by_index(index).map_err(|error| {
                StepError::permanent(format!("cannot read file {index} of {what}: {error}"))
            })?;
            let name = member
                .name()
                .map(|name| name.into_owned())
                .unwrap_or_default();
            if member.is_dir() {
                continue;
            }
            if let Some(problem) = unsafe_name(&name).or_else(|| {
                member
                    .enclosed_name()
                    .is_none()
                    .then_some("it leads out of the archive")
            }) {
                return Err(StepError::permanent(format!(
                    "{what} holds `{name}`, an unsafe name ({problem}); the archive is refused"
                )));
            }
            if member.is_symlink() {
                return Err(StepError::permanent(format!(
                    "{what} holds `{name}`, a symbolic link; the archive is refused"
                )));
            }
            if !self.wanted(&name) {
                continue;
            }
            self.check_count(pieces.len() + 1)?;
            let too_big = || {
                StepError::permanent(format!(
                    "{what} holds more than {} bytes uncompressed (`max_bytes`), at `{name}`",
                    self.max_bytes
                ))
            };
            // The declared size may lie: read at most one byte more than the budget allows.
            if member.size() > *budget {
                return Err(too_big());
            }
            let mut content = Vec::with_capacity(member.size() as usize);
            (&mut member)
                .take(*budget + 1)
                .read_to_end(&mut content)
                .map_err(|error| {
                    StepError::permanent(format!("cannot unpack `{name}` from {what}: {error}"))
                })?;
            if content.len() as u64 > *budget {
                return Err(too_big());
            }
            *budget -= content.len() as u64;
            pieces.push(Piece {
                body: Body {
                    media_type: ferry_core::media_type_of(&name).into(),
                    data: Bytes::from(content),
                },
                name: Some(name),
                archive: archive_name.map(str::to_string),
                rows: None,
            });
        }
        Ok(())
    }

    fn wanted(&self, name: &str) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|(_, matcher)| matcher.is_match(name))
    }

    fn check_count(&self, count: usize) -> Result<(), StepError> {
        if count > self.max_children {
            return Err(StepError::permanent(format!(
                "split would make more than {} children (`max_children`)",
                self.max_children
            )));
        }
        Ok(())
    }

    /// Why a passenger gave no children, for the filtered reason.
    fn why_empty(&self, passenger: &Passenger) -> String {
        let pattern = match &self.pattern {
            Some((pattern, _)) => format!(" matching `{pattern}`"),
            None => String::new(),
        };
        match &self.by {
            By::Items(program) => format!("`{}` is an empty array", program.summary()),
            By::Attachments if passenger.attachments.is_empty() => {
                "the passenger has no attachments".into()
            }
            By::Attachments => format!("no attachment{pattern}"),
            By::Zip(ZipSource::Body) => format!("the zip archive holds no files{pattern}"),
            By::Zip(ZipSource::Attachments) => {
                if passenger.attachments.iter().any(is_zip) {
                    format!("the zip attachments hold no files{pattern}")
                } else {
                    "the passenger has no zip attachments".into()
                }
            }
            By::Rows(_) => "the record batch has no rows".into(),
        }
    }
}

/// Whether an attachment is a zip archive, by its media type or its name.
fn is_zip(attachment: &Attachment) -> bool {
    let media_type = attachment.media_type.to_ascii_lowercase();
    media_type.starts_with("application/zip")
        || media_type.starts_with("application/x-zip")
        || attachment.name.to_ascii_lowercase().ends_with(".zip")
}

/// What is wrong with a zip member's name, if anything: it must stay inside the archive on
/// any system (no absolute path, no drive, no `..`, whichever separator).
fn unsafe_name(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("it holds a NUL byte");
    }
    if name.starts_with(['/', '\\']) {
        return Some("it is an absolute path");
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Some("it starts with a drive");
    }
    if name.split(['/', '\\']).any(|part| part == "..") {
        return Some("it climbs out with `..`");
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use serde_json::json;
    use zip::write::SimpleFileOptions;

    use super::*;

    fn split(config: serde_json::Value) -> Result<Box<dyn Processor>, BuildError> {
        let config = ferry_core::component::parse_config(&config)?;
        SplitFactory.build(config, &BuildContext::default())
    }

    fn parent(body: Body) -> Passenger {
        let mut passenger = Passenger::pulled("mail", "m-17").with_body(body);
        passenger
            .metadata
            .insert("from".into(), "a@example.com".into());
        passenger
    }

    fn children(outcome: Outcome) -> Vec<Passenger> {
        match outcome {
            Outcome::Split(children) => children,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    fn attachment(name: &str, media_type: &str, content: &[u8]) -> Attachment {
        Attachment {
            name: name.into(),
            media_type: media_type.into(),
            content: Bytes::copy_from_slice(content),
        }
    }

    /// A zip archive of `(name, content)` files, deflated.
    fn zip_of(files: &[(&str, &[u8])]) -> Bytes {
        let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        for (name, content) in files {
            if name.ends_with('/') {
                writer.add_directory(*name, options).unwrap();
                continue;
            }
            writer.start_file(*name, options).unwrap();
            writer.write_all(content).unwrap();
        }
        Bytes::from(writer.finish().unwrap().into_inner())
    }

    fn zip_body(files: &[(&str, &[u8])]) -> Body {
        Body {
            media_type: "application/zip".into(),
            data: zip_of(files),
        }
    }

    #[test]
    fn items_become_children_with_json_bodies() {
        let s = split(json!({ "items": ".orders" })).unwrap();
        let input = parent(Body::json(
            &json!({ "orders": [{ "id": 1 }, { "id": 2 }, "x"] }),
        ));
        let parent_id = input.id;
        let children = children(s.process(input).unwrap());
        assert_eq!(children.len(), 3);
        let bodies: Vec<_> = children.iter().map(|c| c.body.as_json().unwrap()).collect();
        assert_eq!(bodies, [json!({ "id": 1 }), json!({ "id": 2 }), json!("x")]);
        for (index, child) in children.iter().enumerate() {
            assert_eq!(child.external_id, format!("m-17#{index}"));
            assert_eq!(child.parent, Some(parent_id));
            assert_eq!(child.metadata["split.index"], index.to_string());
            assert_eq!(child.metadata["split.count"], "3");
            assert_eq!(
                child.metadata["from"], "a@example.com",
                "parent metadata kept"
            );
            assert_eq!(child.body.media_type, "application/json");
        }
    }

    #[test]
    fn the_same_parent_splits_into_the_same_external_ids() {
        let s = split(json!({ "items": ".a" })).unwrap();
        let input = parent(Body::json(&json!({ "a": [1, 2] })));
        let ids = |outcome| -> Vec<String> {
            children(outcome)
                .into_iter()
                .map(|c| c.external_id)
                .collect()
        };
        assert_eq!(
            ids(s.process(input.clone()).unwrap()),
            ids(s.process(input).unwrap())
        );
    }

    #[test]
    fn an_empty_array_is_filtered_and_a_non_array_fails() {
        let s = split(json!({ "items": ".orders" })).unwrap();
        match s
            .process(parent(Body::json(&json!({ "orders": [] }))))
            .unwrap()
        {
            Outcome::Filtered { reason } => {
                assert_eq!(
                    reason,
                    "split made no children: `.orders` is an empty array"
                )
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        let error = s
            .process(parent(Body::json(&json!({ "orders": "none" }))))
            .unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "`items` (`.orders`) gave a string, not an array"
        );
        let error = s.process(parent(Body::json(&json!({})))).unwrap_err();
        assert!(error.message.contains("gave null"), "{error}");
    }

    #[test]
    fn items_that_can_never_be_an_array_are_refused() {
        let error = split(json!({ "items": "upcase(\"x\")" })).err().unwrap();
        assert_eq!(error.path, ["items"]);
        assert_eq!(error.message, "`items` must give an array but gives string");
        let error = split(json!({ "items": ".a = [1]" })).err().unwrap();
        assert_eq!(error.path, ["items"]);
        assert!(error.within.is_some());
    }

    #[test]
    fn attachments_become_children() {
        let s = split(json!({ "attachments": true, "pattern": "*.pdf" })).unwrap();
        let mut input = parent(Body::empty());
        input.attachments = vec![
            attachment("a.pdf", "application/pdf", b"%PDF a"),
            attachment("logo.png", "image/png", b"png"),
            attachment("b.PDF", "application/pdf", b"%PDF b"),
            attachment("c.pdf", "application/pdf", b"%PDF c"),
        ];
        let children = children(s.process(input).unwrap());
        let names: Vec<_> = children
            .iter()
            .map(|c| c.metadata["split.name"].as_str())
            .collect();
        assert_eq!(names, ["a.pdf", "c.pdf"], "globs are case-sensitive");
        assert_eq!(&children[1].body.data[..], b"%PDF c");
        assert_eq!(children[1].body.media_type, "application/pdf");
        assert!(children[1].attachments.is_empty());
        assert_eq!(children[1].external_id, "m-17#1");

        let all = split(json!({ "attachments": true })).unwrap();
        match all.process(parent(Body::empty())).unwrap() {
            Outcome::Filtered { reason } => {
                assert_eq!(
                    reason,
                    "split made no children: the passenger has no attachments"
                )
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn zip_body_members_become_children() {
        let s = split(json!({ "zip": "body" })).unwrap();
        let input = parent(zip_body(&[
            ("orders/", b""),
            ("orders/1.json", br#"{"id":1}"#),
            ("orders/2.xml", b"<order/>"),
        ]));
        let children = children(s.process(input).unwrap());
        assert_eq!(children.len(), 2, "directories are not children");
        assert_eq!(children[0].metadata["split.name"], "orders/1.json");
        assert_eq!(children[0].body.as_json().unwrap(), json!({ "id": 1 }));
        assert_eq!(children[1].body.media_type, "application/xml");
        assert_eq!(&children[1].body.data[..], b"<order/>");
        assert!(!children[1].metadata.contains_key("split.archive"));
    }

    #[test]
    fn zip_attachments_members_become_children() {
        let s = split(json!({ "zip": "attachments", "pattern": "*.csv" })).unwrap();
        let mut input = parent(Body::empty());
        input.attachments = vec![
            attachment(
                "a.zip",
                "application/octet-stream",
                &zip_of(&[("x.csv", b"1")]),
            ),
            attachment("note.txt", "text/plain", b"not a zip"),
            attachment(
                "second",
                "application/zip",
                &zip_of(&[("y.csv", b"2"), ("y.txt", b"")]),
            ),
        ];
        let children = children(s.process(input).unwrap());
        let seen: Vec<_> = children
            .iter()
            .map(|c| {
                (
                    c.metadata["split.archive"].as_str(),
                    c.metadata["split.name"].as_str(),
                    c.metadata["split.index"].as_str(),
                )
            })
            .collect();
        assert_eq!(seen, [("a.zip", "x.csv", "0"), ("second", "y.csv", "1")]);
        assert_eq!(children[1].body.media_type, "text/csv");
    }

    #[test]
    fn traversal_names_refuse_the_archive() {
        let s = split(json!({ "zip": "body" })).unwrap();
        for (name, problem) in [
            ("../../etc/passwd", "it climbs out with `..`"),
            ("a/../../b", "it climbs out with `..`"),
            ("..\\evil.exe", "it climbs out with `..`"),
            ("/etc/passwd", "it is an absolute path"),
            ("C:\\windows\\x", "it starts with a drive"),
        ] {
            let input = parent(zip_body(&[("fine.txt", b"ok"), (name, b"x")]));
            let error = s.process(input).unwrap_err();
            assert!(!error.retryable);
            assert_eq!(
                error.message,
                format!(
                    "the zip body holds `{name}`, an unsafe name ({problem}); the archive is refused"
                )
            );
        }
    }

    #[test]
    fn zip_size_and_member_count_are_bounded() {
        let big = vec![b'0'; 10_000];
        let s = split(json!({ "zip": "body", "max_bytes": 15_000 })).unwrap();
        let input = parent(zip_body(&[("a", &big), ("b", &big)]));
        let error = s.process(input).unwrap_err();
        assert!(!error.retryable);
        assert_eq!(
            error.message,
            "the zip body holds more than 15000 bytes uncompressed (`max_bytes`), at `b`"
        );
        let s = split(json!({ "zip": "body", "max_children": 2 })).unwrap();
        let input = parent(zip_body(&[("a", b"1"), ("b", b"2"), ("c", b"3")]));
        let error = s.process(input).unwrap_err();
        assert_eq!(
            error.message,
            "split would make more than 2 children (`max_children`)"
        );
    }

    #[test]
    fn a_body_that_is_not_a_zip_fails_permanently() {
        let s = split(json!({ "zip": "body" })).unwrap();
        let error = s.process(parent(Body::json(&json!({})))).unwrap_err();
        assert!(!error.retryable);
        assert!(
            error
                .message
                .starts_with("the zip body is not a zip archive"),
            "{error}"
        );
        match s.process(parent(zip_body(&[("d/", b"")]))).unwrap() {
            Outcome::Filtered { reason } => {
                assert_eq!(
                    reason,
                    "split made no children: the zip archive holds no files"
                )
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn configuration_errors() {
        let message = |config| split(config).err().unwrap().message;
        assert!(message(json!({})).contains("exactly one of"));
        assert!(message(json!({ "items": ".a", "attachments": true })).contains("exactly one of"));
        assert_eq!(
            split(json!({ "attachments": false })).err().unwrap().path,
            ["attachments"]
        );
        assert_eq!(
            split(json!({ "items": ".a", "pattern": "*" }))
                .err()
                .unwrap()
                .path,
            ["pattern"]
        );
        let error = split(json!({ "attachments": true, "pattern": "[" }))
            .err()
            .unwrap();
        assert_eq!(error.path, ["pattern"]);
        assert!(error.message.starts_with("invalid glob"), "{error}");
        assert_eq!(
            split(json!({ "zip": "body", "max_children": 0 }))
                .err()
                .unwrap()
                .path,
            ["max_children"]
        );
        assert_eq!(
            split(json!({ "attachments": true, "max_bytes": 5 }))
                .err()
                .unwrap()
                .path,
            ["max_bytes"]
        );
        assert!(message(json!({ "zip": "folder" })).contains("unknown variant `folder`"));
    }

    /// A record batch of `count` integer rows, as chunk 4 of load L.
    fn batch_of(count: usize) -> Passenger {
        use ferry_core::records::{BatchWriter, Column, ColumnType};
        let mut writer = BatchWriter::new(vec![
            Column::new("n", ColumnType::Integer),
            Column::new("t", ColumnType::Text),
        ]);
        for n in 1..=count {
            writer.raw(&n.to_string());
            writer.text("a\tb");
            writer.end_row();
        }
        let mut passenger = Passenger::pulled("db", "L#4").with_body(writer.finish());
        records::Chunk {
            load: "L".into(),
            number: 4,
            last: true,
        }
        .mark(&mut passenger);
        passenger
            .metadata
            .insert(records::ROWS.into(), count.to_string());
        passenger
    }

    #[test]
    fn record_batches_split_by_rows_with_stable_ids() {
        let split = crate::registry()
            .processor("split", &json!({ "rows": 2 }), &BuildContext::default())
            .unwrap();
        let children = match split.process(batch_of(5)).unwrap() {
            Outcome::Split(children) => children,
            other => panic!("unexpected outcome {other:?}"),
        };
        assert_eq!(children.len(), 3);
        let ids: Vec<&str> = children.iter().map(|c| c.external_id.as_str()).collect();
        assert_eq!(ids, ["L#4#0", "L#4#1", "L#4#2"]);
        let rows: Vec<Vec<Vec<Option<String>>>> = children
            .iter()
            .map(|c| records::rows(&records::read(&c.body).unwrap().data))
            .collect();
        assert_eq!(
            rows[0][1],
            [Some("2".to_string()), Some("a\tb".to_string())]
        );
        assert_eq!(rows[2].len(), 1);
        assert_eq!(children[2].metadata[records::ROWS], "1");
        assert_eq!(children[0].metadata["split.count"], "3");
        assert!(!children[0].metadata.contains_key(records::LOAD));
        assert!(!children[0].metadata.contains_key(records::CHUNK));
        // Splitting again gives the same ids: a re-split after a crash seats no duplicates.
        let again = match split.process(batch_of(5)).unwrap() {
            Outcome::Split(children) => children,
            other => panic!("unexpected outcome {other:?}"),
        };
        assert_eq!(again[1].external_id, children[1].external_id);

        // One per row by `rows: 1`; none at all is filtered.
        let per_row = crate::registry()
            .processor("split", &json!({ "rows": 1 }), &BuildContext::default())
            .unwrap();
        match per_row.process(batch_of(3)).unwrap() {
            Outcome::Split(children) => assert_eq!(children.len(), 3),
            other => panic!("unexpected outcome {other:?}"),
        }
        match per_row.process(batch_of(0)).unwrap() {
            Outcome::Filtered { reason } => assert!(reason.contains("no rows"), "{reason}"),
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    #[test]
    fn splitting_rows_needs_a_record_batch_and_a_sane_size() {
        let build = |config: serde_json::Value| {
            crate::registry().processor("split", &config, &BuildContext::default())
        };
        assert_eq!(build(json!({ "rows": 0 })).err().unwrap().path, ["rows"]);
        assert!(
            build(json!({ "rows": 2, "attachments": true }))
                .err()
                .unwrap()
                .message
                .contains("exactly one of")
        );
        let too_many = build(json!({ "rows": 1, "max_children": 2 })).unwrap();
        assert!(
            too_many
                .process(batch_of(3))
                .unwrap_err()
                .message
                .contains("2")
        );
        let split = build(json!({ "rows": 1 })).unwrap();
        let json = Passenger::pulled("t", "1").with_body(Body::json(&json!([1])));
        let error = split.process(json).unwrap_err();
        assert!(
            error.message.starts_with("`rows` splits record batches"),
            "{error}"
        );
    }
}
