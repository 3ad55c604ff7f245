//! credtrail: per-credential behavioural baselines and explainable alerts over
//! audit logs of non-human credentials (API keys, agent tokens, cloud keys).
//!
//! Sources → transforms → sinks: [`ingest`] reads gateway, CloudTrail, Bedrock
//! and mapped logs, [`secrets`] redacts credential secrets on the way, and
//! [`lake`] commits Parquet files atomically into a hive-partitioned lake that
//! [`sql`] exposes to DataFusion. [`baseline`] learns what is normal for each
//! credential, [`detect`] scores days against it into [`alert`]s, and
//! [`eval`] measures detection against labelled anomalies. [`stream`] does
//! the same live: it follows logs, alerts within a second and feeds the lake.

pub mod alert;
pub mod baseline;
pub mod columns;
pub mod detect;
pub mod eval;
pub mod flight;
pub mod ingest;
pub mod inventory;
pub mod lake;
pub mod net;
pub mod sample;
pub mod schema;
pub mod secrets;
pub mod shell;
pub mod sql;
pub mod stream;
pub mod suppress;
pub mod time;
