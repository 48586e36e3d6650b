//! String Builder templates: `"vip-{timestamp:%Y%m%d}-{segment_name}"` parsed once, rendered
//! per row. Pure: the run's time and names come in as a [`RunContext`].

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

/// What a template may refer to besides the row: the run and the pipeline's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    /// The pipeline's name.
    pub pipeline: String,
    /// This run's ID.
    pub run_id: String,
    /// When the run started.
    pub started: DateTime<Utc>,
    /// `segment.id`.
    pub segment_id: Option<String>,
    /// `segment.name` (for a custom list, its name by default).
    pub segment_name: Option<String>,
    /// `audience.id`.
    pub audience_id: Option<String>,
    /// The zone the source's dates and times without one are read in (`source.timezone`).
    pub timezone: chrono_tz::Tz,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// The run's start time, RFC 3339 or in a strftime format.
    Timestamp(Option<String>),
    /// `{segment_id}`.
    SegmentId,
    /// `{segment_name}`.
    SegmentName,
    /// `{audience_id}`.
    AudienceId,
    /// `{pipeline}`.
    Pipeline,
    /// `{run_id}`.
    RunId,
    /// `{column:NAME}`: another column's value in the same row.
    Column(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The pieces, in order.
    pub pieces: Vec<Piece>,
}

/// Why a template does not parse: the character offset of the problem and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// 0-based character offset in the template text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

/// The placeholders a template may use, for hints.
pub const PLACEHOLDERS: &str = "{timestamp}, {timestamp:FORMAT}, {segment_id}, {segment_name}, {audience_id}, {pipeline}, {run_id}, {column:NAME}";

impl Template {
    /// Parses a template; `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let chars: Vec<char> = text.chars().collect();
        let mut index = 0;
        while index < chars.len() {
            match chars[index] {
                '{' if chars.get(index + 1) == Some(&'{') => {
                    literal.push('{');
                    index += 2;
                }
                '}' if chars.get(index + 1) == Some(&'}') => {
                    literal.push('}');
                    index += 2;
                }
                '{' => {
                    let Some(length) = chars[index + 1..].iter().position(|&c| c == '}') else {
                        return Err(TemplateError {
                            offset: index,
                            message: "`{` is never closed".into(),
                        });
                    };
                    let name: String = chars[index + 1..index + 1 + length].iter().collect();
                    let piece = placeholder(&name).map_err(|message| TemplateError {
                        offset: index,
                        message,
                    })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                    index += length + 2;
                }
                '}' => {
                    return Err(TemplateError {
                        offset: index,
                        message: "`}` without `{`; write `}}` for a brace".into(),
                    });
                }
                other => {
                    literal.push(other);
                    index += 1;
                }
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// Renders the template; `column` looks up another column of the row.
    pub fn render<'a>(
        &self,
        context: &RunContext,
        column: impl Fn(&str) -> Option<&'a str>,
    ) -> String {
        let mut output = String::with_capacity(self.pieces.len() * 8);
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => output.push_str(text),
                Piece::Timestamp(None) => {
                    output.push_str(&context.started.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                }
                Piece::Timestamp(Some(format)) => {
                    output.push_str(&context.started.format(format).to_string())
                }
                Piece::SegmentId => {
                    output.push_str(context.segment_id.as_deref().unwrap_or_default())
                }
                Piece::SegmentName => {
                    output.push_str(context.segment_name.as_deref().unwrap_or_default())
                }
                Piece::AudienceId => {
                    output.push_str(context.audience_id.as_deref().unwrap_or_default())
                }
                Piece::Pipeline => output.push_str(&context.pipeline),
                Piece::RunId => output.push_str(&context.run_id),
                Piece::Column(name) => output.push_str(column(name).unwrap_or_default()),
            }
        }
        output
    }

    /// The template for one run: every placeholder but `{column:NAME}` rendered once (the
    /// run's start, names, IDs), so each row only fills in its columns.
    pub fn for_run(&self, context: &RunContext) -> Template {
        let mut pieces: Vec<Piece> = Vec::new();
        for piece in &self.pieces {
            let text = match piece {
                Piece::Column(name) => {
                    pieces.push(Piece::Column(name.clone()));
                    continue;
                }
                Piece::Text(text) => text.clone(),
                other => Template {
                    pieces: vec![other.clone()],
                }
                .render(context, |_| None),
            };
            match pieces.last_mut() {
                Some(Piece::Text(before)) => before.push_str(&text),
                _ => pieces.push(Piece::Text(text)),
            }
        }
        Template { pieces }
    }

    /// The columns the template reads with `{column:NAME}`.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Column(name) => Some(name.as_str()),
            _ => None,
        })
    }
}

fn placeholder(name: &str) -> Result<Piece, String> {
    Ok(match name.trim() {
        "timestamp" => Piece::Timestamp(None),
        "segment_id" => Piece::SegmentId,
        "segment_name" => Piece::SegmentName,
        "audience_id" => Piece::AudienceId,
        "pipeline" => Piece::Pipeline,
        "run_id" => Piece::RunId,
        other => {
            if let Some(format) = other.strip_prefix("timestamp:") {
                if format.is_empty()
                    || StrftimeItems::new(format).any(|item| matches!(item, Item::Error))
                {
                    return Err(format!(
                        "`{format}` is not a valid time format (use strftime, e.g. `%Y-%m-%d`)"
                    ));
                }
                Piece::Timestamp(Some(format.to_string()))
            } else if let Some(column) = other.strip_prefix("column:") {
                if column.trim().is_empty() {
                    return Err("`{column:}` needs a column name".into());
                }
                Piece::Column(column.trim().to_string())
            } else {
                return Err(format!(
                    "unknown placeholder `{{{other}}}`; use {PLACEHOLDERS}"
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn context() -> RunContext {
        RunContext {
            pipeline: "vip".into(),
            run_id: "r1".into(),
            started: Utc
                .with_ymd_and_hms(2026, 11, 29, 3, 4, 5)
                .single()
                .expect("a time"),
            segment_id: Some("1234".into()),
            segment_name: Some("VIP".into()),
            audience_id: Some("42".into()),
            timezone: chrono_tz::Tz::UTC,
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let row = |name: &str| if name == "tier" { Some("gold") } else { None };
        for (template, expected) in [
            ("vip-{timestamp:%Y%m%d}-{segment_name}", "vip-20261129-VIP"),
            ("{timestamp}", "2026-11-29T03:04:05Z"),
            (
                "{segment_id}/{audience_id}/{pipeline}/{run_id}",
                "1234/42/vip/r1",
            ),
            ("{column:tier}-{column:missing}", "gold-"),
            ("{{literal}} }}", "{literal} }"),
            ("plain", "plain"),
        ] {
            let parsed = Template::parse(template).expect("parses");
            assert_eq!(parsed.render(&context(), row), expected, "{template}");
            // Rendered for the run first, it renders the same rows alike.
            let for_run = parsed.for_run(&context());
            assert_eq!(for_run.render(&context(), row), expected, "{template}");
            assert!(
                for_run
                    .pieces
                    .iter()
                    .all(|piece| matches!(piece, Piece::Text(_) | Piece::Column(_))),
                "{template}"
            );
        }
    }

    #[test]
    fn reports_bad_templates_with_offsets() {
        for (template, offset, message) in [
            ("a-{segmnt_name}", 2, "unknown placeholder `{segmnt_name}`"),
            ("a-{timestamp", 2, "never closed"),
            ("a}", 1, "`}` without `{`"),
            ("{timestamp:%Q}", 0, "not a valid time format"),
            ("{column:}", 0, "needs a column name"),
        ] {
            let error = Template::parse(template).expect_err("invalid");
            assert_eq!(error.offset, offset, "{template}");
            assert!(
                error.message.contains(message),
                "{template}: {}",
                error.message
            );
        }
    }
}
