//! AWS CloudTrail records → canonical events, mapped the way an analyst reads them.

use std::borrow::Cow;

use serde_json::Value;

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

/// Maps one record. The rule: a record with an `eventName` and a parseable
/// `eventTime` is ingested, its missing optional fields as nulls; any other
/// is rejected with the reason.
///
/// `credential_id` is the access key id; without one it falls back to the
/// identity ARN, then the invoking AWS service, the principal id, the
/// account (`account:<id>`), and finally `anonymous` for records with no
/// identity at all.
pub fn map_record(v: &Value) -> Result<Event<'_>, Rejected> {
    if !v.is_object() {
        return Err(Rejected(format!("not a CloudTrail record: expected an object, got {}", shown(v))));
    }
    let event_name = match v.get("eventName") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        Some(other) => {
            return Err(Rejected(format!("eventName {} is not a name", shown(other))));
        }
        None => return Err(Rejected::new("missing eventName")),
    };
    let ts_ms = match v.get("eventTime") {
        Some(Value::String(s)) => parse_ts(s)
            .ok_or_else(|| Rejected(format!("eventTime {} is not a timestamp", shown(&Value::from(s.as_str())))))?,
        Some(Value::Null) | None => return Err(Rejected::new("missing eventTime")),
        Some(other) => {
            return Err(Rejected(format!("eventTime {} is not a timestamp", shown(other))));
        }
    };
    let ident = v.get("userIdentity").filter(|i| i.is_object());
    let id = |path: &[&str]| ident.and_then(|i| str_at(i, path));
    let arn = id(&["arn"]);
    let account = str_at(v, &["recipientAccountId"]).or_else(|| id(&["accountId"]));
    let credential_id: Cow<'_, str> =
        match id(&["accessKeyId"]).or(arn).or_else(|| id(&["invokedBy"])).or_else(|| id(&["principalId"])) {
            Some(s) => Cow::Borrowed(s),
            None => match account {
                Some(a) if ident.is_some() => Cow::Owned(format!("account:{a}")),
                _ => Cow::Borrowed("anonymous"),
            },
        };
    let is_assumed = id(&["type"]) == Some("AssumedRole") || arn.is_some_and(|a| a.contains(":assumed-role/"));
    let principal = if is_assumed {
        id(&["sessionContext", "sessionIssuer", "arn"]).or(arn)
    } else {
        arn.or_else(|| id(&["invokedBy"]))
    };
    let session_id = if is_assumed { arn.and_then(|a| a.rsplit('/').next()) } else { None };

    let event_source = str_at(v, &["eventSource"]);
    let service = event_source.map(|s| s.strip_suffix(".amazonaws.com").unwrap_or(s));
    let tool: Cow<'_, str> = match service {
        Some(svc) => Cow::Owned(format!("{svc}:{event_name}")),
        None => Cow::Borrowed(event_name),
    };
    let bedrock = service.is_some_and(|s| s.starts_with("bedrock"));
    let read_only = v.get("readOnly").and_then(Value::as_bool);
    let action = classify(service.unwrap_or(""), event_name, read_only);
    let params = v.get("requestParameters").filter(|p| p.is_object());
    let model = params.and_then(|p| str_at(p, &["modelId"]).or_else(|| str_at(p, &["modelIdentifier"])));

    let error_code = str_at(v, &["errorCode"]);
    let status = Some(error_code.map_or(200, status_of_error));

    Ok(Event {
        ts_ms,
        request_id: str_at(v, &["eventID"]).or_else(|| str_at(v, &["requestID"])).map(Cow::Borrowed),
        credential_id,
        principal: principal.map(Cow::Borrowed),
        session_id: session_id.map(Cow::Borrowed),
        source_ip: str_at(v, &["sourceIPAddress"]).map(Cow::Borrowed),
        user_agent: str_at(v, &["userAgent"]).map(Cow::Borrowed),
        provider: Some(Cow::Borrowed(if bedrock { "bedrock" } else { "aws" })),
        model: model.map(Cow::Borrowed),
        action: Some(action),
        tool: Some(tool),
        resource: resource(v, params),
        status,
        error_code: error_code.map(Cow::Borrowed),
        latency_ms: None,
        tokens_in: None,
        tokens_out: None,
        cost_usd: None,
        region: str_at(v, &["awsRegion"]).map(Cow::Borrowed),
        account_id: account.map(Cow::Borrowed),
        detail: params.map(|p| Cow::Owned(capped_json(p))),
    })
}

const DETAIL_BYTES: usize = 8 << 10;

fn capped_json(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= DETAIL_BYTES {
        return s;
    }
    format!("{}…", crate::ingest::gateway::truncate(&s, DETAIL_BYTES))
}

/// A glob where `*` matches any run of characters (`Put*Policy`, `*Denied*`).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
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

fn resource<'a>(v: &'a Value, params: Option<&'a Value>) -> Option<Cow<'a, str>> {
    if let Some(p) = params
        && let Some(bucket) = str_at(p, &["bucketName"])
    {
        return Some(match str_at(p, &["key"]) {
            Some(key) => Cow::Owned(format!("s3://{bucket}/{key}")),
            None => Cow::Owned(format!("s3://{bucket}/")),
        });
    }
    let first_arn = v
        .get("resources")
        .and_then(Value::as_array)
        .and_then(|rs| rs.iter().find_map(|r| str_at(r, &["ARN"]).or_else(|| str_at(r, &["arn"]))));
    if let Some(arn) = first_arn {
        return Some(Cow::Borrowed(arn));
    }
    let p = params?;
    RESOURCE_PARAMS.iter().find_map(|k| str_at(p, &[k]).map(Cow::Borrowed)).or_else(|| {
        let ids = p.get("instancesSet")?.get("items")?.as_array()?;
        ids.iter().find_map(|i| str_at(i, &["instanceId"])).map(Cow::Borrowed)
    })
}

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
        assert_eq!(e.principal.as_deref(), Some("arn:aws:iam::111122223333:role/agent-role"));
        assert_eq!(e.session_id.as_deref(), Some("run-42"));
        assert_eq!(e.credential_id, "ASIAEXAMPLE");
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
    fn globs() {
        for (p, n, m) in [
            ("Put*Policy", "PutBucketPolicy", true),
            ("Put*Policy", "PutPolicyX", false),
            ("*Denied*", "AccessDeniedException", true),
            ("Get*", "GetObject", true),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("exact", "exactly", false),
        ] {
            assert_eq!(name_matches(p, n), m, "{p} {n}");
        }
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
