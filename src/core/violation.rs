//! Field-level violations: what validation reports instead of a partial result.

/// One problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The request's snake_case field path, e.g. `case.tumor.size_cm` or `phases[0].kind`.
    pub field: String,
    /// What is wrong, in words a caller can act on.
    pub description: String,
}

/// Every violation of a request, in field order. Never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<Violation>);

impl Violations {
    /// Records a violation.
    pub fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Appends every violation of `other`, keeping order.
    pub fn extend(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// No violation recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of violations.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The violations in field order.
    pub fn iter(&self) -> std::slice::Iter<'_, Violation> {
        self.0.iter()
    }
}

impl std::fmt::Display for Violations {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (index, violation) in self.0.iter().enumerate() {
            if index > 0 {
                formatter.write_str("; ")?;
            }
            write!(formatter, "{}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

/// The first character of a caller's free text that could change how a terminal or a log shows
/// it to someone else: a control character (escape sequences, newlines, carriage returns,
/// backspaces) or a bidirectional-text override or isolate (U+202A-U+202E, U+2066-U+2069).
pub fn unsafe_char(text: &str) -> Option<char> {
    text.chars()
        .find(|c| c.is_control() || matches!(*c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

/// What is wrong with a caller's free text for a field that others will read: too long (more than
/// `max_chars` characters) or holding a character that could forge what they see.
pub fn free_text_problem(text: &str, max_chars: usize) -> Option<String> {
    if text.chars().count() > max_chars {
        return Some(format!("must be at most {max_chars} characters"));
    }
    unsafe_char(text).map(|c| {
        format!(
            "must not contain control or bidirectional-formatting characters (found U+{:04X})",
            u32::from(c)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_refuses_what_could_forge_a_screen() {
        assert_eq!(free_text_problem("surgery first, see MDT 12/3", 100), None);
        assert_eq!(free_text_problem("Dünndarm Ödem", 100), None);
        for forged in [
            "ok\u{1b}[2J",
            "line\nPASS",
            "a\rb",
            "tab\there",
            "\u{202E}SSAP",
            "\u{2066}x",
            "\u{7f}",
        ] {
            let problem = free_text_problem(forged, 100).expect(forged);
            assert!(problem.contains("U+"), "{problem}");
        }
        assert_eq!(
            free_text_problem(&"x".repeat(11), 10).as_deref(),
            Some("must be at most 10 characters")
        );
    }
}
