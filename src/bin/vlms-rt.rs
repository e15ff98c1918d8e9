//! `vlms-rt`: the command-line client of vlms-rt-server, for clinicians and scripts.
//!
//! Exit codes: 0 success; 1 the server answered with an error other than bad input; 2 usage or
//! local input error (unreadable file, invalid JSON); 3 the server rejected the input
//! (INVALID_ARGUMENT, every field violation printed); 4 the server could not be reached; 5 `check
//! --fail-on` and the verdict reached it.

use std::process::ExitCode;

use clap::Parser;
use vlms_rt::client::{Cli, run};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(failure) => {
            eprint!("{}", failure.render());
            failure.exit_code()
        }
    }
}
