//! A real S3-compatible server for the object-store tests: moto's standalone
//! server (`.ci/run` installs it from PyPI), one per test, on a free loopback
//! port, so tests never share buckets and one can kill its server mid-write.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};

/// Credentials moto accepts (it checks none); never real ones.
const KEY_ID: &str = "credtrail-test";
const SECRET: &str = "credtrail-test-secret";
const REGION: &str = "us-east-1";

pub struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts a server and waits until it accepts connections.
    pub fn start() -> S3Server {
        // Ask the kernel for a free port, then hand it to moto.
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server runs: install it with `python3 -m pip install 'moto[server]==5.2.5'` (.ci/run does)");
        let server = S3Server { child, endpoint: format!("http://127.0.0.1:{port}") };
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

    /// The environment a `credtrail` process needs to reach this server, as
    /// a user would set it for any S3-compatible store.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
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
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
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
