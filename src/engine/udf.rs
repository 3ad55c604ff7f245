//! Every SQL function the sessions register, with the Rust functions they
//! apply (callers outside SQL use those directly): `robust_z`, `ip_in_cidr`,
//! `scope_allows`, `ip_network` ([`network_of`]), `caller_network`
//! ([`caller_network`]), `resource_prefix` and `scope_value`.

use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Float64Array, StringArray};
use arrow::datatypes::{DataType, Float64Type};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::SessionContext;

/// Registers every function of this module.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(scope_allows_udf());
    ctx.register_udf(text_udf("ip_network", 1, |a| map_text(&a[0], network_of)));
    ctx.register_udf(text_udf("caller_network", 2, caller_networks));
    ctx.register_udf(text_udf("resource_prefix", 1, |a| map_text(&a[0], resource_prefix)));
    ctx.register_udf(text_udf("scope_value", 1 + SCOPE_TEXT, scope_values));
    ctx.register_udf(robust_z_udf());
    ctx.register_udf(ip_in_cidr_udf());
}

/// Whether a scope allows `value`. A pattern is an exact value, a prefix
/// ending in `*` (`gpt-4o*`, `github.*`) or in `/` (`s3://bucket/prefix/`), or
/// `=value`, pinned exactly whatever it ends in. An empty list does not
/// restrict. The SQL function `scope_allows` is this; inventory resources are
/// matched through `inventory::resource_pattern` (prefixes made explicit).
pub fn scope_allows<S: AsRef<str>>(patterns: &[S], value: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| pattern_matches(p.as_ref(), value))
}

/// Marks a pattern as one exact value (`=mailto:team@acme.com`).
pub const PIN: char = '=';

/// Whether one scope pattern allows `value` (see [`scope_allows`]).
pub fn pattern_matches(p: &str, value: &str) -> bool {
    if let Some(exact) = p.strip_prefix(PIN) {
        return value == exact;
    }
    match p.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None if p.ends_with('/') => value.starts_with(p),
        None => value == p,
    }
}

/// The network of an address: `/24` for IPv4, `/64` for IPv6. Keys move
/// between hosts of one subnet all the time; a new subnet is news.
pub fn network_of(ip: &str) -> Option<String> {
    match crate::net::parse_ip(ip)? {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            Some(format!("{}.{}.{}.0/24", o[0], o[1], o[2]))
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            Some(format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]))
        }
    }
}

/// The prefix of a resource that scope is learned at: its directory, cut
/// to the scheme and authority plus one path segment (`s3://bucket/dir/`,
/// `github://org/repo/`, `k8s://cluster/`), so new files in a known place
/// are not news but a new bucket, repository or directory is.
pub fn resource_prefix(resource: &str) -> Option<String> {
    let r = resource.trim();
    if r.is_empty() {
        return None;
    }
    let (head, rest) = match r.find("://") {
        Some(i) => r.split_at(i + 3),
        None => ("", r),
    };
    let mut parts: Vec<&str> = rest.split('/').collect();
    // The last segment is a leaf (file, object, pod) unless the path ends in `/`.
    parts.pop();
    let dirs: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).take(2).collect();
    Some(if dirs.is_empty() { head.to_string() } else { format!("{head}{}/", dirs.join("/")) })
        .filter(|p| !p.is_empty())
}

/// `(x - median) / (1.4826 * mad)`: how many robust standard deviations `x`
/// lies from the median; `None` when the MAD is zero (no spread to compare with).
pub fn robust_z(x: f64, median: f64, mad: f64) -> Option<f64> {
    (mad != 0.0).then(|| (x - median) / (1.4826 * mad))
}

/// `robust_z(x, median, mad) -> double`, null when any input is null or mad is 0.
pub fn robust_z_udf() -> ScalarUDF {
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let f = |i: usize| arrow::compute::cast(&arrays[i], &DataType::Float64);
        let (x, m, d) = (f(0)?, f(1)?, f(2)?);
        let (x, m, d) =
            (x.as_primitive::<Float64Type>(), m.as_primitive::<Float64Type>(), d.as_primitive::<Float64Type>());
        let out: Float64Array = (0..x.len())
            .map(|i| {
                if x.is_null(i) || m.is_null(i) || d.is_null(i) {
                    return None;
                }
                robust_z(x.value(i), m.value(i), d.value(i))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf(
        "robust_z",
        vec![DataType::Float64, DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        fun,
    )
}

/// Whether `ip` lies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or a bare
/// address); false when either does not parse. An IPv4 address and an
/// IPv4-mapped IPv6 one are the same address.
pub fn ip_in_cidr(ip: &str, cidr: &str) -> bool {
    let Some(ip) = crate::net::parse_ip(ip) else { return false };
    let (net, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (cidr.trim(), None),
    };
    let Some(net) = crate::net::parse_ip(net) else { return false };
    let max = if net.is_ipv4() { 32 } else { 128 };
    let len = match len.map(str::parse::<u32>) {
        None => max,
        Some(Ok(l)) if l <= max => l,
        Some(_) => return false,
    };
    let mask = |bits: u32, width: u32| if bits == 0 { 0u128 } else { u128::MAX << (width - bits) };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(len, 32) as u32;
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(len, 128);
            u128::from(a) & m == u128::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|a| ip_in_cidr(&a.to_string(), cidr)),
        (IpAddr::V4(a), IpAddr::V6(n)) => {
            let m = mask(len, 128);
            u128::from(a.to_ipv6_mapped()) & m == u128::from(n) & m
        }
    }
}

/// `ip_in_cidr(ip, cidr) -> bool`: null when either is null, false when either does not parse.
pub fn ip_in_cidr_udf() -> ScalarUDF {
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let ips = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let cidrs = arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
        let (ips, cidrs) = (ips.as_string::<i32>(), cidrs.as_string::<i32>());
        let out: BooleanArray = (0..ips.len())
            .map(|i| (!ips.is_null(i) && !cidrs.is_null(i)).then(|| ip_in_cidr(ips.value(i), cidrs.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf("ip_in_cidr", vec![DataType::Utf8, DataType::Utf8], DataType::Boolean, Volatility::Immutable, fun)
}

/// `scope_allows(patterns list<string>, value string) -> bool`: whether an
/// inventory scope allows a value (see [`scope_allows`]).
/// Null when the value is null.
pub fn scope_allows_udf() -> ScalarUDF {
    let list = DataType::List(Arc::new(arrow::datatypes::Field::new("item", DataType::Utf8, true)));
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let patterns = arrays[0].as_list::<i32>();
        let values = arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let out: BooleanArray = (0..values.len())
            .map(|i| {
                if values.is_null(i) {
                    return None;
                }
                let allowed = if patterns.is_null(i) {
                    true
                } else {
                    let p = patterns.value(i);
                    let p = p.as_string::<i32>();
                    let list: Vec<&str> = p.iter().flatten().collect();
                    scope_allows(&list, values.value(i))
                };
                Some(allowed)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf("scope_allows", vec![list, DataType::Utf8], DataType::Boolean, Volatility::Immutable, fun)
}

/// A scope dimension a credential's use is learned in: baselines count it
/// (`baseline::daily`), `first_seen` finds its new values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeDimension {
    /// The event column it is read from.
    pub column: &'static str,
    /// Its name in `baseline_scope`.
    pub name: &'static str,
    pub derive: Derive,
}

/// How a dimension's value is derived from its column's: decided here
/// once, for the baselines' scope pass and for `scope_value` alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derive {
    /// The value itself.
    AsIs,
    /// The caller's network: [`network_of`] the address, and none for a
    /// request AWS relayed for its caller ([`relayed_rows`]).
    Network,
    /// [`resource_prefix`].
    Prefix,
    /// The hour of day of `ts`.
    Hour,
}

impl Derive {
    /// A text value's derived value, per distinct value; for a network,
    /// before the relay rule (which needs the row's user agent).
    pub fn of(self, raw: &str) -> Option<String> {
        match self {
            Derive::AsIs => Some(raw.to_string()),
            Derive::Network => network_of(raw),
            Derive::Prefix => resource_prefix(raw),
            Derive::Hour => None,
        }
    }
}

/// The scope dimensions. All but the last are text; the hour of day comes from `ts`.
pub const SCOPE_DIMENSIONS: [ScopeDimension; 8] = {
    const fn d(column: &'static str, name: &'static str, derive: Derive) -> ScopeDimension {
        ScopeDimension { column, name, derive }
    }
    [
        d("source_ip", "network", Derive::Network),
        d("user_agent", "user_agent", Derive::AsIs),
        d("model", "model", Derive::AsIs),
        d("tool", "tool", Derive::AsIs),
        d("action", "action", Derive::AsIs),
        d("resource", "resource_prefix", Derive::Prefix),
        d("region", "region", Derive::AsIs),
        d("ts", "hour", Derive::Hour),
    ]
};

/// How many of [`SCOPE_DIMENSIONS`] are read from a text column.
const SCOPE_TEXT: usize = SCOPE_DIMENSIONS.len() - 1;

/// `scope_value(dimension, source_ip, user_agent, model, tool, action,
/// resource, region)`: each row's value in its dimension, as baselines learn
/// it (a network through `caller_network`, a resource through
/// `resource_prefix`), so a query can name "the value in this row's
/// dimension" once. Null for `hour` and for unknown dimensions. Each
/// dimension is computed over its own rows only.
fn scope_values(args: &[ArrayRef]) -> datafusion::error::Result<ArrayRef> {
    let dims = arrow::compute::cast(&args[0], &DataType::Utf8)?;
    let dims = dims.as_string::<i32>();
    let mut rows: std::collections::HashMap<&str, Vec<u32>> = Default::default();
    for (i, d) in dims.iter().enumerate() {
        if let Some(d) = d {
            rows.entry(d).or_default().push(i as u32);
        }
    }
    // Part 0 is the null every other row points at.
    let mut parts: Vec<ArrayRef> = vec![arrow::array::new_null_array(&DataType::Utf8, 1)];
    let mut at = vec![(0, 0); dims.len()];
    for (dimension, rows) in rows {
        let Some(k) = SCOPE_DIMENSIONS[..SCOPE_TEXT].iter().position(|d| d.name == dimension) else { continue };
        let idx = arrow::array::UInt32Array::from(rows);
        let column = |k: usize| arrow::compute::take(&args[1 + k], &idx, None);
        let values = match SCOPE_DIMENSIONS[k].derive {
            // The user agent is the second column.
            Derive::Network => caller_networks(&[column(k)?, column(1)?])?,
            Derive::AsIs => arrow::compute::cast(&column(k)?, &DataType::Utf8)?,
            derive => map_text(&column(k)?, |v| derive.of(v))?,
        };
        for (j, &r) in idx.values().iter().enumerate() {
            at[r as usize] = (parts.len(), j);
        }
        parts.push(values);
    }
    let parts: Vec<&dyn Array> = parts.iter().map(|p| p.as_ref()).collect();
    Ok(arrow::compute::interleave(&parts, &at)?)
}

/// A function of `arity` string columns to a string column (`ip_network`,
/// `caller_network`, `resource_prefix`). It takes any string type, so the
/// lake's dictionary-encoded strings arrive as they are and `f` maps them
/// once per distinct value ([`map_text`]), not once per row: these run over
/// every event of every detection pass.
fn text_udf(name: &str, arity: usize, f: TextFn) -> ScalarUDF {
    ScalarUDF::new_from_impl(TextUdf {
        name: name.to_string(),
        f,
        signature: Signature::any(arity, Volatility::Immutable),
    })
}

type TextFn = fn(&[ArrayRef]) -> datafusion::error::Result<ArrayRef>;

#[derive(Debug)]
struct TextUdf {
    name: String,
    f: TextFn,
    signature: Signature,
}

// A function is known by its name: each name is registered once.
impl PartialEq for TextUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for TextUdf {}
impl std::hash::Hash for TextUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        Ok(ColumnarValue::Array((self.f)(&arrays)?))
    }
}

/// `f` over a string column, null in, null out, per distinct value of a dictionary.
fn map_text(a: &ArrayRef, f: impl Fn(&str) -> Option<String>) -> datafusion::error::Result<ArrayRef> {
    per_distinct(a, |v| Ok(Arc::new(v.iter().map(|v| v.and_then(&f)).collect::<StringArray>())))
}

/// A row-wise function of a string column, computed once per distinct value
/// when the column is a dictionary (the lake's strings are) and then spread
/// over the rows. A filtered or joined batch keeps its whole dictionary: map
/// per row when the dictionary is the larger side.
fn per_distinct(
    a: &ArrayRef,
    map: impl Fn(&StringArray) -> datafusion::error::Result<ArrayRef>,
) -> datafusion::error::Result<ArrayRef> {
    let text = |a: &dyn Array| -> datafusion::error::Result<ArrayRef> {
        let values = arrow::compute::cast(a, &DataType::Utf8)?;
        map(values.as_string::<i32>())
    };
    Ok(match a.as_any_dictionary_opt() {
        Some(dict) if dict.values().len() <= dict.keys().len() => {
            arrow::compute::take(&text(dict.values().as_ref())?, dict.keys(), None)?
        }
        _ => text(a.as_ref())?,
    })
}

/// The network a request's caller used: the SQL function `caller_network`, on one row.
pub fn caller_network(source_ip: &str, user_agent: Option<&str>) -> Option<String> {
    if user_agent.is_some_and(|ua| crate::net::relayed_by_aws(source_ip, ua)) {
        return None;
    }
    network_of(source_ip)
}

/// `caller_network(source_ip, user_agent)`: the caller's network, as
/// `ip_network` gives it, or null for a request AWS relayed for its caller
/// (the consoles' backends; `crate::net::relayed_by_aws`), whose address is
/// AWS's. Every judgment of "which networks a credential uses" reads this, so
/// AWS at work is never the credential's new network.
fn caller_networks(args: &[ArrayRef]) -> datafusion::error::Result<ArrayRef> {
    let networks = map_text(&args[0], network_of)?;
    Ok(match relayed_rows(&args[0], &args[1])? {
        Some(relayed) => arrow::compute::nullif(&networks, &relayed)?,
        None => networks,
    })
}

/// Which rows' calls AWS relayed for their caller
/// (`crate::net::relayed_by_aws`, over columns of addresses and user
/// agents), or `None` when no row's agent is a relay's: the rows a caller
/// network leaves out, in SQL (`caller_network`) and in the baselines'
/// scope pass alike.
pub fn relayed_rows(ips: &ArrayRef, agents: &ArrayRef) -> datafusion::error::Result<Option<BooleanArray>> {
    let agents = per_distinct(agents, |v| {
        Ok(Arc::new(v.iter().map(|ua| Some(ua.is_some_and(crate::net::is_aws_relay_agent))).collect::<BooleanArray>()))
    })?;
    let agents = agents.as_boolean();
    // Relay agents are rare: the addresses are read only when one is there.
    if agents.true_count() == 0 {
        return Ok(None);
    }
    let ips = arrow::compute::cast(ips, &DataType::Utf8)?;
    let ips = ips.as_string::<i32>();
    Ok(Some(
        (0..ips.len())
            .map(|i| Some(agents.value(i) && !ips.is_null(i) && crate::net::is_relay_address(ips.value(i))))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use arrow::array::RecordBatch;
    use datafusion::datasource::MemTable;

    use super::*;

    #[test]
    fn networks_and_prefixes() {
        assert_eq!(network_of("10.1.2.3").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(network_of("2001:db8:1:2:3::9").as_deref(), Some("2001:db8:1:2::/64"));
        assert_eq!(network_of("not an ip"), None);
        // Padded octets are the same address, so the same network.
        assert_eq!(network_of("035.249.253.232"), network_of("35.249.253.232"));
        assert_eq!(network_of("035.249.253.232").as_deref(), Some("35.249.253.0/24"));
        assert_eq!(resource_prefix("s3://team-data/in/0001.parquet").as_deref(), Some("s3://team-data/in/"));
        assert_eq!(resource_prefix("s3://team-data/in/").as_deref(), Some("s3://team-data/in/"));
        assert_eq!(resource_prefix("s3://finance/2026/q/x.csv").as_deref(), Some("s3://finance/2026/"));
        assert_eq!(resource_prefix("github://acme/payments/README.md").as_deref(), Some("github://acme/payments/"));
        assert_eq!(resource_prefix("github://acme/payments").as_deref(), Some("github://acme/"));
        assert_eq!(resource_prefix("k8s://prod/pod-7f9c").as_deref(), Some("k8s://prod/"));
        assert_eq!(resource_prefix("jira://SUP").as_deref(), Some("jira://"));
        assert_eq!(resource_prefix("plain-name"), None);
        assert_eq!(resource_prefix("arn:aws:s3:::bucket/key/x").as_deref(), Some("arn:aws:s3:::bucket/key/"));
        assert_eq!(resource_prefix(" "), None);
    }

    /// The dictionary fast path of `ip_network` gives what the per-row path
    /// gives, nulls and unparseable values included.
    #[tokio::test]
    async fn text_udf_maps_dictionaries_like_strings() {
        use arrow::array::{DictionaryArray, StringArray};
        use arrow::datatypes::{Field, Int32Type, Schema};
        let ips = [Some("10.1.2.3"), None, Some("10.1.2.99"), Some("junk"), Some("2001:db8:1:2::7"), Some("10.1.2.3")];
        let dict: DictionaryArray<Int32Type> = ips.iter().copied().collect();
        let plain: StringArray = ips.iter().copied().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", dict.data_type().clone(), true),
            Field::new("p", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(dict), Arc::new(plain)]).unwrap();
        let ctx = SessionContext::new();
        register_all(&ctx);
        let want: Vec<Option<String>> = ips.iter().map(|v| v.and_then(network_of)).collect();
        // Whole, the dictionary is mapped per value; sliced to two rows it
        // keeps all five values and is mapped per row.
        for (rows, want) in [(6, &want[..]), (2, &want[..2])] {
            let table = MemTable::try_new(schema.clone(), vec![vec![batch.slice(0, rows)]]).unwrap();
            ctx.deregister_table("t").unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
            let out =
                ctx.sql("SELECT ip_network(d) AS a, ip_network(p) AS b FROM t").await.unwrap().collect().await.unwrap();
            let (a, b) = (out[0].column(0).as_string::<i32>(), out[0].column(1).as_string::<i32>());
            assert_eq!(a.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>(), want);
            assert_eq!(b.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>(), want);
        }
        assert_eq!(want[0].as_deref(), Some("10.1.2.0/24"));
        assert_eq!(want[3], None);
    }

    /// `caller_network` over the lake's dictionary columns and over plain
    /// strings: AWS's relays from inside AWS have no network; the same agent
    /// from the internet, and every other call, keep theirs.
    #[tokio::test]
    async fn caller_network_drops_only_the_relays_of_aws() {
        use arrow::array::DictionaryArray;
        use arrow::datatypes::{Field, Int32Type, Schema};
        let console = "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488]";
        let rows = [
            (Some("10.8.8.10"), Some(console), None),
            (Some("10.8.8.10"), Some("aws-cli/2"), Some("10.8.8.0/24")),
            (Some("203.0.113.7"), Some(console), Some("203.0.113.0/24")),
            (Some("10.248.16.43"), Some("AWS Internal"), None),
            (Some("198.51.100.4"), None, Some("198.51.100.0/24")),
            (None, Some(console), None),
        ];
        let ip_d: DictionaryArray<Int32Type> = rows.iter().map(|r| r.0).collect();
        let ua_d: DictionaryArray<Int32Type> = rows.iter().map(|r| r.1).collect();
        let ip_p: StringArray = rows.iter().map(|r| r.0).collect();
        let ua_p: StringArray = rows.iter().map(|r| r.1).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("ip_d", ip_d.data_type().clone(), true),
            Field::new("ua_d", ua_d.data_type().clone(), true),
            Field::new("ip_p", DataType::Utf8, true),
            Field::new("ua_p", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![Arc::new(ip_d), Arc::new(ua_d), Arc::new(ip_p), Arc::new(ua_p)];
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let ctx = SessionContext::new();
        register_all(&ctx);
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let sql = "SELECT caller_network(ip_d, ua_d), caller_network(ip_p, ua_p), caller_network(ip_d, ua_p) FROM t";
        let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let want: Vec<Option<String>> = rows.iter().map(|r| r.2.map(str::to_string)).collect();
        for c in 0..3 {
            let got: Vec<Option<String>> =
                out[0].column(c).as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect();
            assert_eq!(got, want, "column {c}");
        }
        let direct: Vec<Option<String>> = rows.iter().map(|r| r.0.and_then(|ip| caller_network(ip, r.1))).collect();
        assert_eq!(direct, want);
    }

    /// `scope_value` gives each row the value of its own dimension, derived
    /// as baselines derive it, whatever order the dimensions come in; null
    /// for the hour, an unknown dimension or a null one.
    #[tokio::test]
    async fn scope_value_reads_each_rows_own_dimension() {
        use arrow::array::DictionaryArray;
        use arrow::datatypes::{Field, Int32Type, Schema};
        let console = "[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.488]";
        // dimension, source_ip, user_agent, resource, expected
        let rows = [
            (Some("model"), "10.0.0.1", "sdk", "s3://a/b/c", Some("m0")),
            (Some("network"), "10.0.0.1", "sdk", "s3://a/b/c", Some("10.0.0.0/24")),
            (Some("resource_prefix"), "10.0.0.1", "sdk", "s3://a/b/c", Some("s3://a/b/")),
            (Some("network"), "10.9.9.9", console, "x", None),
            (Some("hour"), "10.0.0.1", "sdk", "x", None),
            (Some("tool"), "10.0.0.1", "sdk", "x", Some("t5")),
            (None, "10.0.0.1", "sdk", "x", None),
            (Some("nonsense"), "10.0.0.1", "sdk", "x", None),
            (Some("user_agent"), "10.0.0.1", "sdk", "x", Some("sdk")),
            (Some("region"), "10.0.0.1", "sdk", "x", Some("r9")),
            (Some("action"), "10.0.0.1", "sdk", "x", Some("a10")),
            (Some("model"), "10.0.0.1", "sdk", "x", Some("m11")),
        ];
        let n = rows.len();
        let dict = |f: &dyn Fn(usize) -> String| -> ArrayRef {
            let values: Vec<String> = (0..n).map(f).collect();
            Arc::new(values.iter().map(|v| Some(v.as_str())).collect::<DictionaryArray<Int32Type>>())
        };
        let cols: Vec<ArrayRef> = vec![
            Arc::new(rows.iter().map(|r| r.0).collect::<StringArray>()),
            dict(&|i| rows[i].1.to_string()),
            dict(&|i| rows[i].2.to_string()),
            dict(&|i| format!("m{i}")),
            dict(&|i| format!("t{i}")),
            dict(&|i| format!("a{i}")),
            Arc::new(rows.iter().map(|r| Some(r.3)).collect::<StringArray>()),
            dict(&|i| format!("r{i}")),
        ];
        let names = ["dimension", "source_ip", "user_agent", "model", "tool", "action", "resource", "region"];
        let schema = Arc::new(Schema::new(
            names.iter().zip(&cols).map(|(n, c)| Field::new(*n, c.data_type().clone(), true)).collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let ctx = SessionContext::new();
        register_all(&ctx);
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap())).unwrap();
        let sql = format!("SELECT scope_value({}) FROM t", names.join(", "));
        let out = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
        let got: Vec<Option<String>> =
            out[0].column(0).as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect();
        let want: Vec<Option<String>> = rows.iter().map(|r| r.4.map(str::to_string)).collect();
        assert_eq!(got, want);
        // The columns it takes are the baselines' text dimensions, in order.
        let text: Vec<&str> = SCOPE_DIMENSIONS[..SCOPE_TEXT].iter().map(|d| d.column).collect();
        assert_eq!(text, names[1..]);
    }

    #[test]
    fn robust_z_is_mad_scaled() {
        assert_eq!(robust_z(10.0, 4.0, 2.0), Some(6.0 / (1.4826 * 2.0)));
        assert_eq!(robust_z(4.0, 4.0, 0.0), None);
    }

    #[test]
    fn cidr_membership() {
        assert!(ip_in_cidr("10.1.2.3", "10.0.0.0/8"));
        assert!(!ip_in_cidr("11.1.2.3", "10.0.0.0/8"));
        assert!(ip_in_cidr("192.168.1.77", "192.168.1.64/26"));
        assert!(!ip_in_cidr("192.168.1.128", "192.168.1.64/26"));
        assert!(ip_in_cidr("203.0.113.9", "203.0.113.9"));
        assert!(ip_in_cidr("8.8.8.8", "0.0.0.0/0"));
        assert!(ip_in_cidr("2001:db8::1", "2001:db8::/32"));
        assert!(!ip_in_cidr("2001:db9::1", "2001:db8::/32"));
        assert!(ip_in_cidr("::ffff:10.0.0.1", "10.0.0.0/8"));
        assert!(ip_in_cidr("10.0.0.1", "::ffff:10.0.0.0/104"));
        assert!(ip_in_cidr("035.249.253.232", "35.249.253.0/24") && ip_in_cidr("35.249.253.232", "035.249.253.0/24"));
        for (ip, cidr) in [("nonsense", "10.0.0.0/8"), ("10.0.0.1", "10.0.0.0/33"), ("10.0.0.1", "ten/8"), ("", "")] {
            assert!(!ip_in_cidr(ip, cidr), "{ip} in {cidr}");
        }
    }

    async fn one_row(sql: &str) -> RecordBatch {
        let ctx = SessionContext::new();
        ctx.register_udf(robust_z_udf());
        ctx.register_udf(ip_in_cidr_udf());
        let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1, "{sql}");
        b.into_iter().find(|b| b.num_rows() == 1).unwrap()
    }

    #[tokio::test]
    async fn udfs_in_sql() {
        let b = one_row(
            "SELECT robust_z(10, 4, 2) AS z, robust_z(1, 1, 0) AS flat, robust_z(NULL, 1, 1) AS none, \
             ip_in_cidr('10.9.8.7', '10.0.0.0/8') AS inside, ip_in_cidr(arrow_cast('fe80::1', \
             'Dictionary(Int32, Utf8)'), '10.0.0.0/8') AS dict_outside, ip_in_cidr('x', 'y') AS junk, \
             ip_in_cidr(NULL, '10.0.0.0/8') AS null_ip",
        )
        .await;
        let f = |name: &str| b.column_by_name(name).unwrap().clone();
        let z = f("z");
        assert!((z.as_primitive::<Float64Type>().value(0) - 6.0 / 2.9652).abs() < 1e-12);
        assert!(f("flat").is_null(0) && f("none").is_null(0) && f("null_ip").is_null(0));
        assert!(f("inside").as_boolean().value(0));
        assert!(!f("dict_outside").as_boolean().value(0));
        assert!(!f("junk").as_boolean().value(0));
    }
}
