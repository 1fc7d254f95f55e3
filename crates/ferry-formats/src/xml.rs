//! XML to and from a JSON value, by one fixed convention:
//!
//! - the document is an object with one key, the root element's name (or, with `root`, the
//!   root element's content itself);
//! - an element with neither attributes nor child elements is its text, a string (`""` when
//!   empty);
//! - otherwise it is an object: attributes as `"@name": "value"`, child elements by name, and
//!   its text (trimmed, when there are child elements) as `"#text"`;
//! - child elements that repeat a name become an array, in document order.
//!
//! Everything read is a string; comments, processing instructions and the DOCTYPE are skipped;
//! names keep their namespace prefix (`"soap:Body"`, `"@xmlns:soap"`). The order of differently
//! named children is not kept (JSON objects have none), nor where text sits between children.

use quick_xml::events::{BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde_json::{Map, Value};

use ferry_core::TextPosition;
use ferry_core::depth::{MAX_DEPTH, too_deep_message};

use crate::error::{FormatError, Position, pointer_push, within_depth};
use crate::json::{kind, strip_bom};

const XML: &str = "XML";

/// The key of an element's text when it also has attributes or children.
const TEXT_KEY: &str = "#text";

/// A validated XML configuration.
#[derive(Clone, Debug)]
pub(crate) struct XmlFormat {
    /// The root element's name; `None`: the value's single key names it.
    pub(crate) root: Option<String>,
    /// Element names written before their siblings, in this order (`order`).
    pub(crate) order: Vec<String>,
}

/// An element being read.
struct Open {
    name: String,
    /// Attributes (`@name`) and children, as they come.
    fields: Map<String, Value>,
    text: String,
    has_children: bool,
    /// Where its start tag is, for errors about it.
    at: u64,
}

impl Open {
    fn new(start: &BytesStart<'_>, bytes: &[u8], at: u64) -> Result<Open, FormatError> {
        let name = start.name().as_ref().to_string();
        let mut fields = Map::new();
        for attribute in start.attributes() {
            let attribute = attribute.map_err(|error| syntax_error(bytes, at, error))?;
            let key = attribute.key.as_ref();
            let value = attribute
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|error| syntax_error(bytes, at, error))?;
            fields.insert(format!("@{key}"), Value::String(value.into_owned()));
        }
        Ok(Open {
            name,
            fields,
            text: String::new(),
            has_children: false,
            at,
        })
    }

    /// The element as a JSON value (see the module documentation).
    fn finish(self) -> Value {
        if self.fields.is_empty() {
            return Value::String(self.text);
        }
        let mut fields = self.fields;
        let text = if self.has_children {
            self.text.trim()
        } else {
            self.text.as_str()
        };
        if !text.is_empty() {
            fields.insert(TEXT_KEY.into(), Value::String(text.into()));
        }
        Value::Object(fields)
    }

    fn add_child(&mut self, name: String, value: Value) {
        self.has_children = true;
        match self.fields.get_mut(&name) {
            None => {
                self.fields.insert(name, value);
            }
            Some(Value::Array(items)) => items.push(value),
            Some(first) => {
                let first = first.take();
                self.fields.insert(name, Value::Array(vec![first, value]));
            }
        }
    }
}

impl XmlFormat {
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let bytes = strip_bom(bytes);
        let text = std::str::from_utf8(bytes).map_err(|error| {
            error_at(
                bytes,
                error.valid_up_to() as u64,
                "the document is not valid UTF-8",
            )
        })?;
        let mut reader = Reader::from_str(text);
        let mut stack: Vec<Open> = Vec::new();
        let mut root: Option<(String, Value, u64)> = None;
        loop {
            let at = reader.buffer_position();
            let event = reader
                .read_event()
                .map_err(|error| syntax_error(bytes, reader.error_position(), error))?;
            let outside = |what: &str| {
                error_at(
                    bytes,
                    at,
                    format!("{what} outside the root element is not allowed"),
                )
            };
            match event {
                Event::Start(start) | Event::Empty(start) if root.is_some() && stack.is_empty() => {
                    let name = start.name().as_ref().to_string();
                    return Err(error_at(
                        bytes,
                        at,
                        format!("a second root element `<{name}>`: a document has one"),
                    ));
                }
                Event::Start(_) if stack.len() >= MAX_DEPTH => {
                    // Elements nest in a Vec here, but the value they make is walked by
                    // recursive code everywhere after (issue 12: 20,000 levels aborted ferry).
                    return Err(error_at(bytes, at, too_deep_message()));
                }
                Event::Start(start) => stack.push(Open::new(&start, bytes, at)?),
                Event::Empty(start) => {
                    let element = Open::new(&start, bytes, at)?;
                    close(element, &mut stack, &mut root);
                }
                Event::End(_) => {
                    // The reader has checked that the end tag matches the open element.
                    if let Some(element) = stack.pop() {
                        close(element, &mut stack, &mut root);
                    }
                }
                Event::Text(content) => {
                    let content = content.xml10_content();
                    match stack.last_mut() {
                        Some(open) => open.text.push_str(&content),
                        None if content.trim().is_empty() => {}
                        None => return Err(outside("text")),
                    }
                }
                Event::CData(content) => match stack.last_mut() {
                    Some(open) => open.text.push_str(&content.xml10_content()),
                    None => return Err(outside("CDATA")),
                },
                Event::GeneralRef(reference) => {
                    let Some(open) = stack.last_mut() else {
                        return Err(outside("a reference"));
                    };
                    let resolved = match reference.resolve_char_ref() {
                        Ok(Some(character)) => character,
                        Ok(None) => match predefined_entity(&reference) {
                            Some(character) => character,
                            None => {
                                return Err(error_at(
                                    bytes,
                                    at,
                                    format!(
                                        "unknown entity `&{};`: only the five predefined \
                                         entities and character references are read",
                                        &*reference
                                    ),
                                ));
                            }
                        },
                        Err(error) => return Err(syntax_error(bytes, at, error)),
                    };
                    open.text.push(resolved);
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => {}
                Event::Eof => break,
            }
        }
        if let Some(open) = stack.last() {
            return Err(error_at(
                bytes,
                bytes.len() as u64,
                format!(
                    "unexpected end of the document: `<{}>` is not closed",
                    open.name
                ),
            ));
        }
        let Some((name, value, at)) = root else {
            return Err(error_at(
                bytes,
                bytes.len() as u64,
                "the document has no root element",
            ));
        };
        match &self.root {
            None => within_depth(XML, Value::Object(Map::from_iter([(name, value)]))),
            Some(expected) if *expected == name => within_depth(XML, value),
            Some(expected) => Err(error_at(
                bytes,
                at,
                format!("the root element is `<{name}>`, expected `<{expected}>` (`root`)"),
            )),
        }
    }

    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        match &self.root {
            Some(root) => write_element(&mut out, root, value, "", &self.order)?,
            None => {
                let single = match value {
                    Value::Object(object) if object.len() == 1 => object.iter().next(),
                    _ => None,
                };
                let Some((name, content)) = single else {
                    return Err(FormatError::at_path(
                        XML,
                        "",
                        format!(
                            "expected an object with one key, the root element's name (or set \
                             `root`), found {}",
                            describe(value)
                        ),
                    ));
                };
                let pointer = pointer_push("", name);
                if content.is_array() {
                    return Err(FormatError::at_path(
                        XML,
                        pointer,
                        "the root element cannot be an array: a document has one root",
                    ));
                }
                write_element(&mut out, name, content, &pointer, &self.order)?;
            }
        }
        out.push('\n');
        Ok(out.into_bytes())
    }
}

/// Records a finished element: into its parent, or as the document's root.
fn close(element: Open, stack: &mut [Open], root: &mut Option<(String, Value, u64)>) {
    let (name, at) = (element.name.clone(), element.at);
    let value = element.finish();
    match stack.last_mut() {
        Some(parent) => parent.add_child(name, value),
        None => *root = Some((name, value, at)),
    }
}

fn predefined_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

fn error_at(bytes: &[u8], offset: u64, message: impl Into<String>) -> FormatError {
    let TextPosition { line, column } = TextPosition::of_offset(bytes, offset as usize);
    FormatError::at(
        XML,
        Position::Line {
            line,
            column: Some(column),
        },
        message,
    )
}

fn syntax_error(bytes: &[u8], offset: u64, error: impl std::fmt::Display) -> FormatError {
    error_at(bytes, offset, error.to_string())
}

/// `an object with 3 keys`, `a string`…: what was given instead of a single-key object.
fn describe(value: &Value) -> String {
    match value {
        Value::Object(object) => format!("an object with {} keys", object.len()),
        other => kind(other).to_string(),
    }
}

/// Writes `<name …>…</name>` for `value` (see the module documentation for the mapping).
fn write_element(
    out: &mut String,
    name: &str,
    value: &Value,
    pointer: &str,
    order: &[String],
) -> Result<(), FormatError> {
    check_name(name, pointer)?;
    out.push('<');
    out.push_str(name);
    let object = match value {
        Value::Null => {
            out.push_str("/>");
            return Ok(());
        }
        Value::Array(_) => {
            return Err(FormatError::at_path(
                XML,
                pointer,
                "an array inside an array cannot be written as XML",
            ));
        }
        Value::Object(object) => object,
        scalar => {
            out.push('>');
            push_text(out, &scalar_text(scalar), pointer)?;
            close_tag(out, name);
            return Ok(());
        }
    };

    let mut text = None;
    let mut has_children = false;
    for (key, field) in object {
        if let Some(attribute) = key.strip_prefix('@') {
            let pointer = pointer_push(pointer, key);
            check_name(attribute, &pointer)?;
            let Some(field) = scalar(field) else {
                return Err(FormatError::at_path(
                    XML,
                    pointer,
                    format!(
                        "an attribute is a string, number or boolean, found {}",
                        kind(field)
                    ),
                ));
            };
            out.push(' ');
            out.push_str(attribute);
            out.push_str("=\"");
            push_attribute(out, &field, &pointer)?;
            out.push('"');
        } else if key == TEXT_KEY {
            let Some(field) = scalar(field) else {
                return Err(FormatError::at_path(
                    XML,
                    pointer_push(pointer, key),
                    format!(
                        "`#text` is a string, number or boolean, found {}",
                        kind(field)
                    ),
                ));
            };
            text = Some(field);
        } else if key.starts_with('#') {
            return Err(FormatError::at_path(
                XML,
                pointer_push(pointer, key),
                format!("unknown special key `{key}`: only `#text` and `@attribute` keys are"),
            ));
        } else {
            has_children = true;
        }
    }
    if text.is_none() && !has_children {
        out.push_str("/>");
        return Ok(());
    }
    out.push('>');
    if let Some(text) = text {
        push_text(out, &text, &pointer_push(pointer, TEXT_KEY))?;
    }
    // Children named in `order` first, in its order; the others as the object holds them.
    let mut children: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(key, _)| !key.starts_with(['@', '#']))
        .collect();
    if !order.is_empty() {
        children.sort_by_key(|(key, _)| {
            order
                .iter()
                .position(|name| name == *key)
                .unwrap_or(usize::MAX)
        });
    }
    for (key, field) in children {
        let pointer = pointer_push(pointer, key);
        match field {
            Value::Array(items) => {
                for (index, item) in items.iter().enumerate() {
                    let at = pointer_push(&pointer, &index.to_string());
                    write_element(out, key, item, &at, order)?;
                }
            }
            _ => write_element(out, key, field, &pointer, order)?,
        }
    }
    close_tag(out, name);
    Ok(())
}

fn close_tag(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// A scalar's text: strings as they are, numbers and booleans as JSON writes them.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(_) | Value::Number(_) | Value::Bool(_) => Some(scalar_text(value)),
        _ => None,
    }
}

/// Whether `name` can name an element or attribute: a simplified check of XML's `Name`, a
/// letter, `_` or `:` first, then letters, digits, `-`, `.`, `_`, `:`.
pub(crate) fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_alphabetic() || first == '_' || first == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | ':'))
}

/// Refuses names that would make the document ill-formed.
fn check_name(name: &str, pointer: &str) -> Result<(), FormatError> {
    if is_name(name) {
        Ok(())
    } else {
        Err(FormatError::at_path(
            XML,
            pointer,
            format!("`{name}` is not a valid XML name"),
        ))
    }
}

/// Whether XML 1.0 can hold `c` at all, even as a character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn invalid_char(c: char, pointer: &str) -> FormatError {
    FormatError::at_path(
        XML,
        pointer,
        format!("character U+{:04X} cannot be written in XML", c as u32),
    )
}

/// Escapes element text. `\r` is written as a reference, since a parser turns a raw one into
/// `\n`.
fn push_text(out: &mut String, text: &str, pointer: &str) -> Result<(), FormatError> {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            c => return Err(invalid_char(c, pointer)),
        }
    }
    Ok(())
}

/// Escapes an attribute value. Tabs and line breaks are written as references, since a parser
/// turns raw ones into spaces.
fn push_attribute(out: &mut String, text: &str, pointer: &str) -> Result<(), FormatError> {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c if is_xml_char(c) => out.push(c),
            c => return Err(invalid_char(c, pointer)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plain() -> XmlFormat {
        XmlFormat {
            root: None,
            order: Vec::new(),
        }
    }

    fn decode(text: &str) -> Result<Value, String> {
        plain()
            .decode(text.as_bytes())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_convention() {
        let value = decode(
            r#"<?xml version="1.0"?>
<!-- an order -->
<order id="42" xmlns:x="urn:x">
  <customer>Ann &amp; Bob</customer>
  <line sku="A1">2</line>
  <line sku="B2"><qty>1</qty><note/></line>
  <x:flag>&#x41;<![CDATA[<raw>]]></x:flag>
  tail text
</order>
"#,
        )
        .unwrap();
        assert_eq!(
            value,
            json!({ "order": {
                "@id": "42",
                "@xmlns:x": "urn:x",
                "customer": "Ann & Bob",
                "line": [
                    { "@sku": "A1", "#text": "2" },
                    { "@sku": "B2", "qty": "1", "note": "" },
                ],
                "x:flag": "A<raw>",
                "#text": "tail text",
            }})
        );
    }

    #[test]
    fn encode_follows_the_same_convention() {
        let value = json!({ "order": {
            "@id": 42,
            "customer": "Ann & <Bob>",
            "line": [{ "@sku": "A\"1", "#text": 2 }, { "qty": true, "note": null }],
        }});
        let text = String::from_utf8(plain().encode(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<order id=\"42\">\
             <customer>Ann &amp; &lt;Bob&gt;</customer>\
             <line sku=\"A&quot;1\">2</line><line><note/><qty>true</qty></line></order>\n"
        );
        let back = plain().decode(text.as_bytes()).unwrap();
        assert_eq!(
            back["order"]["line"][0],
            json!({ "@sku": "A\"1", "#text": "2" })
        );
    }

    #[test]
    fn order_puts_named_children_first_at_every_level() {
        let value = json!({ "IDOC": {
            "@BEGIN": "1",
            "E1EDP01": [{ "VPREI": "9", "POSEX": "10" }, { "POSEX": "20" }],
            "E1EDK01": { "BELNR": "PO-1" },
            "EDI_DC40": { "TABNAM": "EDI_DC40", "DIRECT": "2" },
        }});
        let order = ["EDI_DC40", "E1EDK01", "TABNAM", "POSEX"]
            .map(String::from)
            .to_vec();
        let ordered = XmlFormat { root: None, order };
        let text = String::from_utf8(ordered.encode(&value).unwrap()).unwrap();
        assert_eq!(
            text,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<IDOC BEGIN=\"1\">\
             <EDI_DC40><TABNAM>EDI_DC40</TABNAM><DIRECT>2</DIRECT></EDI_DC40>\
             <E1EDK01><BELNR>PO-1</BELNR></E1EDK01>\
             <E1EDP01><POSEX>10</POSEX><VPREI>9</VPREI></E1EDP01>\
             <E1EDP01><POSEX>20</POSEX></E1EDP01></IDOC>\n"
        );
        // Without `order`: alphabetical, the control record after the segments.
        let text = String::from_utf8(plain().encode(&value).unwrap()).unwrap();
        assert!(text.find("<E1EDK01>") < text.find("<EDI_DC40>"), "{text}");
    }

    #[test]
    fn whitespace_and_line_breaks_survive_a_round_trip() {
        let value = json!({ "a": { "@v": " x\ty\r\nz ", "b": [" \r\n ", "\n"] } });
        let encoded = plain().encode(&value).unwrap();
        assert_eq!(plain().decode(&encoded).unwrap(), value);
    }

    #[test]
    fn a_configured_root_is_checked_and_unwrapped() {
        let format = XmlFormat {
            root: Some("orders".into()),
            order: Vec::new(),
        };
        let value = format.decode(b"<orders><order>1</order></orders>").unwrap();
        assert_eq!(value, json!({ "order": "1" }));
        assert_eq!(
            format.decode(&format.encode(&value).unwrap()).unwrap(),
            value
        );
        let error = format.decode(b"<invoices/>").unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML line 1, column 1: the root element is `<invoices>`, expected `<orders>` (`root`)"
        );
    }

    #[test]
    fn malformed_documents_give_line_and_column() {
        let error = decode("<a>\n  <b>1</c>\n</a>").unwrap_err();
        assert!(error.starts_with("XML line 2, column 7: "), "{error}");
        assert!(error.contains("but `</c>` was found"), "{error}");
        let error = decode("<a>\n  <b>1</b>\n").unwrap_err();
        assert_eq!(
            error,
            "XML line 3, column 1: unexpected end of the document: `<a>` is not closed"
        );
        let error = decode("<a/>\n<b/>").unwrap_err();
        assert_eq!(
            error,
            "XML line 2, column 1: a second root element `<b>`: a document has one"
        );
        let error = decode("<a>&nbsp;</a>").unwrap_err();
        assert!(
            error.starts_with("XML line 1, column 4: unknown entity `&nbsp;`"),
            "{error}"
        );
        let error = decode("").unwrap_err();
        assert_eq!(
            error,
            "XML line 1, column 1: the document has no root element"
        );
        let error = decode("<a>\n<b x=1/></a>").unwrap_err();
        assert!(error.starts_with("XML line 2, column 1: "), "{error}");
        let error = decode("hello <a/>").unwrap_err();
        assert_eq!(
            error,
            "XML line 1, column 1: text outside the root element is not allowed"
        );
        let error = plain().decode(b"<a>\n\xFF</a>").unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML line 2, column 1: the document is not valid UTF-8"
        );
    }

    /// Issue 12: 20,000 nested elements overflowed the stack of whatever walked the value.
    #[test]
    fn deep_nesting_is_refused_with_the_depth() {
        let deep = |levels: usize| "<a>".repeat(levels) + &"</a>".repeat(levels);
        let error = decode(&deep(20_000)).unwrap_err();
        assert_eq!(
            error,
            format!(
                "XML line 1, column {}: {}",
                MAX_DEPTH * 3 + 1,
                too_deep_message()
            )
        );
        assert!(decode(&deep(MAX_DEPTH - 1)).is_ok());
        // Repeated elements become arrays, one more level each.
        let repeated = "<a><b/><b>".repeat(60) + &"</b></a>".repeat(60);
        let error = decode(&repeated).unwrap_err();
        assert!(error.contains("deeper than 100 levels"), "{error}");
    }

    #[test]
    fn values_that_cannot_be_xml_are_refused_with_their_path() {
        let error = plain().encode(&json!({ "a": 1, "b": 2 })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML at the top level: expected an object with one key, the root element's name \
             (or set `root`), found an object with 2 keys"
        );
        let error = plain().encode(&json!({ "a": { "b": [[1]] } })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML at /a/b/0: an array inside an array cannot be written as XML"
        );
        let error = plain().encode(&json!({ "a": { "1x": 1 } })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML at /a/1x: `1x` is not a valid XML name"
        );
        let error = plain().encode(&json!({ "a": "\u{1}" })).unwrap_err();
        assert_eq!(
            error.to_string(),
            "XML at /a: character U+0001 cannot be written in XML"
        );
        let error = plain().encode(&json!({ "a": { "@b": [1] } })).unwrap_err();
        assert!(
            error.to_string().starts_with("XML at /a/@b: an attribute"),
            "{error}"
        );
        let error = plain().encode(&json!({ "a": [1, 2] })).unwrap_err();
        assert!(error.to_string().contains("cannot be an array"), "{error}");
    }
}
