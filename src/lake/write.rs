//! Writing the lake's files inside a run ([`Txn`]): events buffered by day
//! and written as sorted Parquet into their `events/date=…` partition,
//! quarantined records as JSON lines, secrets found as one Parquet file.
//! Every file is staged under its reserved name and appears only when the
//! run commits (see the module above).

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use arrow::array::{Array, AsArray, DictionaryArray, PrimitiveArray, RecordBatch};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::datatypes::{DataType, Int32Type, SchemaRef, TimestampMillisecondType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesBuilder};
use rayon::prelude::*;
use serde::Serialize;

use super::{EVENTS, Lake, LakeError, QUARANTINE, SECRET_EXPOSURES, Txn, io_err, staged_path};
use crate::schema::{col, event_schema};
use crate::secrets::{self, ExposureRow};
use crate::time::DAY_MS;

/// Rows of one day buffered before they are written as one sorted file.
const FILE_ROWS: usize = 512 * 1024;
/// Rows buffered across all days before the largest buffer is written early,
/// which bounds memory whatever the size and spread of the input.
const BUFFER_ROWS: usize = 1 << 20;

/// A record the lake could not take, kept with where it came from and why.
#[derive(Debug, Clone, Serialize)]
pub struct QuarantineEntry {
    pub run_id: String,
    pub source_file: String,
    /// Line number (1-based) or index in a `Records` array (0-based); none
    /// when the whole file could not be read.
    pub record: Option<u64>,
    pub format: Option<String>,
    pub reason: String,
    /// The record's text with secrets redacted, cut at 64 KiB.
    pub raw: String,
    /// Whether `raw` is less than the whole record.
    pub raw_truncated: bool,
    /// The record's whole length in bytes as read, when known (absent in
    /// quarantine files written before it was recorded).
    pub raw_bytes: Option<u64>,
}

/// Stages events, quarantined records and secret exposures into a run:
/// events split by day, sorted, written as Parquet. Safe to share between
/// the threads that produce them.
pub struct LakeWriter<'t> {
    txn: &'t Txn,
    buffers: Mutex<Buffers>,
    quarantine: Mutex<Option<(String, BufWriter<File>)>>,
    exposures: Mutex<Vec<ExposureRow>>,
    days: Mutex<BTreeSet<String>>,
}

#[derive(Default)]
struct Buffers {
    by_day: HashMap<String, (Vec<RecordBatch>, usize)>,
    total: usize,
}

impl<'t> LakeWriter<'t> {
    pub fn new(txn: &'t Txn) -> Self {
        LakeWriter {
            txn,
            buffers: Mutex::default(),
            quarantine: Mutex::new(None),
            exposures: Mutex::default(),
            days: Mutex::default(),
        }
    }

    /// Adds events (any number of days, possibly none), quarantined records
    /// and secret exposures; a day's events are written once enough are buffered.
    pub fn push(
        &self,
        events: &RecordBatch,
        quarantine: &[QuarantineEntry],
        exposures: &[ExposureRow],
    ) -> Result<(), LakeError> {
        if !quarantine.is_empty() {
            self.write_quarantine(quarantine)?;
        }
        if !exposures.is_empty() {
            self.exposures.lock().expect("writer lock").extend_from_slice(exposures);
        }
        if events.num_rows() == 0 {
            return Ok(());
        }
        for (day, part) in split_by_day(events)? {
            let full = {
                let mut b = self.buffers.lock().expect("writer lock");
                let rows = part.num_rows();
                let entry = b.by_day.entry(day.clone()).or_default();
                entry.0.push(part);
                entry.1 += rows;
                b.total += rows;
                if b.by_day[&day].1 >= FILE_ROWS {
                    take_day(&mut b, &day)
                } else if b.total >= BUFFER_ROWS {
                    let largest = b.by_day.iter().max_by_key(|(_, v)| v.1).map(|(k, _)| k.clone());
                    largest.and_then(|d| take_day(&mut b, &d))
                } else {
                    None
                }
            };
            if let Some((day, batches)) = full {
                self.write_day(&day, &batches)?;
            }
        }
        Ok(())
    }

    fn write_day(&self, day: &str, batches: &[RecordBatch]) -> Result<(), LakeError> {
        let schema = event_schema();
        let sorted = sort_events(&schema, batches)?;
        let rel = self.txn.reserve(&events_partition(day), "parquet");
        let props = event_writer_properties();
        write_parquet_staged(self.txn.lake(), &rel, schema, &[sorted], props)?;
        self.days.lock().expect("writer lock").insert(day.to_string());
        Ok(())
    }

    /// Appends records to the run's one quarantine file.
    pub fn write_quarantine(&self, entries: &[QuarantineEntry]) -> Result<(), LakeError> {
        let mut q = self.quarantine.lock().expect("writer lock");
        if q.is_none() {
            let rel = self.txn.reserve(QUARANTINE, "jsonl");
            let path = staged_path(self.txn.lake(), &rel)?;
            let f = File::create(&path).map_err(io_err(&path))?;
            *q = Some((rel, BufWriter::new(f)));
        }
        let (rel, w) = q.as_mut().expect("quarantine writer was just opened");
        let path = self.txn.lake().storage.staged(rel);
        for e in entries {
            serde_json::to_writer(&mut *w, e).map_err(|e| LakeError::Io { path: path.clone(), source: e.into() })?;
            w.write_all(b"\n").map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Writes what is still buffered; returns the days that received events.
    pub fn finish(self) -> Result<Vec<String>, LakeError> {
        let rest: Vec<(String, Vec<RecordBatch>)> =
            self.buffers.into_inner().expect("writer lock").by_day.into_iter().map(|(d, (b, _))| (d, b)).collect();
        let me = LakeWriter { buffers: Mutex::default(), ..self };
        rest.par_iter().try_for_each(|(day, batches)| me.write_day(day, batches))?;
        if let Some((rel, w)) = me.quarantine.into_inner().expect("writer lock") {
            let path = me.txn.lake().storage.staged(&rel);
            let f = w.into_inner().map_err(|e| LakeError::Io { path: path.clone(), source: e.into_error() })?;
            f.sync_all().map_err(io_err(&path))?;
        }
        let exposures = me.exposures.into_inner().expect("writer lock");
        if !exposures.is_empty() {
            let rel = me.txn.reserve(SECRET_EXPOSURES, "parquet");
            let batch = secrets::exposures_batch(&exposures);
            write_parquet_staged(me.txn.lake(), &rel, batch.schema(), &[batch], writer_properties())?;
        }
        Ok(me.days.into_inner().expect("writer lock").into_iter().collect())
    }
}

fn take_day(b: &mut Buffers, day: &str) -> Option<(String, Vec<RecordBatch>)> {
    let (batches, rows) = b.by_day.remove(day)?;
    b.total -= rows;
    Some((day.to_string(), batches))
}

/// Writer settings for every Parquet file of the lake: zstd, and statistics
/// on every page so credential and time filters skip most of a file.
///
/// zstd level 1, not 3: on the lake's 1 MiB pages it wrote the benchmark's
/// event files 15% faster and no larger (`benches/RESULTS.md`, *Writing the
/// lake, and the end of a burst*).
pub fn writer_properties() -> WriterProperties {
    builder().build()
}

fn builder() -> WriterPropertiesBuilder {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("zstd level 1 is valid")))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("credtrail {}", env!("CARGO_PKG_VERSION")))
}

/// Event files: as [`writer_properties`], with a bloom filter for the
/// request-id lookups that evidence links make, and no dictionary for the
/// columns whose values hardly repeat in a file. The writer would hash every
/// such value into a dictionary until the page limit and then fall back to
/// plain pages anyway. Time and record number ascend within each
/// credential's run (the file's sort order), so their deltas pack small.
pub fn event_writer_properties() -> WriterProperties {
    let mut b = builder()
        .set_column_bloom_filter_enabled(col::REQUEST_ID.into(), true)
        .set_column_dictionary_enabled(col::REQUEST_ID.into(), false);
    for c in [col::TS, col::SOURCE_RECORD] {
        b = b
            .set_column_dictionary_enabled(c.into(), false)
            .set_column_encoding(c.into(), Encoding::DELTA_BINARY_PACKED);
    }
    b.build()
}

/// Writes `batches` as one staged Parquet file at the reserved `rel`.
pub fn write_parquet_staged(
    lake: &Lake,
    rel: &str,
    schema: SchemaRef,
    batches: &[RecordBatch],
    props: WriterProperties,
) -> Result<u64, LakeError> {
    let path = staged_path(lake, rel)?;
    let file = File::create(&path).map_err(io_err(&path))?;
    let pq = |source| LakeError::Parquet { path: path.clone(), source };
    let mut w = ArrowWriter::try_new(BufWriter::with_capacity(1 << 20, file), schema, Some(props)).map_err(pq)?;
    let mut rows = 0;
    for b in batches {
        rows += b.num_rows() as u64;
        w.write(b).map_err(pq)?;
    }
    let buf = w.into_inner().map_err(pq)?;
    let file = buf.into_inner().map_err(|e| LakeError::Io { path: path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&path))?;
    Ok(rows)
}

/// Writes JSON lines as one staged file at the reserved `rel`.
pub fn write_jsonl_staged<T: Serialize>(lake: &Lake, rel: &str, rows: &[T]) -> Result<(), LakeError> {
    let path = staged_path(lake, rel)?;
    let file = File::create(&path).map_err(io_err(&path))?;
    let mut w = BufWriter::new(file);
    for r in rows {
        serde_json::to_writer(&mut w, r).map_err(|e| LakeError::Io { path: path.clone(), source: e.into() })?;
        w.write_all(b"\n").map_err(io_err(&path))?;
    }
    let file = w.into_inner().map_err(|e| LakeError::Io { path: path.clone(), source: e.into_error() })?;
    file.sync_all().map_err(io_err(&path))
}

/// Concatenates event batches and sorts them by (credential_id, ts), the
/// order that makes per-credential scans read contiguous row groups.
pub fn sort_events(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<RecordBatch, LakeError> {
    let arrow = |what: &str| {
        let what = what.to_string();
        move |source| LakeError::Arrow { what, source }
    };
    let all = concat_batches(schema, batches).map_err(arrow("concatenating event batches"))?;
    let column = |c| all.column_by_name(c).expect("event batch has sort columns");
    // Parsed batches' credentials are a dictionary already; anything else becomes one.
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let credential = arrow::compute::cast(column(col::CREDENTIAL_ID), &dict).map_err(arrow("sorting events"))?;
    let idx = dictionary_order(credential.as_dictionary::<Int32Type>(), column(col::TS).as_primitive());
    let indices = arrow::array::UInt32Array::from(idx);
    take_record_batch(&all, &indices).map_err(arrow("sorting events"))
}

/// The (credential, ts) order of rows: each distinct credential of the
/// dictionary is ranked once, so rows sort by two integers instead of
/// comparing strings. Nulls first, ties in row order: the order arrow's row
/// format sorts in, stably.
fn dictionary_order(dict: &DictionaryArray<Int32Type>, ts: &PrimitiveArray<TimestampMillisecondType>) -> Vec<u32> {
    let values = dict.values().as_string::<i32>();
    let mut by_value: Vec<u32> = (0..values.len() as u32).collect();
    let value = |i: u32| values.is_valid(i as usize).then(|| values.value(i as usize));
    by_value.sort_unstable_by_key(|&i| value(i));
    // Equal values (a dictionary may repeat one) share a rank; null values rank 0 with null keys.
    let (mut rank, mut r, mut prev) = (vec![0u32; values.len()], 0, None);
    for &i in &by_value {
        let v = value(i);
        if v.is_some() && v != prev {
            r += 1;
        }
        rank[i as usize] = if v.is_some() { r } else { 0 };
        prev = v;
    }
    let keys = dict.keys();
    let mut rows: Vec<(u32, Option<i64>, u32)> = (0..keys.len())
        .map(|i| {
            let cred = if keys.is_valid(i) { rank[keys.value(i) as usize] } else { 0 };
            (cred, ts.is_valid(i).then(|| ts.value(i)), i as u32)
        })
        .collect();
    rows.sort_unstable();
    rows.into_iter().map(|(_, _, i)| i).collect()
}

/// Splits a batch of events by UTC day of `ts`, the lake's partition key.
pub fn split_by_day(batch: &RecordBatch) -> Result<Vec<(String, RecordBatch)>, LakeError> {
    let ts = batch.column_by_name(col::TS).expect("event batch has ts").as_primitive::<TimestampMillisecondType>();
    if ts.is_empty() {
        return Ok(Vec::new());
    }
    let day_no = |i: usize| ts.value(i).div_euclid(DAY_MS);
    let first = day_no(0);
    if (0..ts.len()).all(|i| day_no(i) == first) {
        return Ok(vec![(crate::time::day_of(ts.value(0)), batch.clone())]);
    }
    let mut groups: HashMap<i64, Vec<u32>> = HashMap::new();
    for i in 0..ts.len() {
        groups.entry(day_no(i)).or_default().push(i as u32);
    }
    let mut out: Vec<(String, RecordBatch)> = Vec::with_capacity(groups.len());
    for (day, idx) in groups {
        let indices = arrow::array::UInt32Array::from(idx);
        let part = take_record_batch(batch, &indices)
            .map_err(|source| LakeError::Arrow { what: "partitioning events by day".into(), source })?;
        out.push((crate::time::day_of(day * DAY_MS), part));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The hive partition directory of a day.
pub fn events_partition(day: &str) -> String {
    format!("{EVENTS}/{}={day}", col::DATE)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::{Event, EventBuilder, Lineage};

    /// Events of (credential, ts) pairs (for tests of any layer).
    pub(crate) fn batch(ids: &[(&str, i64)]) -> RecordBatch {
        let mut b = EventBuilder::new();
        for (i, (id, ts)) in ids.iter().enumerate() {
            let e = Event { ts_ms: *ts, credential_id: (*id).into(), ..Default::default() };
            b.append(&e, Lineage { source: "gateway", source_file: "f" }, i as u64 + 1);
        }
        b.finish()
    }

    /// The integer order of dictionary-encoded credentials is the order of
    /// their values, nulls first, whatever the dictionary's own order and
    /// repeats: the same permutation the row format's stable sort gives.
    #[test]
    fn dictionary_ranks_sort_as_the_values_do() {
        use arrow::array::{Int32Array, StringArray, TimestampMillisecondArray};
        use arrow::row::{RowConverter, SortField};
        use std::sync::Arc;
        let values = StringArray::from(vec![Some("b"), None, Some("a"), Some("b"), Some("c")]);
        let keys = Int32Array::from(vec![Some(0), Some(2), None, Some(3), Some(1), Some(4), Some(0), Some(2), Some(3)]);
        let cred = DictionaryArray::new(keys, Arc::new(values));
        // -1 stands for a missing time.
        let ts: TimestampMillisecondArray =
            [5, 9, 1, 2, 7, -1, 2, 9, 1].map(|t| (t >= 0).then_some(t)).into_iter().collect();
        let fast = dictionary_order(&cred, &ts);
        let cols: [arrow::array::ArrayRef; 2] = [Arc::new(cred.clone()), Arc::new(ts)];
        let conv = RowConverter::new(cols.iter().map(|c| SortField::new(c.data_type().clone())).collect()).unwrap();
        let rows = conv.convert_columns(&cols).unwrap();
        let mut reference: Vec<u32> = (0..9).collect();
        reference.sort_by(|&a, &b| rows.row(a as usize).cmp(&rows.row(b as usize)));
        assert_eq!(fast, reference);
        assert_eq!(&fast[..3], &[2, 4, 1], "null keys and the null value first, in row order");
    }

    /// Event files: time and record number delta-packed, request ids plain
    /// with their bloom filter, the repeating columns kept in dictionaries;
    /// and the rows read back as written.
    #[test]
    fn event_files_encode_each_column_for_how_its_values_repeat() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let mut b = crate::schema::EventBuilder::new();
        for i in 0..5_000u64 {
            let cred = format!("key_{}", i % 7);
            let rid = format!("req_{i:08}");
            let e = Event {
                ts_ms: 1_700_000_000_000 + (i as i64) * 37,
                request_id: Some(rid.as_str().into()),
                credential_id: cred.as_str().into(),
                ..Default::default()
            };
            b.append(&e, Lineage { source: "gateway", source_file: "f" }, i + 1);
        }
        let sorted = sort_events(&event_schema(), &[b.finish()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), crate::lake::Open::Write).unwrap();
        let txn = lake.begin().unwrap();
        let rel = txn.reserve(&crate::lake::events_partition("2023-11-14"), "parquet");
        write_parquet_staged(&lake, &rel, event_schema(), std::slice::from_ref(&sorted), event_writer_properties())
            .unwrap();
        txn.commit(vec![]).unwrap();
        let file = File::open(lake.path(&rel)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let chunk = |name: &str| {
            let rg = reader.metadata().row_group(0);
            rg.columns().iter().find(|c| c.column_path().string() == name).unwrap().clone()
        };
        for name in [col::TS, col::SOURCE_RECORD] {
            let c = chunk(name);
            assert!(c.dictionary_page_offset().is_none(), "{name}: no dictionary");
            assert!(c.encodings().any(|e| e == Encoding::DELTA_BINARY_PACKED), "{name}: delta-packed");
        }
        let rid = chunk(col::REQUEST_ID);
        assert!(rid.dictionary_page_offset().is_none() && rid.bloom_filter_offset().is_some());
        let cred = chunk(col::CREDENTIAL_ID);
        assert!(cred.dictionary_page_offset().is_some(), "a repeating column keeps its dictionary");
        let back: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let back = concat_batches(&back[0].schema(), &back).unwrap();
        // Dictionaries may come back keyed differently: compare the values.
        let plain = |a: &arrow::array::ArrayRef| match a.data_type() {
            DataType::Dictionary(_, v) => arrow::compute::cast(a, v).unwrap(),
            _ => a.clone(),
        };
        assert_eq!(back.num_rows(), sorted.num_rows());
        for (i, (a, b)) in back.columns().iter().zip(sorted.columns()).enumerate() {
            assert_eq!(&plain(a), &plain(b), "column {}", sorted.schema().field(i).name());
        }
    }

    #[test]
    fn sorts_by_credential_then_time() {
        let s = event_schema();
        let b1 = batch(&[("b", 5), ("a", 9)]);
        let b2 = batch(&[("a", 1), ("b", 2)]);
        let sorted = sort_events(&s, &[b1, b2]).unwrap();
        let ts = sorted.column_by_name(col::TS).unwrap().as_primitive::<TimestampMillisecondType>();
        assert_eq!(ts.values().to_vec(), vec![1, 9, 2, 5]);
    }

    #[test]
    fn splits_across_midnight() {
        let day = DAY_MS;
        let b = batch(&[("a", day - 1), ("a", day), ("b", day + 5), ("c", 3)]);
        let parts = split_by_day(&b).unwrap();
        assert_eq!(
            parts.iter().map(|(d, b)| (d.as_str(), b.num_rows())).collect::<Vec<_>>(),
            vec![("1970-01-01", 2), ("1970-01-02", 2)]
        );
    }
}
