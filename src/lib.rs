//! vlms-rt: radiation-therapy recommendations for venous leiomyosarcoma, served over gRPC.
//!
//! [`core`] holds the guideline logic (pure), [`guideline`] loads the versioned profile, [`pb`] the
//! generated contract, [`convert`] maps between the two, [`server`] implements the service,
//! [`status`] maps every error it answers with to a gRPC status, and [`startup`] binds and serves
//! it.

pub mod accept;
pub mod audit;
pub mod auth;
pub mod cds;
pub mod client;
pub mod client_deadline;
pub mod codec;
pub mod config;
pub mod convert;
pub mod core;
pub mod deadline;
pub mod framing;
pub mod guideline;
pub mod health_gate;
pub mod metrics;
pub mod never_internal;
pub mod pb;
pub mod server;
pub mod startup;
pub mod status;
pub mod telemetry;
pub mod tls;
pub mod ulid;
pub mod wire;
