//! The `credtrail` binary: parses arguments, sets up logging and the one
//! tokio runtime, and hands the command to [`cli::dispatch`].

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

// Why: see the dependency's comment in Cargo.toml (page faults on the live day's buffers).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A watcher's progress is worth seeing by default; other commands keep stderr quiet.
    let watching = matches!(cli.command, Command::Watch(_));
    init_tracing(cli.verbose + u8::from(watching));
    // Deep plans (a detector's SQL) are encoded, decoded and planned by
    // recursion; a cluster scheduler overflowed 2 MiB worker stacks on them,
    // so threads get 32 MiB of address space, as Ballista's own binary gives.
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 << 20)
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(cli::dispatch(cli.command)));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: a log file or pipe gets plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .init();
}
