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
