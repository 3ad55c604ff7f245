//! `credtrail cluster scheduler|executor`: the processes of a Ballista
//! cluster that knows credtrail's SQL; and `--cluster`, which sends a
//! command's queries to one.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use credtrail::engine::cluster::{self, Cluster};

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Run a Ballista scheduler that plans credtrail's SQL, until SIGTERM or Ctrl-C.
    ///
    /// Clients connect with `--cluster df://HOST:PORT`; executors with `--scheduler HOST:PORT`.
    /// It lists the lake's files as the client names the lake: give it the
    /// same path, or for an s3:// lake the same AWS environment (AWS_REGION,
    /// AWS_ENDPOINT_URL, credentials).
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor for a scheduler, until SIGTERM or Ctrl-C.
    ///
    /// It reads the lake's files as the client names the lake, so every
    /// executor must see a local lake at the same path as the client, or
    /// reach an s3:// lake with its own AWS environment (AWS_REGION,
    /// AWS_ENDPOINT_URL, credentials).
    Executor(ExecutorArgs),
}

#[derive(Args)]
pub struct SchedulerArgs {
    /// The address (HOST:PORT) to listen on for clients and executors.
    #[arg(long, default_value = "127.0.0.1:50050", value_parser = cluster::resolve)]
    bind: std::net::SocketAddr,
    /// An executor silent this long (e.g. 30s, 3m) is dead; its tasks are run again elsewhere.
    #[arg(long, default_value = "180s", value_parser = super::parse_interval)]
    executor_timeout: Duration,
}

#[derive(Args)]
pub struct ExecutorArgs {
    /// The scheduler (HOST:PORT) to register with.
    #[arg(long, value_parser = parse_host_port)]
    scheduler: (String, u16),
    /// The address (HOST:PORT) to serve results on (Arrow Flight); others must reach it at this host.
    #[arg(long, default_value = "127.0.0.1:50051", value_parser = cluster::resolve)]
    bind: std::net::SocketAddr,
    /// The port, on the --bind host, the scheduler sends tasks to.
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Tasks run at once; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    concurrent_tasks: usize,
    /// How often to tell the scheduler this executor is alive; keep it well under its --executor-timeout.
    #[arg(long, default_value = "60s", value_parser = super::parse_interval)]
    heartbeat: Duration,
    /// Where shuffle files go [default: a temporary directory].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<String>,
}

/// `--cluster`, for the commands whose queries can run on a cluster.
#[derive(Args)]
pub struct ClusterArg {
    /// Run queries on a Ballista cluster: df://HOST:PORT of a `credtrail cluster scheduler`, or `standalone` for one inside this process.
    #[arg(long, value_name = "df://HOST:PORT", value_parser = Cluster::parse)]
    pub cluster: Option<Cluster>,
}

fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    let port = port.parse().map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
    if host.is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    Ok((host.to_string(), port))
}

pub async fn run(cmd: ClusterCmd) -> Result<ExitCode> {
    match cmd {
        ClusterCmd::Scheduler(a) => {
            let opts = cluster::SchedulerOptions { bind: a.bind, executor_timeout: a.executor_timeout };
            eprintln!("scheduler listening on {}; clients use --cluster df://{}", a.bind, a.bind);
            cluster::run_scheduler(opts, super::shutdown_signal()?).await?;
        }
        ClusterCmd::Executor(a) => {
            let opts = cluster::ExecutorOptions {
                scheduler: a.scheduler,
                bind: a.bind,
                grpc_port: a.grpc_port,
                concurrent_tasks: if a.concurrent_tasks == 0 {
                    std::thread::available_parallelism().map_or(1, |n| n.get())
                } else {
                    a.concurrent_tasks
                },
                heartbeat: a.heartbeat,
                work_dir: a.work_dir,
            };
            cluster::run_executor(opts).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
