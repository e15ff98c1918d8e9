//! Typed settings of the server binary: command-line flags with environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::telemetry::LogFormat;

/// `vlms-rt-server`: radiotherapy recommendations for venous leiomyosarcoma over gRPC.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "vlms-rt-server", version, about)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "VLMS_RT_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// Guideline profile (TOML) to use instead of the embedded one.
    #[arg(long, env = "VLMS_RT_GUIDELINE")]
    pub guideline: Option<PathBuf>,

    /// Log line format.
    #[arg(long, value_enum, env = "VLMS_RT_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}
