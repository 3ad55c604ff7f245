//! The analyst's view of the lake, for the shell and the Flight SQL server:
//! a session with the credential inventory and every detector query as a
//! view, the tables it offers, and the one gate every statement passes
//! ([`sql`]): what a session may run besides queries.

use std::path::{Path, PathBuf};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::{DataFrame, SessionContext};

use crate::engine::{self, EngineError, EngineOptions};
use crate::inventory::{Inventory, InventoryErrors};

#[derive(Debug, thiserror::Error)]
pub enum AnalystError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Inventory(#[from] InventoryErrors),
}

/// How an analyst's session is set up (the shell and `serve`).
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// The memory bound and the cluster of the session.
    pub engine: EngineOptions,
    /// A credential inventory to register as `credentials`.
    pub inventory: Option<PathBuf>,
    /// Let SQL name files (CREATE EXTERNAL TABLE, COPY ... TO); see [`Permit::files`].
    pub allow_files: bool,
}

/// What a session runs besides queries. Never INSERT, UPDATE or DELETE: the
/// lake is written only by ingest and detect, through their commit protocol.
#[derive(Debug, Clone, Copy, Default)]
pub struct Permit {
    /// Statements that change only the session (CREATE VIEW, CREATE TABLE AS
    /// in memory, DROP, SET): the shell's own session, not a shared server's.
    pub session_changes: bool,
    /// Statements that read or write a file by path: CREATE EXTERNAL TABLE
    /// reads anything the process may read, COPY ... TO writes anywhere it may.
    pub files: bool,
}

/// The statement of `plan` that names files, if any (subqueries included).
fn file_statement(plan: &LogicalPlan) -> Result<Option<&'static str>, DataFusionError> {
    let mut found = None;
    plan.apply_with_subqueries(|p| {
        found = match p {
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => Some("CREATE EXTERNAL TABLE"),
            LogicalPlan::Copy(_) => Some("COPY"),
            _ => None,
        };
        Ok(if found.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    })?;
    Ok(found)
}

/// Plans `sql` and runs it if `permit` allows (DDL and SET take effect
/// here; a query's DataFrame is returned unexecuted). Checked on the plan,
/// before anything reads a file.
pub async fn sql(ctx: &SessionContext, sql: &str, permit: Permit) -> Result<DataFrame, DataFusionError> {
    let plan = ctx.state().create_logical_plan(sql).await?;
    match file_statement(&plan)? {
        Some(_) if permit.files => {}
        Some(what) => {
            return Err(DataFusionError::Plan(format!(
                "{what} reads or writes files by path, which this session does not allow; \
                 start it with --allow-files to permit it"
            )));
        }
        None => SQLOptions::new()
            .with_allow_dml(false)
            .with_allow_ddl(permit.session_changes)
            .with_allow_statements(permit.session_changes)
            .verify_plan(&plan)?,
    }
    ctx.execute_logical_plan(plan).await
}

/// The analyst's session: [`engine::context_with`], the inventory as `credentials`
/// when given, and every detector query as a view `detector_<name>` over the
/// whole lake. Returns notes on views that could not be made (e.g. no
/// inventory), for the shell to show rather than fail on.
pub async fn analyst_context(
    root: &Path,
    opts: &SessionOptions,
) -> Result<(SessionContext, Vec<String>), AnalystError> {
    let ctx = engine::context_with(root, &opts.engine).await?;
    if let Some(path) = &opts.inventory {
        Inventory::load(path)?.register(&ctx)?;
    }
    // Views that compare with a baseline use the newest one in the lake.
    let latest = crate::baseline::versions(root).await.pop().unwrap_or_default();
    let notes = register_detector_views(&ctx, &latest).await;
    Ok((ctx, notes))
}

/// A table or view a session can query.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    /// `TABLE`, `VIEW` or `LOCAL TEMPORARY` (as Flight SQL and JDBC name them).
    pub kind: &'static str,
    pub columns: arrow::datatypes::SchemaRef,
}

/// Every table and view of the session except DataFusion's `information_schema`, by name.
pub async fn list_tables(ctx: &SessionContext) -> Result<Vec<TableInfo>, EngineError> {
    use datafusion::datasource::TableType;
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else { continue };
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else { continue };
            for name in schema.table_names() {
                let Some(table) = schema.table(&name).await? else { continue };
                let kind = match table.table_type() {
                    TableType::Base => "TABLE",
                    TableType::View => "VIEW",
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                out.push(TableInfo {
                    catalog: catalog_name.clone(),
                    schema: schema_name.clone(),
                    name,
                    kind,
                    columns: table.schema(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.catalog, &a.schema, &a.name).cmp(&(&b.catalog, &b.schema, &b.name)));
    Ok(out)
}

/// Days that stand for "the whole lake" in a detector query's `{from}`/`{to}`.
const ALL_DAYS: (&str, &str) = ("0000-01-01", "9999-12-31");

/// Registers each built-in detector query as the view `detector_<name>`;
/// a query that cannot be planned here (it reads a table this session lacks)
/// is skipped with a note.
pub async fn register_detector_views(ctx: &SessionContext, baseline: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, query) in crate::detect::detector_queries() {
        let query = query.replace("{from}", ALL_DAYS.0).replace("{to}", ALL_DAYS.1).replace("{baseline}", baseline);
        let query = query.trim().trim_end_matches(';');
        let view = format!("detector_{name}");
        if let Err(e) = ctx.sql(&format!("CREATE VIEW {view} AS\n{query}")).await {
            let e = e.strip_backtrace();
            notes.push(if e.contains("credentials") && e.contains("not found") {
                format!("{view} is not available: it reads the credentials table, which --inventory FILE provides")
            } else {
                format!("{view} is not available: {e}")
            });
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn refusal(ctx: &SessionContext, q: &str, permit: Permit) -> String {
        match sql(ctx, q, permit).await {
            Ok(_) => String::new(),
            Err(e) => e.strip_backtrace(),
        }
    }

    #[tokio::test]
    async fn files_only_with_allow_files_and_the_lake_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("secret.csv");
        std::fs::write(&csv, "a\n1\n").unwrap();
        let out = dir.path().join("out.csv");
        let ctx = SessionContext::new();
        let shell = Permit { session_changes: true, files: false };
        let create = format!("CREATE EXTERNAL TABLE s STORED AS CSV LOCATION '{}'", csv.display());
        let copy = format!("COPY (SELECT 1 AS a) TO '{}' STORED AS CSV", out.display());
        for q in [&create, &copy] {
            let e = refusal(&ctx, q, shell).await;
            assert!(e.contains("--allow-files"), "{q}: {e}");
        }
        assert!(!out.exists());
        // Queries, views, tables in memory and SET still run.
        for q in [
            "SELECT 1",
            "CREATE VIEW v AS SELECT 1 AS a",
            "CREATE TABLE m AS SELECT 2 AS b",
            "SET datafusion.execution.batch_size = 1024",
        ] {
            assert_eq!(refusal(&ctx, q, shell).await, "", "{q}");
        }
        // Writes into any table stay refused, files or not.
        let e = refusal(&ctx, "INSERT INTO m VALUES (3)", Permit { session_changes: true, files: true }).await;
        assert!(e.contains("DML not supported"), "{e}");
        // A shared session takes queries only.
        let e = refusal(&ctx, "CREATE VIEW w AS SELECT 1", Permit::default()).await;
        assert!(e.contains("DDL not supported"), "{e}");

        let files = Permit { session_changes: false, files: true };
        sql(&ctx, &create, files).await.unwrap();
        let n = sql(&ctx, "SELECT count(*) FROM s", files).await.unwrap().collect().await.unwrap();
        assert_eq!(n[0].num_rows(), 1);
        sql(&ctx, &copy, files).await.unwrap().collect().await.unwrap();
        assert!(out.exists());
    }
}
