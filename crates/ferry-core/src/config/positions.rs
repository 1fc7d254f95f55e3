//! Where every key of a YAML file is, so that errors found after parsing (unknown keys, bad
//! durations, a connector's complaint about its own configuration) can still point at a line
//! and column.
//!
//! `serde-saphyr` knows positions only while it parses, and the checks that find most errors
//! run later on plain values. So the file is read a second time as a stream of parser events,
//! and the position of each key path is written down.

use std::collections::HashMap;
use std::fmt;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::Position;
use crate::TextPosition;

/// One step of a key path: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A key path such as `pullers[0].after_seat.move_to`; empty for the document as a whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The path of the document itself.
    pub(crate) fn root() -> KeyPath {
        KeyPath::default()
    }

    /// This path followed by the mapping key `key`.
    pub(crate) fn key(&self, key: &str) -> KeyPath {
        self.with(Segment::Key(key.to_string()))
    }

    /// This path followed by the sequence index `index`.
    pub(crate) fn index(&self, index: usize) -> KeyPath {
        self.with(Segment::Index(index))
    }

    /// This path followed by `segment`.
    pub(crate) fn with(&self, segment: Segment) -> KeyPath {
        let mut segments = self.0.clone();
        segments.push(segment);
        KeyPath(segments)
    }

    /// The path without its last step; `None` for the root.
    pub(crate) fn parent(&self) -> Option<KeyPath> {
        let (_, rest) = self.0.split_last()?;
        Some(KeyPath(rest.to_vec()))
    }

    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &KeyPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The position of every mapping key and sequence item of one YAML document.
#[derive(Debug, Default)]
pub(crate) struct Positions {
    by_path: HashMap<KeyPath, Position>,
    /// Where the text of each scalar value starts, for errors inside a value (a program).
    texts: HashMap<KeyPath, TextStart>,
}

/// Where the text of a scalar value starts in the file.
#[derive(Clone, Copy, Debug)]
struct TextStart {
    /// The first character of the text (for a block scalar, of its first content line).
    at: Position,
    /// A block scalar (`|` or `>`): each line of the text is a line of the file, indented by
    /// `at.column - 1`.
    block: bool,
}

/// A collection being walked, with the path of the node that opened it.
enum Open {
    /// A mapping; `next_key` is `Some` while its value is awaited. A `path` of `None` means
    /// the collection cannot be named (it is, or lies inside, a complex key) and is skipped.
    Mapping {
        path: Option<KeyPath>,
        next_key: Option<Option<String>>,
    },
    Sequence {
        path: Option<KeyPath>,
        next_index: usize,
    },
}

impl Positions {
    /// Records where each key of the first document of `text` is. Stops quietly at a syntax
    /// error: the parse that reports it runs separately.
    pub(crate) fn of(text: &str) -> Positions {
        let lines: Vec<&str> = text.lines().collect();
        let mut positions = Positions::default();
        let mut open: Vec<Open> = Vec::new();
        let mut seen_root = false;
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let position = Position {
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
            };
            let starts = match event {
                Event::MappingStart(..) => Some(true),
                Event::SequenceStart(..) => Some(false),
                Event::Scalar(..) | Event::Alias(..) => None,
                Event::MappingEnd | Event::SequenceEnd => {
                    open.pop();
                    continue;
                }
                Event::DocumentEnd => break,
                _ => continue,
            };
            // Where this node sits: the root, a key, a mapping value or a sequence item.
            let path = match open.last_mut() {
                None if seen_root => break,
                None => {
                    seen_root = true;
                    positions.by_path.insert(KeyPath::root(), position);
                    Some(KeyPath::root())
                }
                Some(Open::Mapping { path, next_key }) => match next_key.take() {
                    None => {
                        // A key. Only a scalar key names a path; a collection as key is skipped.
                        let key = match &event {
                            Event::Scalar(value, ..) => Some(value.to_string()),
                            _ => None,
                        };
                        if let (Some(path), Some(key)) = (path.as_ref(), key.as_ref()) {
                            positions.by_path.entry(path.key(key)).or_insert(position);
                        }
                        *next_key = Some(key);
                        None
                    }
                    Some(key) => {
                        let path = path.as_ref().zip(key).map(|(path, key)| path.key(&key));
                        if let (Some(path), Event::Scalar(_, style, ..)) = (&path, &event) {
                            let start = text_start(*style, position, &lines);
                            positions.texts.insert(path.clone(), start);
                        }
                        path
                    }
                },
                Some(Open::Sequence { path, next_index }) => {
                    let item = path.as_ref().map(|path| path.index(*next_index));
                    *next_index += 1;
                    if let Some(item) = &item {
                        positions.by_path.entry(item.clone()).or_insert(position);
                    }
                    item
                }
            };
            match starts {
                Some(true) => open.push(Open::Mapping {
                    path,
                    next_key: None,
                }),
                Some(false) => open.push(Open::Sequence {
                    path,
                    next_index: 0,
                }),
                None => {}
            }
        }
        positions
    }

    /// The position of `path`, or of its nearest ancestor that is in the file (a missing key is
    /// reported where its mapping is); line 1, column 1 when nothing is known.
    pub(crate) fn find(&self, path: &KeyPath) -> Position {
        let mut current = Some(path.clone());
        while let Some(path) = current {
            if let Some(position) = self.by_path.get(&path) {
                return *position;
            }
            current = path.parent();
        }
        Position { line: 1, column: 1 }
    }

    /// The position in the file of `inner`, a position inside the text of the scalar value at
    /// `path`; the value's own position when its text is not known.
    pub(crate) fn within(&self, path: &KeyPath, inner: TextPosition) -> Position {
        let Some(start) = self.texts.get(path) else {
            return self.find(path);
        };
        let line = start.at.line + inner.line.saturating_sub(1);
        let column = if inner.line <= 1 || start.block {
            start.at.column + inner.column.saturating_sub(1)
        } else {
            inner.column
        };
        Position { line, column }
    }
}

/// Where a scalar's text begins: after the opening quote, or on the first content line of a
/// block scalar, which starts below its `|` or `>` indicator.
fn text_start(style: ScalarStyle, at: Position, lines: &[&str]) -> TextStart {
    match style {
        ScalarStyle::Literal | ScalarStyle::Folded => {
            // The span starts at the indicator or already on the content, by parser version.
            let mut from = at.line.saturating_sub(1) as usize;
            let rest = lines
                .get(from)
                .and_then(|line| line.get(at.column.saturating_sub(1) as usize..));
            if rest.is_some_and(|rest| rest.starts_with(['|', '>'])) {
                from += 1;
            }
            let first = lines
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, line)| !line.trim().is_empty());
            let at = match first {
                Some((index, line)) => Position {
                    line: index as u64 + 1,
                    column: (line.len() - line.trim_start().len()) as u64 + 1,
                },
                None => at,
            };
            TextStart { at, block: true }
        }
        ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => TextStart {
            at: Position {
                column: at.column + 1,
                ..at
            },
            block: false,
        },
        _ => TextStart { at, block: false },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u64, column: u64) -> Position {
        Position { line, column }
    }

    fn path(keys: &[&str]) -> KeyPath {
        let mut path = KeyPath::root();
        for key in keys {
            path = match key.parse::<usize>() {
                Ok(index) => path.index(index),
                Err(_) => path.key(key),
            };
        }
        path
    }

    const TEXT: &str = "\
# a comment
name: x
list:
  - a
  - { b: 1, c: [2, 3] }
nested:
  deeper:
    leaf: \"quoted: value\"
? [complex, key]
: { hidden: 1 }
last: 1
";

    #[test]
    fn finds_keys_items_and_flow_collections() {
        let positions = Positions::of(TEXT);
        assert_eq!(positions.find(&KeyPath::root()), at(2, 1));
        assert_eq!(positions.find(&path(&["name"])), at(2, 1));
        assert_eq!(positions.find(&path(&["list", "0"])), at(4, 5));
        assert_eq!(positions.find(&path(&["list", "1"])), at(5, 5));
        assert_eq!(positions.find(&path(&["list", "1", "c"])), at(5, 13));
        assert_eq!(positions.find(&path(&["list", "1", "c", "1"])), at(5, 20));
        assert_eq!(
            positions.find(&path(&["nested", "deeper", "leaf"])),
            at(8, 5)
        );
        assert_eq!(positions.find(&path(&["last"])), at(11, 1));
    }

    #[test]
    fn a_missing_key_is_found_at_its_nearest_ancestor() {
        let positions = Positions::of(TEXT);
        assert_eq!(
            positions.find(&path(&["nested", "deeper", "nope", "x"])),
            at(7, 3)
        );
        assert_eq!(positions.find(&path(&["hidden"])), at(2, 1));
        assert_eq!(Positions::of("").find(&path(&["a"])), at(1, 1));
    }

    #[test]
    fn finds_positions_inside_the_text_of_values() {
        let text = "a: plain text\nb: \"quoted\"\nc: |\n  line one\n    line two\nd: x\n";
        let positions = Positions::of(text);
        let inner = |line, column| TextPosition { line, column };
        assert_eq!(positions.within(&path(&["a"]), inner(1, 7)), at(1, 10));
        assert_eq!(positions.within(&path(&["b"]), inner(1, 1)), at(2, 5));
        assert_eq!(positions.within(&path(&["c"]), inner(1, 1)), at(4, 3));
        assert_eq!(positions.within(&path(&["c"]), inner(2, 3)), at(5, 5));
        assert_eq!(positions.within(&path(&["nope"]), inner(2, 3)), at(1, 1));
    }

    #[test]
    fn prints_paths_as_written_in_messages() {
        assert_eq!(
            path(&["pullers", "0", "after_seat", "move_to"]).to_string(),
            "pullers[0].after_seat.move_to"
        );
        assert_eq!(KeyPath::root().to_string(), "");
    }
}
