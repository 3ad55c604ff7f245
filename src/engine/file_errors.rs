//! Errors reading a file name the file. DataFusion's Parquet decoder reports
//! a page that fails its CRC (or does not decode at all) without saying which
//! file it was in. Every in-process session runs [`NameFiles`] as its last
//! physical optimizer rule: it wraps the source of each file scan so that
//! DataFusion's unit of file reading, the morsel (a file planned, then its
//! batches streamed), adds the file's location to its errors and says what
//! to do. Errors from the object store already name the location (the
//! verifying store's among them) and pass as they are. Sessions planned on a
//! cluster keep DataFusion's own messages: the executors plan their scans.

use std::fmt;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileOpener, FileScanConfig, FileSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::object_store::ObjectStore;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::{PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_expr_common::sort_expr::LexOrdering;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter_pushdown::FilterPushdownPropagation;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use datafusion::physical_plan::projection::ProjectionExprs;
use datafusion::physical_plan::sort_pushdown::SortOrderPushdownResult;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan};
use datafusion_datasource::morsel::{Morsel, MorselPlan, MorselPlanner, Morselizer};
use futures::StreamExt;
use futures::stream::BoxStream;

/// The physical optimizer rule that makes every file scan name its files in errors.
#[derive(Debug, Default)]
pub struct NameFiles;

impl PhysicalOptimizerRule for NameFiles {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(exec) = node.downcast_ref::<DataSourceExec>() else { return Ok(Transformed::no(node)) };
            let Some(scan) = exec.data_source().downcast_ref::<FileScanConfig>() else {
                return Ok(Transformed::no(node));
            };
            if scan.file_source.downcast_ref::<Named>().is_some() {
                return Ok(Transformed::no(node));
            }
            let mut scan = scan.clone();
            scan.file_source = Named::wrap(Arc::clone(&scan.file_source));
            Ok(Transformed::yes(Arc::new(exec.clone().with_data_source(Arc::new(scan))) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "name_files_in_errors"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `e`, which arose reading `file`, with the file named unless a cause already names it.
fn named(e: DataFusionError, file: &str) -> DataFusionError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if c.downcast_ref::<datafusion::object_store::Error>().is_some() {
            return e;
        }
        cause = c.source();
    }
    e.context(format!(
        "{file}: this file does not read back; if it is in a lake, run `credtrail lake check` to list the lake's \
         damaged files, then restore them or re-ingest their sources"
    ))
}

/// How a file of a scan over `url` is named in messages: its path, or its URL.
fn file_name(url: &ObjectStoreUrl, file: &PartitionedFile) -> String {
    let location = file.object_meta.location.as_ref();
    match url.as_str() {
        "file:///" => format!("/{location}"),
        base => format!("{base}{location}"),
    }
}

/// A file source whose morsels name their file in errors; the rest is the inner source's.
struct Named {
    inner: Arc<dyn FileSource>,
}

impl Named {
    fn wrap(inner: Arc<dyn FileSource>) -> Arc<dyn FileSource> {
        Arc::new(Named { inner })
    }
}

impl FileSource for Named {
    fn create_file_opener(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Arc<dyn FileOpener>> {
        self.inner.create_file_opener(object_store, base_config, partition)
    }

    fn create_morselizer(
        &self,
        object_store: Arc<dyn ObjectStore>,
        base_config: &FileScanConfig,
        partition: usize,
    ) -> Result<Box<dyn Morselizer>> {
        let inner = self.inner.create_morselizer(object_store, base_config, partition)?;
        Ok(Box::new(NamedMorselizer { inner, url: base_config.object_store_url.clone() }))
    }

    fn table_schema(&self) -> &TableSchema {
        self.inner.table_schema()
    }

    fn with_batch_size(&self, batch_size: usize) -> Arc<dyn FileSource> {
        Named::wrap(self.inner.with_batch_size(batch_size))
    }

    fn filter(&self) -> Option<Arc<dyn PhysicalExpr>> {
        self.inner.filter()
    }

    fn projection(&self) -> Option<&ProjectionExprs> {
        self.inner.projection()
    }

    fn metrics(&self) -> &ExecutionPlanMetricsSet {
        self.inner.metrics()
    }

    fn file_type(&self) -> &str {
        self.inner.file_type()
    }

    fn fmt_extra(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.fmt_extra(t, f)
    }

    fn supports_repartitioning(&self) -> bool {
        self.inner.supports_repartitioning()
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        repartition_file_min_size: usize,
        output_ordering: Option<LexOrdering>,
        config: &FileScanConfig,
    ) -> Result<Option<FileScanConfig>> {
        self.inner.repartitioned(target_partitions, repartition_file_min_size, output_ordering, config)
    }

    fn try_pushdown_filters(
        &self,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn FileSource>>> {
        let mut p = self.inner.try_pushdown_filters(filters, config)?;
        p.updated_node = p.updated_node.map(Named::wrap);
        Ok(p)
    }

    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
        eq_properties: &EquivalenceProperties,
    ) -> Result<SortOrderPushdownResult<Arc<dyn FileSource>>> {
        Ok(self.inner.try_pushdown_sort(order, eq_properties)?.map(Named::wrap))
    }

    fn reorder_files(&self, files: Vec<PartitionedFile>) -> Vec<PartitionedFile> {
        self.inner.reorder_files(files)
    }

    fn try_pushdown_projection(&self, projection: &ProjectionExprs) -> Result<Option<Arc<dyn FileSource>>> {
        Ok(self.inner.try_pushdown_projection(projection)?.map(Named::wrap))
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.inner.apply_expressions(f)
    }
}

#[derive(Debug)]
struct NamedMorselizer {
    inner: Box<dyn Morselizer>,
    url: ObjectStoreUrl,
}

impl Morselizer for NamedMorselizer {
    fn plan_file(&self, file: PartitionedFile) -> Result<Box<dyn MorselPlanner>> {
        let name: Arc<str> = file_name(&self.url, &file).into();
        match self.inner.plan_file(file) {
            Ok(inner) => Ok(Box::new(NamedPlanner { inner, name })),
            Err(e) => Err(named(e, &name)),
        }
    }
}

/// Plans one file's morsels; every planner and morsel it yields is named too.
#[derive(Debug)]
struct NamedPlanner {
    inner: Box<dyn MorselPlanner>,
    name: Arc<str>,
}

impl NamedPlanner {
    fn wrap(inner: Box<dyn MorselPlanner>, name: &Arc<str>) -> Box<dyn MorselPlanner> {
        Box::new(NamedPlanner { inner, name: Arc::clone(name) })
    }
}

impl MorselPlanner for NamedPlanner {
    fn plan(self: Box<Self>) -> Result<Option<MorselPlan>> {
        let name = self.name;
        let Some(mut plan) = self.inner.plan().map_err(|e| named(e, &name))? else { return Ok(None) };
        let morsels: Vec<Box<dyn Morsel>> = plan
            .take_morsels()
            .into_iter()
            .map(|inner| Box::new(NamedMorsel { inner, name: Arc::clone(&name) }) as Box<dyn Morsel>)
            .collect();
        let planners = plan.take_ready_planners().into_iter().map(|p| NamedPlanner::wrap(p, &name)).collect();
        let mut out = MorselPlan::new().with_morsels(morsels).with_planners(planners);
        if let Some(pending) = plan.take_pending_planner() {
            out.set_pending_planner(async move {
                match pending.await {
                    Ok(p) => Ok(NamedPlanner::wrap(p, &name)),
                    Err(e) => Err(named(e, &name)),
                }
            });
        }
        Ok(Some(out))
    }
}

#[derive(Debug)]
struct NamedMorsel {
    inner: Box<dyn Morsel>,
    name: Arc<str>,
}

impl Morsel for NamedMorsel {
    fn into_stream(self: Box<Self>) -> BoxStream<'static, Result<datafusion::arrow::array::RecordBatch>> {
        let name = self.name;
        self.inner.into_stream().map(move |r| r.map_err(|e| named(e, &name))).boxed()
    }
}

impl fmt::Debug for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Named").field("file_type", &self.inner.file_type()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::errors::ParquetError;

    #[test]
    fn decode_errors_are_named_and_store_errors_pass_as_they_are() {
        let file = "/lake/events/date=2026-11-02/part-1.parquet";
        let crc = DataFusionError::ParquetError(Box::new(ParquetError::General("Page CRC checksum mismatch".into())));
        let msg = named(crc, file).to_string();
        assert!(msg.starts_with(&format!("{file}: ")), "{msg}");
        assert!(msg.contains("credtrail lake check") && msg.contains("Page CRC checksum mismatch"), "{msg}");

        // The verifying store's error reaches the decoder as an external cause; it names the file itself.
        let store =
            datafusion::object_store::Error::Generic { store: "lake", source: format!("{file}: damaged").into() };
        let damaged = DataFusionError::ParquetError(Box::new(ParquetError::External(Box::new(store))));
        let msg = named(damaged, file).to_string();
        assert_eq!(msg.matches(file).count(), 1, "{msg}");
    }
}
