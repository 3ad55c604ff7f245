//! The canonical credential-event schema: one Arrow schema that every source
//! is normalised into, and a columnar builder that appends borrowed events
//! without allocating a row object per event. Its dictionary columns intern
//! values themselves ([`DictColumn`]): a repeat of the row before costs one
//! comparison, a value seen earlier one hash and one probe.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, DictionaryArray, Float64Builder, Int32Array, Int32Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};

/// Bumped whenever a column is added, removed or retyped; stored in the
/// Parquet footer so readers can tell lakes apart.
pub const SCHEMA_VERSION: &str = "1";

/// What a request did, coarsely. Detectors and inventory scopes speak in these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Inference,
    ToolCall,
    Read,
    Write,
    Admin,
    Auth,
}

impl Action {
    pub const ALL: [Action; 6] =
        [Action::Inference, Action::ToolCall, Action::Read, Action::Write, Action::Admin, Action::Auth];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Inference => "inference",
            Action::ToolCall => "tool_call",
            Action::Read => "read",
            Action::Write => "write",
            Action::Admin => "admin",
            Action::Auth => "auth",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an action (expected one of inference, tool_call, read, write, admin, auth)")]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL.into_iter().find(|a| a.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// One normalised event, borrowing from the raw record where it can.
/// Sources build these; [`EventBuilder`] turns them into columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event<'a> {
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    pub request_id: Option<Cow<'a, str>>,
    /// The key id (never the secret). Sources fall back to the principal
    /// when the log has no key id, so this is never empty.
    pub credential_id: Cow<'a, str>,
    pub principal: Option<Cow<'a, str>>,
    pub session_id: Option<Cow<'a, str>>,
    pub source_ip: Option<Cow<'a, str>>,
    pub user_agent: Option<Cow<'a, str>>,
    pub provider: Option<Cow<'a, str>>,
    pub model: Option<Cow<'a, str>>,
    pub action: Option<Action>,
    pub tool: Option<Cow<'a, str>>,
    pub resource: Option<Cow<'a, str>>,
    pub status: Option<u16>,
    pub error_code: Option<Cow<'a, str>>,
    pub latency_ms: Option<u32>,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_usd: Option<f64>,
    pub region: Option<Cow<'a, str>>,
    pub account_id: Option<Cow<'a, str>>,
    /// Source-specific context an analyst may need (e.g. CloudTrail
    /// `requestParameters`), as compact JSON.
    pub detail: Option<Cow<'a, str>>,
}

/// Why a record could not become an [`Event`]: goes to quarantine verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl Rejected {
    pub fn new(reason: impl Into<String>) -> Self {
        Rejected(reason.into())
    }
}

/// Where an event came from: constant for a file, so passed beside the event.
#[derive(Debug, Clone, Copy)]
pub struct Lineage<'a> {
    /// Input kind: `gateway`, `cloudtrail`, `bedrock`, or a mapping's name.
    pub source: &'a str,
    pub source_file: &'a str,
}

pub mod col {
    pub const TS: &str = "ts";
    pub const REQUEST_ID: &str = "request_id";
    pub const CREDENTIAL_ID: &str = "credential_id";
    pub const PRINCIPAL: &str = "principal";
    pub const SESSION_ID: &str = "session_id";
    pub const SOURCE_IP: &str = "source_ip";
    pub const USER_AGENT: &str = "user_agent";
    pub const PROVIDER: &str = "provider";
    pub const MODEL: &str = "model";
    pub const ACTION: &str = "action";
    pub const TOOL: &str = "tool";
    pub const RESOURCE: &str = "resource";
    pub const STATUS: &str = "status";
    pub const ERROR_CODE: &str = "error_code";
    pub const LATENCY_MS: &str = "latency_ms";
    pub const TOKENS_IN: &str = "tokens_in";
    pub const TOKENS_OUT: &str = "tokens_out";
    pub const COST_USD: &str = "cost_usd";
    pub const REGION: &str = "region";
    pub const ACCOUNT_ID: &str = "account_id";
    pub const DETAIL: &str = "detail";
    pub const SOURCE: &str = "source";
    pub const SOURCE_FILE: &str = "source_file";
    pub const SOURCE_RECORD: &str = "source_record";
    /// Hive partition column of the lake (not stored inside the files).
    pub const DATE: &str = "date";
}

fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

static EVENT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    use col::*;
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let fields = vec![
        Field::new(TS, ts, false),
        Field::new(REQUEST_ID, DataType::Utf8, true),
        // Dictionary-encoded where a column repeats a few values per file:
        // it keeps memory and sorting cheap and Parquet dictionary pages small.
        Field::new(CREDENTIAL_ID, dict(), false),
        Field::new(PRINCIPAL, dict(), true),
        Field::new(SESSION_ID, DataType::Utf8, true),
        Field::new(SOURCE_IP, dict(), true),
        Field::new(USER_AGENT, dict(), true),
        Field::new(PROVIDER, dict(), true),
        Field::new(MODEL, dict(), true),
        Field::new(ACTION, dict(), true),
        Field::new(TOOL, dict(), true),
        Field::new(RESOURCE, DataType::Utf8, true),
        Field::new(STATUS, DataType::UInt16, true),
        Field::new(ERROR_CODE, dict(), true),
        Field::new(LATENCY_MS, DataType::UInt32, true),
        Field::new(TOKENS_IN, DataType::Int64, true),
        Field::new(TOKENS_OUT, DataType::Int64, true),
        Field::new(COST_USD, DataType::Float64, true),
        Field::new(REGION, dict(), true),
        Field::new(ACCOUNT_ID, dict(), true),
        Field::new(DETAIL, DataType::Utf8, true),
        Field::new(SOURCE, dict(), false),
        Field::new(SOURCE_FILE, dict(), false),
        Field::new(SOURCE_RECORD, DataType::UInt64, false),
    ];
    let metadata = [("credtrail.schema_version".to_string(), SCHEMA_VERSION.to_string())];
    Arc::new(Schema::new(fields).with_metadata(metadata.into_iter().collect()))
});

/// The Arrow schema of an events Parquet file.
pub fn event_schema() -> SchemaRef {
    EVENT_SCHEMA.clone()
}

/// A dictionary-encoded string column under construction: each distinct
/// value is stored once, in first-seen order (as Arrow's own builder does, so
/// the arrays are the same), and a row holds its value's key. The row
/// before's key is tried first: a file's source and name, and most of the
/// low-cardinality columns in a run of one caller's requests, repeat it, and
/// then the row costs one comparison instead of a hash and a probe.
struct DictColumn {
    keys: Int32Builder,
    values: StringBuilder,
    /// Keys of `values`, by a seeded hash of the value.
    table: hashbrown::HashTable<i32>,
    last: Option<i32>,
    seed: u64,
}

/// One random seed per process for the interning hash, so values crafted to
/// collide (a source IP, a user agent) cannot be precomputed.
static SEED: LazyLock<u64> = LazyLock::new(|| {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x6372_6564_7472_6169u64)
});

impl DictColumn {
    fn new() -> Self {
        DictColumn {
            keys: Int32Builder::new(),
            values: StringBuilder::new(),
            table: hashbrown::HashTable::new(),
            last: None,
            seed: *SEED,
        }
    }

    /// The bytes of the value with key `k`.
    fn value(values: &StringBuilder, k: i32) -> &[u8] {
        let (offsets, k) = (values.offsets_slice(), k as usize);
        &values.values_slice()[offsets[k] as usize..offsets[k + 1] as usize]
    }

    fn append_value(&mut self, v: &str) {
        let key = match self.last {
            Some(k) if Self::value(&self.values, k) == v.as_bytes() => k,
            _ => self.intern(v),
        };
        self.last = Some(key);
        self.keys.append_value(key);
    }

    fn append_option(&mut self, v: Option<&str>) {
        match v {
            Some(v) => self.append_value(v),
            None => self.keys.append_null(),
        }
    }

    /// The key of `v`, stored now if it is new.
    fn intern(&mut self, v: &str) -> i32 {
        let (values, seed) = (&mut self.values, self.seed);
        let hash = |b: &[u8]| xxhash_rust::xxh3::xxh3_64_with_seed(b, seed);
        let bytes = v.as_bytes();
        let entry =
            self.table.entry(hash(bytes), |&k| Self::value(values, k) == bytes, |&k| hash(Self::value(values, k)));
        *entry
            .or_insert_with(|| {
                // Keys are i32 like the values' offsets: a column with more
                // distinct values would overflow its offsets first.
                let k = values.len() as i32;
                values.append_value(v);
                k
            })
            .get()
    }

    /// Takes the rows appended so far as a dictionary array and starts afresh.
    fn finish(&mut self) -> DictionaryArray<Int32Type> {
        self.table.clear();
        self.last = None;
        let (keys, values) = (self.keys.finish(), self.values.finish());
        DictionaryArray::try_new(keys, Arc::new(values)).expect("every key indexes a value it was interned with")
    }
}

/// `batch` with each string dictionary holding only the values its rows use,
/// each once. Arrow's `concat` keeps every input's dictionary whole unless
/// their values outnumber the rows, and a filter keeps it whole too, so a
/// live day compacted from many micro-batches held a source IP once per
/// micro-batch; every sort over it then copied all of those dictionaries
/// into each batch it emitted (arrow-rs#9939), which made one pass's
/// `billing_spike` over 745k live events take 11.8 s. (Arrow's
/// `garbage_collect_dictionary` drops unused values but keeps duplicates,
/// and here every value is used, once per micro-batch.)
pub fn shrink_dictionaries(batch: &RecordBatch) -> RecordBatch {
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_dictionary_opt::<Int32Type>() {
            Some(d) if d.values().data_type() == &DataType::Utf8 => Arc::new(shrink(d)) as ArrayRef,
            _ => Arc::clone(c),
        })
        .collect();
    RecordBatch::try_new(batch.schema(), columns).expect("the same columns, the same types")
}

fn shrink(d: &DictionaryArray<Int32Type>) -> DictionaryArray<Int32Type> {
    let values = d.values().as_string::<i32>();
    let mut interned = DictColumn::new();
    // Old key → new key, for the values some row uses.
    let mut new_key: Vec<Option<i32>> = vec![None; values.len()];
    let keys: Int32Array = d
        .keys()
        .iter()
        .map(|k| {
            let k = k? as usize;
            if values.is_null(k) {
                return None;
            }
            Some(*new_key[k].get_or_insert_with(|| interned.intern(values.value(k))))
        })
        .collect();
    DictionaryArray::try_new(keys, Arc::new(interned.values.finish()))
        .expect("every key indexes a value it was interned with")
}

/// Appends [`Event`]s column by column; `finish` yields a [`RecordBatch`]
/// of [`event_schema`].
pub struct EventBuilder {
    ts: TimestampMillisecondBuilder,
    request_id: StringBuilder,
    credential_id: DictColumn,
    principal: DictColumn,
    session_id: StringBuilder,
    source_ip: DictColumn,
    user_agent: DictColumn,
    provider: DictColumn,
    model: DictColumn,
    action: DictColumn,
    tool: DictColumn,
    resource: StringBuilder,
    status: UInt16Builder,
    error_code: DictColumn,
    latency_ms: UInt32Builder,
    tokens_in: Int64Builder,
    tokens_out: Int64Builder,
    cost_usd: Float64Builder,
    region: DictColumn,
    account_id: DictColumn,
    detail: StringBuilder,
    source: DictColumn,
    source_file: DictColumn,
    source_record: UInt64Builder,
    len: usize,
}

impl Default for EventBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBuilder {
    pub fn new() -> Self {
        EventBuilder {
            ts: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            request_id: StringBuilder::new(),
            credential_id: DictColumn::new(),
            principal: DictColumn::new(),
            session_id: StringBuilder::new(),
            source_ip: DictColumn::new(),
            user_agent: DictColumn::new(),
            provider: DictColumn::new(),
            model: DictColumn::new(),
            action: DictColumn::new(),
            tool: DictColumn::new(),
            resource: StringBuilder::new(),
            status: UInt16Builder::new(),
            error_code: DictColumn::new(),
            latency_ms: UInt32Builder::new(),
            tokens_in: Int64Builder::new(),
            tokens_out: Int64Builder::new(),
            cost_usd: Float64Builder::new(),
            region: DictColumn::new(),
            account_id: DictColumn::new(),
            detail: StringBuilder::new(),
            source: DictColumn::new(),
            source_file: DictColumn::new(),
            source_record: UInt64Builder::new(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `record` is the 1-based line number, or the index of the record in a
    /// CloudTrail `Records` array.
    pub fn append(&mut self, e: &Event<'_>, lineage: Lineage<'_>, record: u64) {
        self.ts.append_value(e.ts_ms);
        self.request_id.append_option(e.request_id.as_deref());
        self.credential_id.append_value(&e.credential_id);
        self.principal.append_option(e.principal.as_deref());
        self.session_id.append_option(e.session_id.as_deref());
        self.source_ip.append_option(e.source_ip.as_deref());
        self.user_agent.append_option(e.user_agent.as_deref());
        self.provider.append_option(e.provider.as_deref());
        self.model.append_option(e.model.as_deref());
        self.action.append_option(e.action.map(Action::as_str));
        self.tool.append_option(e.tool.as_deref());
        self.resource.append_option(e.resource.as_deref());
        self.status.append_option(e.status);
        self.error_code.append_option(e.error_code.as_deref());
        self.latency_ms.append_option(e.latency_ms);
        self.tokens_in.append_option(e.tokens_in);
        self.tokens_out.append_option(e.tokens_out);
        self.cost_usd.append_option(e.cost_usd);
        self.region.append_option(e.region.as_deref());
        self.account_id.append_option(e.account_id.as_deref());
        self.detail.append_option(e.detail.as_deref());
        self.source.append_value(lineage.source);
        self.source_file.append_value(lineage.source_file);
        self.source_record.append_value(record);
        self.len += 1;
    }

    /// Takes the rows appended so far as a batch and leaves the builder empty.
    pub fn finish(&mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.request_id.finish()),
            Arc::new(self.credential_id.finish()),
            Arc::new(self.principal.finish()),
            Arc::new(self.session_id.finish()),
            Arc::new(self.source_ip.finish()),
            Arc::new(self.user_agent.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.action.finish()),
            Arc::new(self.tool.finish()),
            Arc::new(self.resource.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.error_code.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.tokens_in.finish()),
            Arc::new(self.tokens_out.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.account_id.finish()),
            Arc::new(self.detail.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.source_file.finish()),
            Arc::new(self.source_record.finish()),
        ];
        self.len = 0;
        RecordBatch::try_new(event_schema(), columns).expect("EventBuilder columns match event_schema by construction")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn action_round_trips_and_rejects_unknown() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
        }
        assert!("delete".parse::<Action>().is_err());
        assert_eq!("Tool_Call".parse::<Action>().unwrap(), Action::ToolCall);
    }

    #[test]
    fn builder_produces_batch_of_the_schema_with_nulls() {
        let mut b = EventBuilder::new();
        let e = Event {
            ts_ms: 1_700_000_000_123,
            credential_id: Cow::Borrowed("key-1"),
            action: Some(Action::Inference),
            tokens_in: Some(12),
            ..Default::default()
        };
        let lin = Lineage { source: "gateway", source_file: "a.jsonl" };
        b.append(&e, lin, 1);
        b.append(&Event { credential_id: "key-2".into(), ..e.clone() }, lin, 2);
        let batch = b.finish();
        assert_eq!(batch.schema(), event_schema());
        assert_eq!(batch.num_rows(), 2);
        assert!(b.is_empty());
        let model = batch.column_by_name(col::MODEL).unwrap();
        assert_eq!(model.null_count(), 2);
        let rec = batch.column_by_name(col::SOURCE_RECORD).unwrap();
        assert_eq!(rec.as_primitive::<arrow::datatypes::UInt64Type>().value(1), 2);
    }

    #[test]
    fn interned_columns_equal_arrows_own_dictionary_builder() {
        use arrow::array::StringDictionaryBuilder;
        let rows = [Some("b"), Some("b"), None, Some("a"), Some(""), Some("b"), None, Some("a"), Some("c"), Some("c")];
        for round in 0..2 {
            let (mut ours, mut arrows) = (DictColumn::new(), StringDictionaryBuilder::<Int32Type>::new());
            for (i, v) in rows.iter().enumerate() {
                // Each round a different interleaving of repeats and new values.
                let v = if round == 1 && i % 3 == 0 { v.map(|_| "z") } else { *v };
                ours.append_option(v);
                arrows.append_option(v);
            }
            let (a, b) = (ours.finish(), arrows.finish());
            assert_eq!(a, b, "round {round}");
            assert_eq!(a.values().len(), b.values().len());
            // Finishing starts afresh: nothing carries over into the next batch.
            ours.append_value("c");
            assert_eq!(ours.finish().keys().value(0), 0);
        }
    }

    #[test]
    fn shrunk_dictionaries_hold_each_used_value_once() {
        use arrow::compute::{cast, concat_batches, filter_record_batch};
        let batch = |rows: &[(&str, Option<&str>)]| {
            let mut b = EventBuilder::new();
            for (i, (cred, model)) in rows.iter().enumerate() {
                let e = Event {
                    ts_ms: i as i64,
                    credential_id: (*cred).into(),
                    model: model.map(Cow::Borrowed),
                    ..Default::default()
                };
                b.append(&e, Lineage { source: "gateway", source_file: "f" }, i as u64 + 1);
            }
            b.finish()
        };
        let (a, b) = (batch(&[("k1", Some("m1")), ("k2", None)]), batch(&[("k2", Some("m1")), ("k3", Some("m2"))]));
        let both = concat_batches(&event_schema(), [&a, &b]).unwrap();
        // Drop k3's row: k3 and m2 stay in the dictionaries (m1 twice, unless arrow merged them).
        let kept = filter_record_batch(&both, &vec![true, true, true, false].into()).unwrap();
        let dict_len =
            |b: &RecordBatch, c: &str| b.column_by_name(c).unwrap().as_dictionary::<Int32Type>().values().len();
        assert!(dict_len(&kept, col::CREDENTIAL_ID) >= 3 && dict_len(&kept, col::MODEL) >= 2);
        let shrunk = shrink_dictionaries(&kept);
        assert_eq!((dict_len(&shrunk, col::CREDENTIAL_ID), dict_len(&shrunk, col::MODEL)), (2, 1));
        // The same values, row by row, nulls included.
        for (i, c) in kept.columns().iter().enumerate() {
            let text = |a: &ArrayRef| cast(a, &DataType::Utf8).unwrap_or_else(|_| Arc::clone(a));
            assert_eq!(text(c).to_data(), text(shrunk.column(i)).to_data(), "{}", kept.schema().field(i).name());
        }
    }
}
