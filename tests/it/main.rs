//! The one integration-test binary: golden vignettes through the core and through the real
//! server, the gRPC surface (streaming, health, reflection, errors), the client binary, and the
//! tidy checks on the source tree.

mod audit;
mod cds_hooks;
mod cli;
mod codex;
mod contract;
mod core_rules;
mod fhir_chart;
mod fuzz;
mod hardening;
mod plan_coverage;
mod properties;
mod service;
mod support;
mod tidy;
mod vignettes;
