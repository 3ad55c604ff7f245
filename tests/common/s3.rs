//! A real S3-compatible server for the object-store tests: moto's standalone
//! server (`.ci/run` installs it from PyPI), one per test, on a free loopback
//! port, so tests never share buckets and one can kill its server mid-write.
//! By default moto checks no credentials; [`S3Server::start_with_auth`] gives
//! one that checks every request's signature against an IAM access key.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};

/// Credentials moto accepts when it checks none; never real ones.
const KEY_ID: &str = "credtrail-test";
const SECRET: &str = "credtrail-test-secret";
const REGION: &str = "us-east-1";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
    key_id: String,
    secret: String,
}

impl S3Server {
    /// A server that checks credentials: a bucket, and an IAM user allowed
    /// everything whose access key (moto's own, made through its IAM API)
    /// [`S3Server::env`] gives; from then on moto refuses any request not
    /// signed with it (InvalidAccessKeyId, SignatureDoesNotMatch).
    pub fn start_with_auth(bucket: &str) -> S3Server {
        let mut server = S3Server::start();
        server.create_bucket(bucket);
        // Unchecked until reset-auth below; moto routes by the signing scope.
        let iam = |form: &[(&str, &str)]| {
            let auth = "AWS4-HMAC-SHA256 Credential=setup/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0";
            let mut resp = ureq::post(&server.endpoint)
                .header("Authorization", auth)
                .send_form([&[("Version", "2010-05-08")], form].concat())
                .expect("moto answers IAM");
            resp.body_mut().read_to_string().unwrap()
        };
        iam(&[("Action", "CreateUser"), ("UserName", "credtrail")]);
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        let put = [("Action", "PutUserPolicy"), ("UserName", "credtrail"), ("PolicyName", "all")];
        iam(&[&put[..], &[("PolicyDocument", policy)]].concat());
        let key = iam(&[("Action", "CreateAccessKey"), ("UserName", "credtrail")]);
        let tag =
            |name: &str| key.split(&format!("<{name}>")).nth(1).and_then(|r| r.split('<').next()).unwrap().to_string();
        (server.key_id, server.secret) = (tag("AccessKeyId"), tag("SecretAccessKey"));
        // From the next request on, every one is authenticated.
        let reset =
            ureq::post(&format!("{}/moto-api/reset-auth", server.endpoint)).content_type("text/plain").send("0");
        reset.expect("moto enforces authentication");
        server
    }

    /// Starts a server and waits until it accepts connections.
    pub fn start() -> S3Server {
        S3Server::start_with_env(&[])
    }

    /// A server that can record the requests it serves to `file` (moto's
    /// recorder), from [`S3Server::record`] on.
    pub fn start_recording_to(file: &Path) -> S3Server {
        S3Server::start_with_env(&[("MOTO_RECORDER_FILEPATH", file.to_str().expect("a UTF-8 path"))])
    }

    fn start_with_env(env: &[(&str, &str)]) -> S3Server {
        // Ask the kernel for a free port, then hand it to moto.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs: install it with `python3 -m pip install 'moto[server]==5.2.5'` (.ci/run does)");
        let endpoint = format!("http://127.0.0.1:{port}");
        let server = S3Server { child, endpoint, key_id: KEY_ID.to_string(), secret: SECRET.to_string() };
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {addr} within 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// Creates a bucket (moto takes an unsigned PUT).
    pub fn create_bucket(&self, bucket: &str) {
        ureq::put(&format!("{}/{bucket}", self.endpoint)).send_empty().expect("bucket is created");
    }

    /// Records every request from now on, forgetting those recorded before.
    pub fn record(&self) {
        for step in ["reset-recording", "start-recording"] {
            let url = format!("{}/moto-api/recorder/{step}", self.endpoint);
            ureq::post(&url).content_type("text/plain").send("").expect("moto's recorder answers");
        }
    }

    /// The (method, path and query) of each request recorded in `file`.
    pub fn recorded(file: &Path) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        text.lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).expect("a recorded request is JSON");
                let url = r["url"].as_str().expect("a recorded URL");
                let path = url.splitn(4, '/').nth(3).map_or("", |p| p);
                (r["method"].as_str().expect("a recorded method").to_string(), format!("/{path}"))
            })
            .collect()
    }

    /// The environment a `credtrail` process needs to reach this server, as
    /// a user would set it for any S3-compatible store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// A client for `bucket`, to put inputs and read back what credtrail wrote.
    pub fn store(&self, bucket: &str) -> Arc<AmazonS3> {
        let s3 = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(REGION)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .build()
            .expect("an S3 client");
        Arc::new(s3)
    }

    /// Kills the server at once, as a crash of the store would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}
