//! `credtrail sql`: the SQL shell and scripts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use credtrail::shell;

use super::{SessionArgs, interrupt_signal};

#[derive(Args)]
pub struct SqlArgs {
    #[command(flatten)]
    session: SessionArgs,
    /// Statements to run (`;`-separated), then exit; stops at the first error.
    #[arg(short = 'c', long = "command", conflicts_with = "file")]
    command: Option<String>,
    /// A file of `;`-separated statements to run, then exit; stops at the first error.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Output format [default: table on a terminal, csv otherwise].
    #[arg(long, value_enum)]
    format: Option<shell::Format>,
    /// The file --format parquet writes (atomically: a temporary file renamed into place).
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Replace `{NAME}` in statements with VALUE (quotes doubled; write '{NAME}'). Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

/// The shell reads lines and blocks on each query: it runs on the blocking
/// pool, off the runtime's workers, and its queries run on the same runtime.
pub async fn run(a: SqlArgs) -> Result<ExitCode> {
    let opts = shell::ShellOptions {
        lake: a.session.lake.lake.clone(),
        session: a.session.options(),
        format: a.format.unwrap_or_else(shell::Format::for_stdout),
        output: a.output,
        params: a.params,
        interrupt: Some(Box::new(interrupt)),
    };
    let input = shell::Input::choose(a.command, a.file);
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut sh = shell::Shell::open(opts)?;
        sh.run(input, &mut std::io::stdout().lock())?;
        Ok(())
    })
    .await??;
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C as the shell's statement interrupt; if its handler cannot be
/// installed, statements run uninterrupted (Ctrl-C then ends the process).
fn interrupt() -> shell::Interruption {
    match interrupt_signal() {
        Ok(signal) => Box::pin(signal),
        Err(e) => {
            tracing::warn!("Ctrl-C will end the shell, not cancel a statement: {e}");
            Box::pin(std::future::pending())
        }
    }
}
