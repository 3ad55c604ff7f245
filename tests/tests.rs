//! The integration tests, as one test binary (one link of DataFusion and
//! tonic instead of one per file). Each module drives the real `credtrail`
//! binary or the library end to end; `common` holds their shared helpers.
//! Run one area with `cargo test --locked --test integration detect::`.

mod common;

mod cli;
mod cloudtrail;
mod cluster;
mod detect;
mod eval;
mod fuzz;
mod ingest;
mod report;
mod run_snapshot;
mod s3;
mod s3_source;
mod sql;
mod watch;
