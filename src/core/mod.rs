//! The guideline core: plain Rust that turns a validated case into a radiotherapy plan
//! ([`recommend`]) and checks a proposed prescription ([`check`]), exactly as the clinical
//! specification says. No wire types, no serde, no async runtime, no I/O and no clock live here:
//! the evaluation date is an input, and the guideline's numbers and texts come in as a [`Profile`].

pub mod case;
pub mod check;
pub mod date;
pub mod ids;
pub mod plan;
pub mod profile;
pub mod radiobiology;
pub mod rules;
pub mod violation;

pub use case::{Case, RawCase, RawEnum};
pub use check::{Proposal, RawProposal, check};
pub use plan::{Plan, Report};
pub use profile::{Profile, ProfileError, ProfileSpec};
pub use rules::recommend;
pub use violation::{Violation, Violations};
