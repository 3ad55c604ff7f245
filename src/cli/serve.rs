//! `credtrail serve`: the lake over Arrow Flight SQL.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use credtrail::flight;

use super::{SessionArgs, parse_interval, shutdown_signal};

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Address to listen on; port 0 picks a free one (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:32010")]
    listen: String,
    /// Allow listening on a non-loopback address; needs tokens (--tokens-file or $CREDTRAIL_SERVE_TOKEN) and
    /// --tls-cert/--tls-key (or --insecure).
    #[arg(long)]
    allow_remote: bool,
    /// Bearer tokens clients must present, one per line (at least 16 characters; `#` comments allowed), read
    /// once at start and never logged; $CREDTRAIL_SERVE_TOKEN adds one. With any token every call needs one:
    /// `authorization: Bearer TOKEN`, or basic auth with any user and the token as password (the handshake
    /// then answers with the bearer, as ADBC and JDBC drivers expect).
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key, clients connect with grpc+tls://.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With --allow-remote, serve without TLS (e.g. behind a proxy that terminates it): tokens and results cross
    /// the network in clear.
    #[arg(long, requires = "allow_remote")]
    insecure: bool,
    /// Longest a query may run before it is stopped (the client gets DEADLINE_EXCEEDED); a client's shorter
    /// deadline wins. E.g. 30s, 5m.
    #[arg(long, default_value = "5m", value_parser = parse_interval)]
    query_timeout: Duration,
    /// Most queries that may run at once; one more is refused with RESOURCE_EXHAUSTED (each query takes cores and
    /// memory, so this bounds what clients can make the host do).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_queries: u16,
}

pub async fn run(a: ServeArgs) -> Result<ExitCode> {
    let tokens = flight::Tokens::load(a.tokens_file.as_deref(), std::env::var(flight::TOKEN_ENV).ok().as_deref())?;
    let tls = match (a.tls_cert, a.tls_key) {
        (Some(cert), Some(key)) => Some(flight::TlsFiles { cert, key }),
        _ => None,
    };
    let opts = flight::ServeOptions {
        lake: a.session.lake.lake.clone(),
        session: a.session.options(),
        listen: a.listen,
        allow_remote: a.allow_remote,
        tokens,
        tls,
        insecure: a.insecure,
        query_timeout: a.query_timeout,
        max_queries: usize::from(a.max_queries),
    };
    flight::check_exposure(&opts)?;
    if opts.insecure {
        eprintln!("warning: --insecure: serving without TLS, so tokens and query results cross the network in clear");
    }
    let scheme = if opts.tls.is_some() { "grpc+tls" } else { "grpc" };
    let ready = |addr| {
        // The first line of stdout, so a script that asked for port 0 learns the port.
        println!("credtrail serve: Flight SQL on {scheme}://{addr} (lake {})", opts.lake.display());
        let _ = std::io::Write::flush(&mut std::io::stdout());
    };
    flight::serve(&opts, ready, shutdown_signal()?).await?;
    Ok(ExitCode::SUCCESS)
}
