//! The canonical credential-event schema: one Arrow schema that every source
//! is normalised into, and a columnar builder that appends borrowed events
//! without allocating a row object per event.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampMillisecondBuilder, UInt16Builder, UInt32Builder, UInt64Builder,
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

type DictBuilder = StringDictionaryBuilder<Int32Type>;

/// Appends [`Event`]s column by column; `finish` yields a [`RecordBatch`]
/// of [`event_schema`].
pub struct EventBuilder {
    ts: TimestampMillisecondBuilder,
    request_id: StringBuilder,
    credential_id: DictBuilder,
    principal: DictBuilder,
    session_id: StringBuilder,
    source_ip: DictBuilder,
    user_agent: DictBuilder,
    provider: DictBuilder,
    model: DictBuilder,
    action: DictBuilder,
    tool: DictBuilder,
    resource: StringBuilder,
    status: UInt16Builder,
    error_code: DictBuilder,
    latency_ms: UInt32Builder,
    tokens_in: Int64Builder,
    tokens_out: Int64Builder,
    cost_usd: Float64Builder,
    region: DictBuilder,
    account_id: DictBuilder,
    detail: StringBuilder,
    source: DictBuilder,
    source_file: DictBuilder,
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
            credential_id: DictBuilder::new(),
            principal: DictBuilder::new(),
            session_id: StringBuilder::new(),
            source_ip: DictBuilder::new(),
            user_agent: DictBuilder::new(),
            provider: DictBuilder::new(),
            model: DictBuilder::new(),
            action: DictBuilder::new(),
            tool: DictBuilder::new(),
            resource: StringBuilder::new(),
            status: UInt16Builder::new(),
            error_code: DictBuilder::new(),
            latency_ms: UInt32Builder::new(),
            tokens_in: Int64Builder::new(),
            tokens_out: Int64Builder::new(),
            cost_usd: Float64Builder::new(),
            region: DictBuilder::new(),
            account_id: DictBuilder::new(),
            detail: StringBuilder::new(),
            source: DictBuilder::new(),
            source_file: DictBuilder::new(),
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
}
