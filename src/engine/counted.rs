//! Tables whose statistics are counted once, when their rows are set.
//! DataFusion's `MemTable` recounts its rows' sizes and nulls whenever the
//! planner asks, and the planner asks per scan, partition and rule: `watch`
//! plans its detectors over a live day of up to a million rows, and that
//! recount was a fifth of its time (benches/RESULTS.md). [`CountedTable`]
//! answers with the same figures, counted when the table is made.
//!
//! The figures are inexact: `watch` swaps other rows under the plans made
//! from them, so they may choose a plan (join sides) but never answer a
//! query (a `count(*)` read from the statistics).

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::stats::Precision;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{ColumnStatistics, Statistics};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::statistics::StatisticsArgs;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};

/// A table of one partition with the statistics of the rows it held when made.
#[derive(Debug)]
pub struct CountedTable {
    rows: Arc<dyn TableProvider>,
    num_rows: usize,
    /// Per column of the schema: bytes in memory and nulls, over all rows.
    columns: Vec<(usize, usize)>,
}

impl CountedTable {
    /// `table`, which holds `batches`, with their statistics.
    pub fn over(table: Arc<dyn TableProvider>, batches: &[RecordBatch]) -> CountedTable {
        let mut columns = vec![(0, 0); table.schema().fields().len()];
        for b in batches {
            for (c, a) in columns.iter_mut().zip(b.columns()) {
                c.0 += a.get_array_memory_size();
                c.1 += a.logical_nulls().map_or(0, |n| n.null_count());
            }
        }
        let num_rows = batches.iter().map(RecordBatch::num_rows).sum();
        CountedTable { rows: table, num_rows, columns }
    }

    /// What `MemTable`'s scan reports for these columns (all, without a
    /// projection), inexact (see the module doc).
    fn statistics(&self, projection: Option<&Vec<usize>>) -> Statistics {
        let all: Vec<usize> = (0..self.columns.len()).collect();
        let projection = projection.unwrap_or(&all);
        let column = |&i: &usize| {
            let mut s = ColumnStatistics::new_unknown();
            s.null_count = Precision::Inexact(self.columns[i].1);
            s
        };
        Statistics {
            num_rows: Precision::Inexact(self.num_rows),
            total_byte_size: Precision::Inexact(projection.iter().map(|&i| self.columns[i].0).sum()),
            column_statistics: projection.iter().map(column).collect(),
        }
    }
}

#[async_trait]
impl TableProvider for CountedTable {
    fn schema(&self) -> SchemaRef {
        self.rows.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let inner = self.rows.scan(state, projection, filters, limit).await?;
        // A limited scan's figures are the limit's: DataFusion's own say so.
        if limit.is_some() {
            return Ok(inner);
        }
        Ok(Arc::new(CountedExec { inner, statistics: Arc::new(self.statistics(projection)) }))
    }
}

/// The scan of a [`CountedTable`]: its rows as the table reads them, its
/// statistics as counted. A leaf, like the scan it wraps.
#[derive(Debug)]
struct CountedExec {
    inner: Arc<dyn ExecutionPlan>,
    statistics: Arc<Statistics>,
}

impl CountedExec {
    /// The whole table's figures, or its one partition's (the same).
    fn partition(&self, partition: Option<usize>) -> Arc<Statistics> {
        match partition {
            None | Some(0) => Arc::clone(&self.statistics),
            Some(_) => Arc::new(Statistics::new_unknown(&self.schema())),
        }
    }
}

impl DisplayAs for CountedExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CountedExec: ")?;
        self.inner.fmt_as(t, f)
    }
}

impl ExecutionPlan for CountedExec {
    fn name(&self) -> &str {
        "CountedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.inner.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        self.inner.execute(partition, context)
    }

    fn partition_statistics(&self, partition: Option<usize>) -> Result<Arc<Statistics>> {
        Ok(self.partition(partition))
    }

    fn statistics_from_inputs(&self, _inputs: &[Arc<Statistics>], args: &StatisticsArgs) -> Result<Arc<Statistics>> {
        Ok(self.partition(args.partition()))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{DictionaryArray, Int64Array};
    use arrow::datatypes::{DataType, Field, Int32Type, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::statistics::StatisticsContext;
    use datafusion::prelude::SessionContext;

    use super::*;

    /// The counted figures are those `MemTable` computes (inexact), projected
    /// or not, and the rows read are the table's.
    #[tokio::test]
    async fn counted_statistics_are_memtables_own() {
        let ids: DictionaryArray<Int32Type> = [Some("a"), None, Some("b"), Some("a")].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", ids.data_type().clone(), true),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch = |n: Vec<Option<i64>>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids.clone()), Arc::new(Int64Array::from(n))]).unwrap()
        };
        let batches = vec![batch(vec![Some(1), None, None, Some(4)]), batch(vec![Some(5), Some(6), None, Some(8)])];
        let ctx = SessionContext::new();
        let state = ctx.state();
        let plain = Arc::new(MemTable::try_new(schema.clone(), vec![batches.clone()]).unwrap());
        let counted = CountedTable::over(plain.clone(), &batches);
        for projection in [None, Some(vec![1]), Some(vec![1, 0])] {
            let a = counted.scan(&state, projection.as_ref(), &[], None).await.unwrap();
            let b = plain.scan(&state, projection.as_ref(), &[], None).await.unwrap();
            let stats =
                |p: &Arc<dyn ExecutionPlan>| StatisticsContext::new().compute(p.as_ref(), &StatisticsArgs::new());
            let (sa, sb) = (stats(&a).unwrap(), stats(&b).unwrap());
            assert_eq!(*sa, sb.as_ref().clone().to_inexact(), "{projection:?}");
            assert_eq!(sa.num_rows, Precision::Inexact(8));
        }
        // Figures of other rows than those it holds (as under a kept plan):
        // the query counts the rows, it does not read the statistics.
        ctx.register_table("t", Arc::new(CountedTable::over(plain, &batches[..1]))).unwrap();
        let out =
            ctx.sql("SELECT count(*), count(id), count(n), sum(n) FROM t").await.unwrap().collect().await.unwrap();
        let row: Vec<i64> =
            (0..4).map(|c| out[0].column(c).as_any().downcast_ref::<Int64Array>().unwrap().value(0)).collect();
        assert_eq!(row, [8, 6, 5, 24]);
    }
}
