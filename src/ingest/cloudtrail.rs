//! AWS CloudTrail records → canonical events, mapped the way an analyst reads them.

use std::borrow::Cow;

use serde_json::Value;

use crate::pattern::name_matches;
use crate::schema::{Action, Event, Rejected};
use crate::time::parse_ts;

/// Whether a record looks like CloudTrail (for detecting JSON-lines exports).
pub fn looks_like_cloudtrail(v: &Value) -> bool {
    v.get("eventName").is_some() || (v.get("eventSource").is_some() && v.get("eventVersion").is_some())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(k)?;
    }
    cur.as_str().filter(|s| !s.is_empty())
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    crate::ingest::gateway::truncate(&s, 64).to_string()
}

/// The fields of a record that the mapping reads, however it was parsed.
/// Strings are borrowed from the record's text where JSON allows it.
#[derive(Default)]
struct Fields<'a> {
    event_name: Option<Cow<'a, str>>,
    event_time: Option<Cow<'a, str>>,
    event_source: Option<Cow<'a, str>>,
    event_id: Option<Cow<'a, str>>,
    aws_request_id: Option<Cow<'a, str>>,
    read_only: Option<bool>,
    error_code: Option<Cow<'a, str>>,
    region: Option<Cow<'a, str>>,
    source_ip: Option<Cow<'a, str>>,
    user_agent: Option<Cow<'a, str>>,
    recipient_account: Option<Cow<'a, str>>,
    /// Whether `userIdentity` is an object at all.
    has_identity: bool,
    id_type: Option<Cow<'a, str>>,
    id_arn: Option<Cow<'a, str>>,
    id_access_key: Option<Cow<'a, str>>,
    id_account: Option<Cow<'a, str>>,
    id_invoked_by: Option<Cow<'a, str>>,
    id_principal_id: Option<Cow<'a, str>>,
    id_issuer_arn: Option<Cow<'a, str>>,
    /// The first ARN under `resources`.
    resource_arn: Option<Cow<'a, str>>,
    params: Option<Params<'a>>,
}

/// What `requestParameters` (an object) says about the call.
#[derive(Default)]
struct Params<'a> {
    bucket: Option<Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
    model: Option<Cow<'a, str>>,
    /// The first of [`RESOURCE_PARAMS`] present, else the first instance id.
    named: Option<Cow<'a, str>>,
    /// The object as compact JSON, capped.
    detail: Cow<'a, str>,
}

/// Maps one record. The rule: a record with an `eventName` and a parseable
/// `eventTime` is ingested, its missing optional fields as nulls; any other
/// is rejected with the reason.
///
/// `credential_id` is the access key id; without one it falls back to the
/// identity ARN, then the invoking AWS service, the principal id, the
/// account (`account:<id>`), and finally `anonymous` for records with no
/// identity at all. Temporary keys (`ASIA…`) change with every session, so
/// for them the credential is the identity behind the session (an assumed
/// role's role ARN, a user's ARN) and the key goes into `session_id`
/// (`<role session name>/<key>`): baselines then follow the role, and one
/// session key seen from a second address can still be told apart.
pub fn map_record(v: &Value) -> Result<Event<'_>, Rejected> {
    if !v.is_object() {
        return Err(Rejected(format!("not a CloudTrail record: expected an object, got {}", shown(v))));
    }
    match v.get("eventName") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(other) => return Err(Rejected(format!("eventName {} is not a name", shown(other)))),
        None => return Err(Rejected::new("missing eventName")),
    }
    match v.get("eventTime") {
        Some(Value::String(_)) => {}
        Some(Value::Null) | None => return Err(Rejected::new("missing eventTime")),
        Some(other) => return Err(Rejected(format!("eventTime {} is not a timestamp", shown(other)))),
    }
    fn b(s: Option<&str>) -> Option<Cow<'_, str>> {
        s.map(Cow::Borrowed)
    }
    let ident = v.get("userIdentity").filter(|i| i.is_object());
    let id = |path: &[&str]| b(ident.and_then(|i| str_at(i, path)));
    let params = v.get("requestParameters").filter(|p| p.is_object()).map(|p| Params {
        bucket: b(str_at(p, &["bucketName"])),
        key: b(str_at(p, &["key"])),
        model: b(str_at(p, &["modelId"]).or_else(|| str_at(p, &["modelIdentifier"]))),
        named: b(RESOURCE_PARAMS.iter().find_map(|k| str_at(p, &[k])).or_else(|| {
            let ids = p.get("instancesSet")?.get("items")?.as_array()?;
            ids.iter().find_map(|i| str_at(i, &["instanceId"]))
        })),
        detail: Cow::Owned(capped(p.to_string())),
    });
    let resource_arn = v
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|rs| rs.iter().find_map(|r| str_at(r, &["ARN"]).or_else(|| str_at(r, &["arn"]))));
    build(Fields {
        event_name: b(str_at(v, &["eventName"])),
        event_time: b(str_at(v, &["eventTime"])).or(Some(Cow::Borrowed(""))),
        event_source: b(str_at(v, &["eventSource"])),
        event_id: b(str_at(v, &["eventID"])),
        aws_request_id: b(str_at(v, &["requestID"])),
        read_only: v.get("readOnly").and_then(Value::as_bool),
        error_code: b(str_at(v, &["errorCode"])),
        region: b(str_at(v, &["awsRegion"])),
        source_ip: b(str_at(v, &["sourceIPAddress"])),
        user_agent: b(str_at(v, &["userAgent"])),
        recipient_account: b(str_at(v, &["recipientAccountId"])),
        has_identity: ident.is_some(),
        id_type: id(&["type"]),
        id_arn: id(&["arn"]),
        id_access_key: id(&["accessKeyId"]),
        id_account: id(&["accountId"]),
        id_invoked_by: id(&["invokedBy"]),
        id_principal_id: id(&["principalId"]),
        id_issuer_arn: id(&["sessionContext", "sessionIssuer", "arn"]),
        resource_arn: b(resource_arn),
        params,
    })
}

/// [`map_record`] straight from a record's text, without building a
/// `serde_json::Value`: the fields are deserialised into borrowed structs.
/// A record of unusual shape (a field of an unexpected type, say) takes the
/// `Value` path, so both give the same event or the same reason.
pub fn map_text(text: &str) -> Result<Event<'_>, Rejected> {
    if let Some(fields) = typed::fields(text) {
        return build(fields);
    }
    let v: Value = serde_json::from_str(text).map_err(|e| Rejected(format!("not JSON: {e}")))?;
    map_record(&v).map(into_owned)
}

fn into_owned(e: Event<'_>) -> Event<'static> {
    fn o(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
        c.map(|c| Cow::Owned(c.into_owned()))
    }
    Event {
        ts_ms: e.ts_ms,
        request_id: o(e.request_id),
        credential_id: Cow::Owned(e.credential_id.into_owned()),
        principal: o(e.principal),
        session_id: o(e.session_id),
        source_ip: o(e.source_ip),
        user_agent: o(e.user_agent),
        provider: o(e.provider),
        model: o(e.model),
        action: e.action,
        tool: o(e.tool),
        resource: o(e.resource),
        status: e.status,
        error_code: o(e.error_code),
        latency_ms: e.latency_ms,
        tokens_in: e.tokens_in,
        tokens_out: e.tokens_out,
        cost_usd: e.cost_usd,
        region: o(e.region),
        account_id: o(e.account_id),
        detail: o(e.detail),
    }
}

/// A part of a borrowed-or-owned string, borrowed when the string is.
fn part<'a>(c: &Cow<'a, str>, f: impl Fn(&str) -> &str) -> Cow<'a, str> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(f(s)),
        Cow::Owned(s) => Cow::Owned(f(s).to_string()),
    }
}

/// The mapping itself, shared by both parsers.
fn build(f: Fields<'_>) -> Result<Event<'_>, Rejected> {
    let Some(event_name) = f.event_name else { return Err(Rejected::new("missing eventName")) };
    let time = f.event_time.unwrap_or_default();
    let ts_ms = parse_ts(&time)
        .ok_or_else(|| Rejected(format!("eventTime {} is not a timestamp", shown(&Value::from(&*time)))))?;
    let account = f.recipient_account.or_else(|| f.id_account.clone());
    let arn = f.id_arn;
    let is_assumed =
        f.id_type.as_deref() == Some("AssumedRole") || arn.as_deref().is_some_and(|a| a.contains(":assumed-role/"));
    let principal = if is_assumed {
        f.id_issuer_arn.or_else(|| arn.clone())
    } else {
        arn.clone().or_else(|| f.id_invoked_by.clone())
    };
    let session_name =
        if is_assumed { arn.as_ref().map(|a| part(a, |a| a.rsplit('/').next().unwrap_or(a))) } else { None };
    let temporary = f.id_access_key.as_deref().is_some_and(|k| k.starts_with("ASIA"));
    let (credential_id, session_id): (Cow<'_, str>, Option<Cow<'_, str>>) = match (&f.id_access_key, &principal) {
        (Some(key), Some(p)) if temporary => {
            let session = match &session_name {
                Some(name) => Cow::Owned(format!("{name}/{key}")),
                None => key.clone(),
            };
            (p.clone(), Some(session))
        }
        _ => {
            let cred = match f.id_access_key.or(arn).or(f.id_invoked_by).or(f.id_principal_id) {
                Some(s) => s,
                None => match &account {
                    Some(a) if f.has_identity => Cow::Owned(format!("account:{a}")),
                    _ => Cow::Borrowed("anonymous"),
                },
            };
            (cred, session_name)
        }
    };

    let service = f.event_source.as_ref().map(|s| part(s, |s| s.strip_suffix(".amazonaws.com").unwrap_or(s)));
    let tool: Cow<'_, str> = match &service {
        Some(svc) => Cow::Owned(format!("{svc}:{event_name}")),
        None => event_name.clone(),
    };
    let bedrock = service.as_deref().is_some_and(|s| s.starts_with("bedrock"));
    let action = classify(service.as_deref().unwrap_or(""), &event_name, f.read_only);
    let status = Some(f.error_code.as_deref().map_or(200, status_of_error));
    let (model, resource, detail) = match f.params {
        Some(p) => {
            let resource = match (p.bucket, p.key) {
                (Some(bucket), Some(key)) => Some(Cow::Owned(format!("s3://{bucket}/{key}"))),
                (Some(bucket), None) => Some(Cow::Owned(format!("s3://{bucket}/"))),
                (None, _) => f.resource_arn.or(p.named),
            };
            (p.model, resource, Some(p.detail))
        }
        None => (None, f.resource_arn, None),
    };

    Ok(Event {
        ts_ms,
        // AWS's request id, which Bedrock's model-invocation log shares, so
        // the two logs of one call join; CloudTrail's own event id otherwise.
        request_id: f.aws_request_id.or(f.event_id),
        credential_id,
        principal,
        session_id,
        // Stored unpadded, so every reader (grouping, `=`, networks) sees one
        // address however the log wrote it; anything else is kept as written
        // (a service's name, `AWS Internal`).
        source_ip: f.source_ip.map(|ip| crate::net::unpadded(&ip).map_or(ip, Cow::Owned)),
        user_agent: f.user_agent,
        provider: Some(Cow::Borrowed(if bedrock { "bedrock" } else { "aws" })),
        model,
        action: Some(action),
        tool: Some(tool),
        resource,
        status,
        error_code: f.error_code,
        latency_ms: None,
        tokens_in: None,
        tokens_out: None,
        cost_usd: None,
        region: f.region,
        account_id: account,
        detail,
    })
}

/// Typed, borrowing deserialisation of the fields [`build`] reads.
mod typed {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::{Fields, Params, capped};

    type S<'a> = Option<Cow<'a, str>>;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Record<'a> {
        #[serde(borrow)]
        event_name: S<'a>,
        #[serde(borrow)]
        event_time: Option<&'a RawValue>,
        #[serde(borrow)]
        event_source: S<'a>,
        #[serde(borrow, rename = "eventID")]
        event_id: S<'a>,
        #[serde(borrow, rename = "requestID")]
        request_id: S<'a>,
        read_only: Option<bool>,
        #[serde(borrow)]
        error_code: S<'a>,
        #[serde(borrow)]
        aws_region: S<'a>,
        #[serde(borrow, rename = "sourceIPAddress")]
        source_ip: S<'a>,
        #[serde(borrow)]
        user_agent: S<'a>,
        #[serde(borrow)]
        recipient_account_id: S<'a>,
        #[serde(borrow)]
        user_identity: Option<Identity<'a>>,
        #[serde(borrow)]
        request_parameters: Option<&'a RawValue>,
        #[serde(borrow)]
        resources: Option<Vec<Resource<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Identity<'a> {
        #[serde(borrow, rename = "type")]
        kind: S<'a>,
        #[serde(borrow)]
        arn: S<'a>,
        #[serde(borrow)]
        access_key_id: S<'a>,
        #[serde(borrow)]
        account_id: S<'a>,
        #[serde(borrow)]
        invoked_by: S<'a>,
        #[serde(borrow)]
        principal_id: S<'a>,
        #[serde(borrow)]
        session_context: Option<SessionContext<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SessionContext<'a> {
        #[serde(borrow)]
        session_issuer: Option<Issuer<'a>>,
    }

    #[derive(Deserialize)]
    struct Issuer<'a> {
        #[serde(borrow)]
        arn: S<'a>,
    }

    #[derive(Deserialize)]
    struct Resource<'a> {
        #[serde(borrow, rename = "ARN")]
        upper: S<'a>,
        #[serde(borrow)]
        arn: S<'a>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct RequestParameters<'a> {
        #[serde(borrow)]
        bucket_name: S<'a>,
        #[serde(borrow)]
        key: S<'a>,
        #[serde(borrow)]
        model_id: S<'a>,
        #[serde(borrow)]
        model_identifier: S<'a>,
        #[serde(borrow)]
        role_arn: S<'a>,
        #[serde(borrow)]
        policy_arn: S<'a>,
        #[serde(borrow)]
        resource_arn: S<'a>,
        #[serde(borrow)]
        secret_id: S<'a>,
        #[serde(borrow)]
        guardrail_identifier: S<'a>,
        #[serde(borrow)]
        function_name: S<'a>,
        #[serde(borrow)]
        key_id: S<'a>,
        #[serde(borrow)]
        trail_name: S<'a>,
        #[serde(borrow)]
        name: S<'a>,
        #[serde(borrow)]
        role_name: S<'a>,
        #[serde(borrow)]
        user_name: S<'a>,
        #[serde(borrow)]
        group_name: S<'a>,
        #[serde(borrow)]
        policy_name: S<'a>,
        #[serde(borrow)]
        instance_id: S<'a>,
        #[serde(borrow)]
        log_group_name: S<'a>,
        #[serde(borrow)]
        table_name: S<'a>,
        #[serde(borrow)]
        queue_url: S<'a>,
        #[serde(borrow)]
        topic_arn: S<'a>,
        #[serde(borrow)]
        instances_set: Option<InstancesSet<'a>>,
    }

    #[derive(Deserialize)]
    struct InstancesSet<'a> {
        #[serde(borrow)]
        items: Option<Vec<Instance<'a>>>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Instance<'a> {
        #[serde(borrow)]
        instance_id: S<'a>,
    }

    /// Empty strings count as absent, as in the `Value` path.
    fn ne(s: S<'_>) -> S<'_> {
        s.filter(|s| !s.is_empty())
    }

    /// The fields, or `None` when the record has a shape this fast path
    /// does not take (the caller then uses the `Value` path).
    pub(super) fn fields(text: &str) -> Option<Fields<'_>> {
        let r: Record<'_> = serde_json::from_str(text).ok()?;
        // Rejections with their reasons are the Value path's job.
        r.event_name.as_deref().filter(|n| !n.is_empty())?;
        let time = r.event_time.map(RawValue::get).filter(|t| t.starts_with('"'))?;
        let event_time: Cow<'_, str> = if time.contains('\\') {
            Cow::Owned(serde_json::from_str::<String>(time).ok()?)
        } else {
            Cow::Borrowed(&time[1..time.len() - 1])
        };
        let params = match r.request_parameters.map(RawValue::get) {
            Some(raw) if raw.starts_with('{') => {
                let p: RequestParameters<'_> = serde_json::from_str(raw).ok()?;
                let named = [
                    p.role_arn,
                    p.policy_arn,
                    p.resource_arn,
                    p.secret_id,
                    p.guardrail_identifier,
                    p.model_id.clone(),
                    p.function_name,
                    p.key_id,
                    p.trail_name,
                    p.name,
                    p.role_name,
                    p.user_name,
                    p.group_name,
                    p.policy_name,
                    p.instance_id,
                    p.log_group_name,
                    p.table_name,
                    p.queue_url,
                    p.topic_arn,
                ]
                .into_iter()
                .find_map(ne)
                .or_else(|| p.instances_set?.items?.into_iter().find_map(|i| ne(i.instance_id)));
                // Delivery files are compact; anything else is compacted like the Value path.
                let detail = if raw.bytes().any(|b| matches!(b, b'\n' | b'\r' | b'\t')) || raw.contains("\": ") {
                    Cow::Owned(capped(serde_json::from_str::<serde_json::Value>(raw).ok()?.to_string()))
                } else if raw.len() > super::DETAIL_BYTES {
                    Cow::Owned(capped(raw.to_string()))
                } else {
                    Cow::Borrowed(raw)
                };
                Some(Params {
                    bucket: ne(p.bucket_name),
                    key: ne(p.key),
                    model: ne(p.model_id).or(ne(p.model_identifier)),
                    named,
                    detail,
                })
            }
            _ => None,
        };
        let ident = r.user_identity;
        let has_identity = ident.is_some();
        let (kind, arn, key, account, invoked_by, principal_id, issuer) = match ident {
            Some(i) => (
                ne(i.kind),
                ne(i.arn),
                ne(i.access_key_id),
                ne(i.account_id),
                ne(i.invoked_by),
                ne(i.principal_id),
                ne(i.session_context.and_then(|c| c.session_issuer).and_then(|s| s.arn)),
            ),
            None => Default::default(),
        };
        let resource_arn = r.resources.and_then(|rs| rs.into_iter().find_map(|x| ne(x.upper).or_else(|| ne(x.arn))));
        Some(Fields {
            event_name: ne(r.event_name),
            event_time: Some(event_time),
            event_source: ne(r.event_source),
            event_id: ne(r.event_id),
            aws_request_id: ne(r.request_id),
            read_only: r.read_only,
            error_code: ne(r.error_code),
            region: ne(r.aws_region),
            source_ip: ne(r.source_ip),
            user_agent: ne(r.user_agent),
            recipient_account: ne(r.recipient_account_id),
            has_identity,
            id_type: kind,
            id_arn: arn,
            id_access_key: key,
            id_account: account,
            id_invoked_by: invoked_by,
            id_principal_id: principal_id,
            id_issuer_arn: issuer,
            resource_arn,
            params,
        })
    }
}

/// Whether a secret found in a CloudTrail record is AWS's own record rather
/// than a leak: ingest still redacts it but names no suspect for it. `field`
/// is the JSON path of the value that held it, `kind` the secret's kind.
///
/// - A session token under `responseElements`. CloudTrail logs what a call
///   that issues temporary credentials returned (AssumeRole and its SAML and
///   web-identity forms, GetSessionToken, GetFederationToken, Cognito's
///   GetCredentialsForIdentity, …): the access key id and session token, but
///   never the secret access key, and a session token cannot sign a request
///   without it. The rule is where the token sits, not which call made it:
///   a response that carries a session token is an issuance, whatever its
///   name. A secret key, or any other kind, in a response is still a leak,
///   and so is a token in the request or the user agent.
/// - Any secret in a call made by an AWS service (`userIdentity.type`
///   `AWSService`, or `invokedBy` a `*.amazonaws.com` service): both are set
///   by AWS, and a service holds no key anyone could leak. Names the caller
///   chooses (a role session name inside the ARN or principal id) are not
///   trusted for this, or a session named `x.amazonaws.com` would hide a leak.
///
/// No note is kept either: such records come with every role assumption of
/// ordinary traffic, and a note per record would be volume without signal.
pub fn aws_own_secret(record: &Value, field: Option<&str>, kind: &str) -> bool {
    let issued = kind == crate::secrets::AWS_SESSION_TOKEN && field.is_some_and(|f| f.starts_with("responseElements."));
    let id = |k: &str| record.get("userIdentity").and_then(|i| i.get(k)).and_then(Value::as_str);
    issued || id("type") == Some("AWSService") || id("invokedBy").is_some_and(is_service)
}

/// Whether `name` is an AWS service principal (`ec2.amazonaws.com`).
fn is_service(name: &str) -> bool {
    let host = name.strip_suffix(".amazonaws.com").or_else(|| name.strip_suffix(".amazonaws.com.cn"));
    host.is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
}

const DETAIL_BYTES: usize = 8 << 10;

fn capped(s: String) -> String {
    if s.len() <= DETAIL_BYTES {
        return s;
    }
    format!("{}…", crate::ingest::gateway::truncate(&s, DETAIL_BYTES))
}

/// (service or `*`, event-name pattern, action): first match wins.
const ACTION_RULES: &[(&str, &str, Action)] = &[
    // Inference.
    ("bedrock*", "InvokeModel*", Action::Inference),
    ("bedrock*", "Converse*", Action::Inference),
    ("bedrock-agent-runtime", "InvokeAgent*", Action::Inference),
    ("bedrock-agent-runtime", "Retrieve*", Action::Inference),
    // Authentication and credential issuance.
    ("sts", "*", Action::Auth),
    ("signin", "*", Action::Auth),
    ("sso", "*", Action::Auth),
    ("sso-oidc", "*", Action::Auth),
    ("*", "ConsoleLogin", Action::Auth),
    ("*", "*Login*", Action::Auth),
    ("iam", "CreateAccessKey", Action::Admin),
    // Identity, organisation and security posture: admin whatever the verb
    // for writes; reads of them are reads.
    ("iam", "Get*", Action::Read),
    ("iam", "List*", Action::Read),
    ("iam", "Generate*", Action::Read),
    ("iam", "Simulate*", Action::Read),
    ("iam", "*", Action::Admin),
    ("organizations", "Describe*", Action::Read),
    ("organizations", "List*", Action::Read),
    ("organizations", "*", Action::Admin),
    ("*", "*ModelInvocationLogging*", Action::Admin),
    ("*", "*Guardrail*", Action::Admin),
    ("*", "*FoundationModelAgreement*", Action::Admin),
    ("*", "PutUseCaseForModelAccess", Action::Admin),
    ("*", "PutFoundationModelEntitlement", Action::Admin),
    ("*", "Put*Policy", Action::Admin),
    ("*", "Delete*Policy", Action::Admin),
    ("*", "*Permission*", Action::Admin),
    ("cloudtrail", "StopLogging", Action::Admin),
    ("cloudtrail", "DeleteTrail", Action::Admin),
    ("cloudtrail", "UpdateTrail", Action::Admin),
    ("cloudtrail", "PutEventSelectors", Action::Admin),
    ("guardduty", "Delete*", Action::Admin),
    ("guardduty", "Disable*", Action::Admin),
    ("guardduty", "Update*", Action::Admin),
    ("securityhub", "Disable*", Action::Admin),
    ("config", "Delete*", Action::Admin),
    ("config", "Stop*", Action::Admin),
    ("kms", "ScheduleKeyDeletion", Action::Admin),
    ("kms", "DisableKey*", Action::Admin),
    ("*", "*EbsEncryptionByDefault", Action::Admin),
];

const READ_PREFIXES: &[&str] = &[
    "Get", "List", "Describe", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet", "Select", "Check", "Estimate",
    "Validate",
];

/// The coarse action of an API call: table-driven rules, then the record's
/// own `readOnly`, then the verb.
pub fn classify(service: &str, event_name: &str, read_only: Option<bool>) -> Action {
    if let Some((_, _, a)) =
        ACTION_RULES.iter().find(|(svc, name, _)| name_matches(svc, service) && name_matches(name, event_name))
    {
        return *a;
    }
    match read_only {
        Some(true) => Action::Read,
        Some(false) => Action::Write,
        None if READ_PREFIXES.iter().any(|p| event_name.starts_with(p)) => Action::Read,
        None => Action::Write,
    }
}

/// (error-code pattern, HTTP status): first match wins; unknown codes are 400.
const STATUS_RULES: &[(&str, u16)] = &[
    ("UnrecognizedClientException", 401),
    ("InvalidClientTokenId", 401),
    ("ExpiredToken*", 401),
    ("SignatureDoesNotMatch", 401),
    ("AuthFailure", 401),
    ("InvalidAccessKeyId", 401),
    ("IncompleteSignature", 401),
    ("MissingAuthenticationToken", 401),
    ("*AccessDenied*", 403),
    ("*Unauthorized*", 403),
    ("*Forbidden*", 403),
    ("OptInRequired", 403),
    ("Throttling*", 429),
    ("TooManyRequests*", 429),
    ("RequestLimitExceeded", 429),
    ("SlowDown", 429),
    ("*LimitExceeded*", 429),
    ("*NotFound*", 404),
    ("NoSuch*", 404),
    ("*AlreadyExists*", 409),
    ("*Conflict*", 409),
    ("ServiceUnavailable*", 503),
    ("InternalError", 500),
    ("InternalFailure", 500),
    ("InternalServer*", 500),
    ("*ServiceException", 500),
];

/// An HTTP-like status for a CloudTrail `errorCode`.
pub fn status_of_error(code: &str) -> u16 {
    let code = code.strip_prefix("Client.").or_else(|| code.strip_prefix("Server.")).unwrap_or(code);
    STATUS_RULES.iter().find(|(p, _)| name_matches(p, code)).map_or(400, |(_, s)| *s)
}

/// Request parameters that name what a call touched, most specific first.
const RESOURCE_PARAMS: &[&str] = &[
    "roleArn",
    "policyArn",
    "resourceArn",
    "secretId",
    "guardrailIdentifier",
    "modelId",
    "functionName",
    "keyId",
    "trailName",
    "name",
    "roleName",
    "userName",
    "groupName",
    "policyName",
    "instanceId",
    "logGroupName",
    "tableName",
    "queueUrl",
    "topicArn",
];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Read;

    fn fixture() -> (Vec<Value>, Vec<Value>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/panther/");
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(format!("{dir}cloudtrail.json.gz")).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let labels = std::fs::read_to_string(format!("{dir}cloudtrail.labels.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (doc["Records"].as_array().unwrap().clone(), labels)
    }

    #[test]
    fn panther_records_ingest_exactly_when_labelled_ingestable() {
        let (records, labels) = fixture();
        assert_eq!(records.len(), 239);
        let mut ok = 0;
        for (r, l) in records.iter().zip(&labels) {
            let res = map_record(r);
            assert_eq!(res.is_ok(), l["ingestable"] == true, "record {}: {:?}", l["index"], res.err());
            ok += res.is_ok() as usize;
            if let Ok(e) = res {
                assert!(!e.credential_id.is_empty());
            }
        }
        assert_eq!(ok, 223);
    }

    fn base() -> Value {
        json!({
            "eventVersion": "1.08", "eventTime": "2024-03-01T10:00:00Z", "eventSource": "s3.amazonaws.com",
            "eventName": "GetObject", "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.7",
            "userAgent": "aws-cli/2", "recipientAccountId": "111122223333",
            "userIdentity": {"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/etl", "accessKeyId": "AKIAEXAMPLE0000001", "accountId": "111122223333"},
            "requestParameters": {"bucketName": "finance", "key": "q3.csv"}
        })
    }

    #[test]
    fn iam_user_s3_read() {
        let v = base();
        let e = map_record(&v).unwrap();
        assert_eq!(e.credential_id, "AKIAEXAMPLE0000001");
        assert_eq!(e.principal.as_deref(), Some("arn:aws:iam::111122223333:user/etl"));
        assert_eq!(e.tool.as_deref(), Some("s3:GetObject"));
        assert_eq!(e.action, Some(Action::Read));
        assert_eq!(e.resource.as_deref(), Some("s3://finance/q3.csv"));
        assert_eq!(e.status, Some(200));
        assert_eq!(e.provider.as_deref(), Some("aws"));
        assert_eq!(e.region.as_deref(), Some("eu-west-1"));
        assert!(e.detail.unwrap().contains("q3.csv"));
    }

    #[test]
    fn assumed_role_maps_to_role_and_session() {
        let mut v = base();
        v["userIdentity"] = json!({"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/agent-role/run-42",
            "accessKeyId": "ASIAEXAMPLE", "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::111122223333:role/agent-role"}}});
        let e = map_record(&v).unwrap();
        // A temporary key is baselined on its role, the key kept as the session.
        assert_eq!(e.principal.as_deref(), Some("arn:aws:iam::111122223333:role/agent-role"));
        assert_eq!(e.credential_id, "arn:aws:iam::111122223333:role/agent-role");
        assert_eq!(e.session_id.as_deref(), Some("run-42/ASIAEXAMPLE"));
        // A long-lived key stays the credential; an IAM user's session key goes to its user.
        v["userIdentity"]["accessKeyId"] = json!("AKIAEXAMPLE");
        let e = map_record(&v).unwrap();
        assert_eq!((e.credential_id.as_ref(), e.session_id.as_deref()), ("AKIAEXAMPLE", Some("run-42")));
        v["userIdentity"] =
            json!({"type": "IAMUser", "arn": "arn:aws:iam::111122223333:user/etl", "accessKeyId": "ASIASESSION"});
        let e = map_record(&v).unwrap();
        assert_eq!(
            (e.credential_id.as_ref(), e.session_id.as_deref()),
            ("arn:aws:iam::111122223333:user/etl", Some("ASIASESSION"))
        );
    }

    /// The typed fast path and the `Value` path agree on every real record,
    /// compact or pretty-printed, and on the odd shapes that fall back.
    #[test]
    fn typed_path_matches_value_path() {
        let (records, _) = fixture();
        let mut odd = vec![
            json!({"eventName": 5, "eventTime": "2024-03-01T10:00:00Z"}),
            json!({"eventName": "X", "eventTime": 17}),
            json!({"eventName": "", "eventTime": "2024-03-01T10:00:00Z"}),
            json!({"eventName": "X", "eventTime": "2024-03-01T10:00:00Z", "userIdentity": "root"}),
            json!({"eventName": "X", "eventTime": "2024-03-01T10:00:00Z", "requestParameters": {"name": {"a": 1}}}),
            json!({"eventName": "GetObject", "eventTime": "2024-03-01T10:00:00Z", "readOnly": "true"}),
        ];
        odd.extend(records);
        for r in &odd {
            for text in [r.to_string(), serde_json::to_string_pretty(r).unwrap()] {
                let (fast, slow) = (map_text(&text), map_record(r));
                match (fast, slow) {
                    (Ok(mut a), Ok(mut b)) => {
                        let parse =
                            |d: &Option<Cow<'_, str>>| d.as_deref().map(|d| serde_json::from_str::<Value>(d).unwrap());
                        assert_eq!(parse(&a.detail), parse(&b.detail), "{text}");
                        (a.detail, b.detail) = (None, None);
                        assert_eq!(a, b, "{text}");
                    }
                    (a, b) => assert_eq!(a.err(), b.err(), "{text}"),
                }
            }
        }
    }

    #[test]
    fn errors_map_to_statuses() {
        for (code, status) in [
            ("AccessDenied", 403),
            ("Client.UnauthorizedOperation", 403),
            ("ThrottlingException", 429),
            ("InvalidClientTokenId", 401),
            ("UnrecognizedClientException", 401),
            ("NoSuchBucket", 404),
            ("ValidationException", 400),
            ("EntityAlreadyExists", 409),
            ("InternalError", 500),
            ("SomethingNew", 400),
        ] {
            let mut v = base();
            v["errorCode"] = json!(code);
            let e = map_record(&v).unwrap();
            assert_eq!((e.status, e.error_code.as_deref()), (Some(status), Some(code)), "{code}");
        }
    }

    #[test]
    fn bedrock_invoke_is_inference_with_model() {
        let mut v = base();
        v["eventSource"] = json!("bedrock.amazonaws.com");
        v["eventName"] = json!("InvokeModel");
        v["requestParameters"] = json!({"modelId": "anthropic.claude-3-haiku-20240307-v1:0"});
        let e = map_record(&v).unwrap();
        assert_eq!(e.action, Some(Action::Inference));
        assert_eq!(e.provider.as_deref(), Some("bedrock"));
        assert_eq!(e.model.as_deref(), Some("anthropic.claude-3-haiku-20240307-v1:0"));
        v["eventName"] = json!("DeleteModelInvocationLoggingConfiguration");
        assert_eq!(map_record(&v).unwrap().action, Some(Action::Admin));
    }

    #[test]
    fn classification_table() {
        assert_eq!(classify("sts", "AssumeRole", Some(false)), Action::Auth);
        assert_eq!(classify("iam", "CreateUser", None), Action::Admin);
        assert_eq!(classify("iam", "ListRoles", Some(true)), Action::Read);
        assert_eq!(classify("ec2", "RunInstances", Some(false)), Action::Write);
        assert_eq!(classify("ec2", "DescribeInstances", None), Action::Read);
        assert_eq!(classify("s3", "PutBucketPolicy", Some(false)), Action::Admin);
    }

    #[test]
    fn identity_fallbacks() {
        let mut v = base();
        v.as_object_mut().unwrap().remove("userIdentity");
        assert_eq!(map_record(&v).unwrap().credential_id, "anonymous");
        v["userIdentity"] = json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"});
        assert_eq!(map_record(&v).unwrap().credential_id, "ec2.amazonaws.com");
        v["userIdentity"] = json!({"type": "Root", "arn": "arn:aws:iam::111122223333:root"});
        assert_eq!(map_record(&v).unwrap().credential_id, "arn:aws:iam::111122223333:root");
        v["userIdentity"] = json!({"type": "Unknown", "accountId": "111122223333"});
        assert_eq!(map_record(&v).unwrap().credential_id, "account:111122223333");
    }

    /// Where a secret sits and who called decide whether it is AWS's own
    /// record; a leak anywhere else keeps its suspect.
    #[test]
    fn aws_own_secrets_are_issued_tokens_and_service_calls() {
        use crate::secrets::AWS_SESSION_TOKEN as TOKEN;
        let v = base();
        let issued = Some("responseElements.credentials.sessionToken");
        assert!(aws_own_secret(&v, issued, TOKEN));
        // The same token sent in a request, or a secret key or bearer token in a response, is a leak.
        assert!(!aws_own_secret(&v, Some("requestParameters.sessionToken"), TOKEN));
        assert!(!aws_own_secret(&v, Some("userAgent"), TOKEN));
        assert!(!aws_own_secret(&v, Some("responseElements.credentials.secretAccessKey"), "aws_secret_access_key"));
        assert!(!aws_own_secret(&v, Some("responseElements.token"), "jwt"));
        assert!(!aws_own_secret(&v, None, TOKEN));
        // A call by an AWS service, whatever it carried.
        for ident in [
            json!({"type": "AWSService", "invokedBy": "ec2.amazonaws.com"}),
            json!({"type": "AWSService"}),
            json!({"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/r/s", "invokedBy": "cloudformation.amazonaws.com"}),
        ] {
            let mut v = base();
            v["userIdentity"] = ident;
            assert!(aws_own_secret(&v, Some("requestParameters.x"), "openai_api_key"), "{v}");
        }
        // Names the caller picks do not make it a service.
        for ident in [
            json!({"type": "AssumedRole", "arn": "arn:aws:sts::1:assumed-role/r/ec2.amazonaws.com", "principalId": "AROA1:ec2.amazonaws.com"}),
            json!({"type": "IAMUser", "invokedBy": "AWS Internal"}),
            json!({"type": "IAMUser", "invokedBy": ".amazonaws.com"}),
        ] {
            let mut v = base();
            v["userIdentity"] = ident;
            assert!(!aws_own_secret(&v, Some("requestParameters.x"), "openai_api_key"), "{v}");
        }
    }

    /// Odd values real logs hold: padded octets are stored as the address,
    /// a missing or empty address is null, a service's name and an unknown
    /// region are kept as written; both parsers agree.
    #[test]
    fn source_addresses_and_regions_as_logs_write_them() {
        for (ip, stored) in [
            (json!("035.249.253.232"), Some("35.249.253.232")),
            (json!("198.51.100.7"), Some("198.51.100.7")),
            (json!("ec2.amazonaws.com"), Some("ec2.amazonaws.com")),
            (json!("2001:db8::1"), Some("2001:db8::1")),
            (json!(""), None),
            (Value::Null, None),
        ] {
            let mut v = base();
            v["sourceIPAddress"] = ip.clone();
            v["awsRegion"] = json!("megov-northeast-1r");
            let text = v.to_string();
            for e in [map_record(&v).unwrap(), map_text(&text).unwrap()] {
                assert_eq!(e.source_ip.as_deref(), stored, "{ip}");
                assert_eq!(e.region.as_deref(), Some("megov-northeast-1r"));
            }
        }
        let mut v = base();
        v.as_object_mut().unwrap().remove("sourceIPAddress");
        assert_eq!(map_text(&v.to_string()).unwrap().source_ip, None);
    }

    #[test]
    fn rejects_with_reasons() {
        let mut v = base();
        v["eventTime"] = json!("redacted");
        assert!(map_record(&v).unwrap_err().0.contains("eventTime \"redacted\""));
        v.as_object_mut().unwrap().remove("eventTime");
        assert_eq!(map_record(&v).unwrap_err().0, "missing eventTime");
        let mut v = base();
        v.as_object_mut().unwrap().remove("eventName");
        assert_eq!(map_record(&v).unwrap_err().0, "missing eventName");
        assert!(map_record(&json!("x")).is_err());
        // Keys are case-sensitive, as in CloudTrail itself.
        let lower = json!({"eventname": "GetObject", "eventtime": "2024-03-01T10:00:00Z"});
        assert!(map_record(&lower).is_err());
    }
}
