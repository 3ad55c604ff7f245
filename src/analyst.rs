//! The analyst's view of the lake, for the shell and the Flight SQL server:
//! a session with the credential inventory and every detector query as a
//! view, and the tables it offers.

use std::path::{Path, PathBuf};

use datafusion::prelude::SessionContext;

use crate::engine::{self, EngineError};
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
    /// Bytes DataFusion may hold at once; spilling operators spill, others fail cleanly past it.
    pub memory_limit: Option<usize>,
    /// A credential inventory to register as `credentials`.
    pub inventory: Option<PathBuf>,
}

/// The analyst's session: [`engine::context_with`], the inventory as `credentials`
/// when given, and every detector query as a view `detector_<name>` over the
/// whole lake. Returns notes on views that could not be made (e.g. no
/// inventory), for the shell to show rather than fail on.
pub async fn analyst_context(
    root: &Path,
    opts: &SessionOptions,
) -> Result<(SessionContext, Vec<String>), AnalystError> {
    let ctx = engine::context_with(root, opts.memory_limit).await?;
    if let Some(path) = &opts.inventory {
        Inventory::load(path)?.register(&ctx)?;
    }
    // Views that compare with a baseline use the newest one in the lake.
    let latest = crate::baseline::versions(root).pop().unwrap_or_default();
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
        let query = crate::engine::expand_fragments(&query)
            .replace("{from}", ALL_DAYS.0)
            .replace("{to}", ALL_DAYS.1)
            .replace("{baseline}", baseline);
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
