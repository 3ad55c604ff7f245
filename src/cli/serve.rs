//! `credtrail serve`: the lake over Arrow Flight SQL.

use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::flight;

use super::{SessionArgs, shutdown_signal};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:32010")]
    listen: String,
    /// Allow listening on a non-loopback address (there is no authentication: anyone who reaches it can query).
    #[arg(long)]
    allow_remote: bool,
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let opts = flight::ServeOptions {
        lake: a.session.lake.lake.clone(),
        session: a.session.options(),
        listen: a.listen,
        allow_remote: a.allow_remote,
    };
    let ready = |addr| {
        // The first line of stdout, so a script that asked for port 0 learns the port.
        println!("credtrail serve: Flight SQL on grpc://{addr} (lake {})", opts.lake.display());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    flight::serve(&opts, ready, shutdown_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}
