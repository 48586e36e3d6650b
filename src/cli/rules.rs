//! `tapline rules`: CleverTap's record rules that tapline checks, each with its code and the
//! pages that document it.

use std::io::Write;

/// `tapline rules`: the table of CleverTap's record rules.
pub(super) fn print_rules(out: &mut dyn Write) -> std::io::Result<()> {
    for rule in crate::clevertap::rules::RULES {
        let code = match rule.code {
            0 => "—".to_string(),
            code => code.to_string(),
        };
        writeln!(out, "{code:>4}  {}: {}", rule.name, rule.asks)?;
        let (pages, others) = documentation(rule.source);
        for page in pages {
            writeln!(out, "      {page}")?;
        }
        if !others.is_empty() {
            writeln!(out, "      also: {}", others.join("; "))?;
        }
    }
    Ok(())
}

/// Where a rule is documented: the URLs of the CleverTap pages its source names (`[DOC]
/// upload-events-api (120), api-errors (522)`), and the other sources (recorded answers,
/// CleverTap's SDKs, peers) as they are, without tapline's own references.
fn documentation(source: &str) -> (Vec<String>, Vec<String>) {
    let mut pages = Vec::new();
    let mut others = Vec::new();
    for part in split_outside_brackets(source, ';') {
        match part.strip_prefix("[DOC]") {
            Some(docs) => {
                for page in split_outside_brackets(docs, ',') {
                    let slug = page
                        .split([' ', '('])
                        .find(|word| !word.is_empty())
                        .filter(|word| {
                            word.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                        })
                        .unwrap_or_default();
                    // The product docs' pages; the API reference's are the others.
                    let site = match slug {
                        "platform-considerations" | "custom-list-segments" => "docs",
                        _ => "developer",
                    };
                    let url = format!("https://{site}.clevertap.com/docs/{slug}");
                    if !slug.is_empty() && !pages.contains(&url) {
                        pages.push(url);
                    }
                }
            }
            None if part.contains("tapline's") || part.is_empty() => {}
            None => others.push(part.to_string()),
        }
    }
    (pages, others)
}

/// `a (1, 2), b` split at `,` → `a (1, 2)` and `b`: separators inside brackets stay.
fn split_outside_brackets(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0_usize, 0);
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                parts.push(text[start..at].trim());
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

#[cfg(test)]
mod tests {
    #[test]
    fn rules_name_the_pages_that_document_them() {
        let (pages, others) = super::documentation(
            "[DOC] upload-events-api (2026-06-30: 100 by default, configurable; Corrections 3), api-errors (522); [REC] clevertap-ruby cassettes; control characters: tapline's own",
        );
        assert_eq!(
            pages,
            [
                "https://developer.clevertap.com/docs/upload-events-api",
                "https://developer.clevertap.com/docs/api-errors"
            ]
        );
        assert_eq!(others, ["[REC] clevertap-ruby cassettes"]);
        for rule in crate::clevertap::rules::RULES {
            let (pages, _) = super::documentation(rule.source);
            assert!(
                !pages.is_empty() || !rule.source.contains("[DOC]"),
                "{}",
                rule.name
            );
        }
    }
}
