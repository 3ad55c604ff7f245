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

/// mimalloc's `mi_option_purge_delay`: how long freed memory is held before
/// it goes back to the kernel. The crate names no constant for it; this is
/// its place in the C enum (a test checks it is the option with a 1 s default).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// What a query command holds freed memory for, in ms (mimalloc v2's default).
const QUERY_PURGE_DELAY_MS: std::ffi::c_long = 10;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A watcher's progress is worth seeing by default; other commands keep stderr quiet.
    let watching = matches!(cli.command, Command::Watch(_));
    init_tracing(cli.verbose + u8::from(watching));
    // `watch` and `ingest` free and reuse same-size buffers all the time:
    // mimalloc's 1 s hold keeps them (at 10 ms a watcher fell back to glibc's
    // throughput, and ingest lost 7%). The other commands go from query to
    // query on fresh buffers: holding each 1 s took a 28-day baseline from
    // 390 to 730 MiB peak, for about 7% of its time.
    if !matches!(cli.command, Command::Watch(_) | Command::Ingest(_)) {
        // SAFETY: sets one integer option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, QUERY_PURGE_DELAY_MS) };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_index_is_the_option_with_a_one_second_default() {
        // SAFETY: reads one option.
        assert_eq!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) }, 1000);
        // Its neighbours hold other defaults: a shifted enum would not read 1000 here.
        assert_ne!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY - 1) }, 1000);
        assert_ne!(unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY + 1) }, 1000);
    }
}
