//! `credtrail inventory check`: governance findings of an inventory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use credtrail::{inventory, report, time};

#[derive(Subcommand)]
pub enum InventoryCmd {
    /// Validate an inventory and report ownerless, expired, long-lived and never-used credentials.
    Check {
        /// The inventory file (CSV or TOML).
        inventory: PathBuf,
        /// A lake to compare usage against (enables never-used, unknown, expired-but-used, and the
        /// inventory mismatches detect found there).
        #[arg(long)]
        lake: Option<PathBuf>,
        #[command(flatten)]
        check: CheckArgs,
        /// Print findings as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct CheckArgs {
    /// Credentials older than this many days are long-lived.
    #[arg(long, default_value_t = 90)]
    max_age_days: u32,
    /// Warn about credentials expiring within this many days.
    #[arg(long, default_value_t = 14)]
    expiring_within_days: u32,
    /// Evaluate as of this date (YYYY-MM-DD or RFC 3339) instead of now.
    #[arg(long)]
    now: Option<String>,
}

pub async fn run(cmd: InventoryCmd) -> Result<ExitCode> {
    let InventoryCmd::Check { inventory, lake, check, json } = cmd;
    let findings = check_inventory(&inventory, lake.as_deref(), &check).await?;
    if json {
        for f in &findings {
            println!("{}", serde_json::to_string(f)?);
        }
    } else if findings.is_empty() {
        println!("{}: no findings", inventory.display());
    } else {
        println!("{}", report::findings_table(&findings));
    }
    Ok(ExitCode::SUCCESS)
}

async fn check_inventory(path: &Path, lake: Option<&Path>, a: &CheckArgs) -> Result<Vec<inventory::Finding>> {
    let inv = inventory::Inventory::load(path)?;
    let now_ms = match &a.now {
        Some(s) => time::parse_date_or_ts(s).with_context(|| format!("--now {s:?} is not a date"))?,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let usage = match lake {
        Some(l) => Some(credtrail::inventory::credential_usage(l, &Default::default()).await?),
        None => None,
    };
    let opts =
        inventory::CheckOptions { now_ms, max_age_days: a.max_age_days, expiring_within_days: a.expiring_within_days };
    let mut findings = inventory::check(&inv, usage.as_ref(), &opts);
    if let Some(l) = lake {
        for mut f in credtrail::detect::inventory_mismatches(l).await? {
            f.owner = inv.get(&f.credential_id).and_then(|c| c.owner.clone());
            findings.push(f);
        }
    }
    Ok(findings)
}
