//! credtrail: per-credential behavioural baselines and explainable alerts over
//! audit logs of non-human credentials (API keys, agent tokens, cloud keys).
//!
//! Sources → transforms → sinks: [`ingest`] reads gateway, CloudTrail, Bedrock
//! and mapped logs, [`secrets`] redacts credential secrets on the way, and
//! [`lake`] commits Parquet files atomically into a hive-partitioned lake that
//! [`engine`] exposes to DataFusion (its tables, functions and sessions).
//! [`baseline`] learns what is normal for each credential, [`detect`] scores
//! days against it into [`alert`]s, and [`eval`] measures detection against
//! labelled anomalies. [`stream`] does the same live: it follows logs, alerts
//! within a second and feeds the lake. [`analyst`] gives people the lake with
//! the inventory and the detectors as views, through the [`shell`] and the
//! [`flight`] SQL server.
//!
//! Layers import only downwards:
//! `lake → engine → baseline → detect → {stream, analyst} → {shell, flight, cli}`,
//! with small leaf modules (`time`, `schema`, `columns`, `secrets`, `alert`,
//! `suppress`, `inventory`, `store`) used from above them.
//! [`report`] renders what people read of all of it; [`html`] writes the
//! self-contained HTML report of a lake's incidents, with charts.

pub mod alert;
pub mod analyst;
pub mod baseline;
pub mod columns;
pub mod detect;
pub mod engine;
pub mod eval;
pub mod flight;
pub mod html;
pub mod ingest;
pub mod inventory;
pub mod lake;
pub mod net;
pub mod pattern;
pub mod report;
pub mod sample;
pub mod schema;
pub mod secrets;
pub mod shell;
pub mod store;
pub mod stream;
pub mod suppress;
pub mod time;
