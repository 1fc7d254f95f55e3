//! Name templates such as `{date}/{external_id}.xml`, parsed once when a definition is built.

use crate::Passenger;

/// A parsed template: literal text and placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Id,
    Client,
    Pipeline,
    SourceSystem,
    ExternalId,
    /// `created_at` as `YYYY-MM-DD`.
    Date,
    Metadata(String),
}

/// The placeholders a template may use, for error messages.
pub const PLACEHOLDERS: &str =
    "{id}, {client}, {pipeline}, {source_system}, {external_id}, {date}, {metadata.KEY}";

impl Template {
    /// Parses `text`; an unknown placeholder or an unclosed brace is an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in template `{text}`"))?;
            let name = &after[..close];
            parts.push(match name {
                "id" => Part::Id,
                "client" => Part::Client,
                "pipeline" => Part::Pipeline,
                "source_system" => Part::SourceSystem,
                "external_id" => Part::ExternalId,
                "date" => Part::Date,
                _ => match name.strip_prefix("metadata.") {
                    Some(key) if !key.is_empty() => Part::Metadata(key.to_string()),
                    _ => {
                        return Err(format!(
                            "unknown placeholder `{{{name}}}` in template `{text}`; use {PLACEHOLDERS}"
                        ));
                    }
                },
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("empty template".into());
        }
        Ok(Template { parts })
    }

    /// Renders the template as a path for a passenger. Substituted values are made safe as one
    /// path segment: `/`, `\` and NUL become `_`, and `.`/`..` become `_`, so a value from
    /// outside can never climb out of a directory. A missing metadata key renders as empty.
    pub fn render(&self, passenger: &Passenger) -> String {
        self.render_with(passenger, path_safe)
    }

    /// Renders the template as plain text, values as they are (for metadata, not paths).
    pub fn render_text(&self, passenger: &Passenger) -> String {
        self.render_with(passenger, str::to_string)
    }

    fn render_with(&self, passenger: &Passenger, escape: fn(&str) -> String) -> String {
        let mut out = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Literal(text) => {
                    out.push_str(text);
                    continue;
                }
                Part::Id => passenger.id.to_string(),
                Part::Client => passenger.client.clone(),
                Part::Pipeline => passenger.pipeline.clone(),
                Part::SourceSystem => passenger.source_system.clone(),
                Part::ExternalId => passenger.external_id.clone(),
                Part::Date => passenger.created_at.format("%Y-%m-%d").to_string(),
                Part::Metadata(key) => passenger.metadata.get(key).cloned().unwrap_or_default(),
            };
            out.push_str(&escape(&value));
        }
        out
    }
}

/// `value` as a single safe path segment.
fn path_safe(value: &str) -> String {
    if value == "." || value == ".." {
        return "_".into();
    }
    value.replace(['/', '\\', '\0'], "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passenger(external_id: &str) -> Passenger {
        let mut p = Passenger::pulled("edi", external_id);
        p.metadata.insert("kind".into(), "invoice".into());
        p
    }

    #[test]
    fn renders_placeholders() {
        let t = Template::parse("{source_system}/{metadata.kind}-{external_id}.xml").unwrap();
        assert_eq!(t.render(&passenger("42")), "edi/invoice-42.xml");
    }

    #[test]
    fn values_cannot_escape_the_directory() {
        let t = Template::parse("{external_id}").unwrap();
        assert_eq!(t.render(&passenger("../../etc/passwd")), ".._.._etc_passwd");
        assert_eq!(t.render(&passenger("..")), "_");
    }

    #[test]
    fn text_keeps_values_as_they_are() {
        let t = Template::parse("{external_id}").unwrap();
        assert_eq!(t.render_text(&passenger("a/b")), "a/b");
    }

    #[test]
    fn refuses_unknown_placeholders() {
        let error = Template::parse("{nope}").unwrap_err();
        assert!(error.contains("unknown placeholder `{nope}`"), "{error}");
        assert!(
            Template::parse("{external_id")
                .unwrap_err()
                .contains("unclosed")
        );
    }
}
