//! The write lease of an object-store lake, `_ingest/lock`: what the local
//! file lock is on a directory lake, for writers on any number of machines.
//!
//! A writer creates the object with `PutMode::Create` (If-None-Match) and
//! renews it every [`RENEW`] with a conditional update on the ETag it holds
//! (`PutMode::Update`, If-Match), so each renewal changes the object. A
//! second writer waits, polling with backoff. It takes the lease over only
//! when the holder released it, or when the object stayed unchanged for
//! [`TTL`] by its own clock (a writer that died stops renewing), and only
//! by a conditional update on the ETag it read: of two waiters, one wins.
//! No clocks are compared across machines.
//!
//! A holder that cannot renew within [`TTL`] (the store unreachable, or the
//! lease taken over) has lost it: its commit fails before the commit record
//! is written, so a lost lease never commits a run.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use super::LakeError;
use super::remote::Objects;

/// How long a lease lives without renewal before another writer may take it.
const TTL: Duration = Duration::from_secs(30);
/// How often the holder renews.
const RENEW: Duration = Duration::from_secs(10);
/// A commit needs this much of the lease left, so it cannot outlive it.
const MARGIN: Duration = Duration::from_secs(10);
const MAX_POLL: Duration = Duration::from_secs(2);

/// The lease object's body: who holds it, for people reading it.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    owner: String,
    renewed_at: String,
    #[serde(default)]
    released: bool,
}

impl Body {
    fn payload(owner: &str, released: bool) -> PutPayload {
        let renewed_at = crate::time::format_ms(chrono::Utc::now().timestamp_millis());
        // The time changes the bytes, and with them the ETag, at each renewal.
        let body = Body { owner: owner.to_string(), renewed_at, released };
        PutPayload::from(serde_json::to_vec(&body).expect("a lease serializes"))
    }
}

struct Held {
    version: UpdateVersion,
    renewed: Instant,
    lost: Option<String>,
}

/// A held lease; renewed until dropped, then released.
pub struct Lease {
    lake: Objects,
    key: ObjectPath,
    owner: String,
    held: Arc<Mutex<Held>>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<JoinHandle<()>>,
}

enum Put {
    Done(UpdateVersion),
    /// Someone else's write came first.
    Lost,
}

fn put(lake: &Objects, key: &ObjectPath, body: PutPayload, mode: PutMode) -> Result<Put, LakeError> {
    let (store, key) = (Arc::clone(&lake.remote.store), key.clone());
    lake.run(async move {
        match store.put_opts(&key, body, PutOptions { mode, ..PutOptions::default() }).await {
            Ok(r) => Ok(Put::Done(r.into())),
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(Put::Lost),
            Err(e) => Err(e),
        }
    })
}

impl Lease {
    /// Takes the lease at `key`, waiting while a live writer holds it.
    pub fn acquire(lake: Objects, key: ObjectPath) -> Result<Lease, LakeError> {
        // For people reading the object: which process on which machine.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let owner = format!("pid {} on {}", std::process::id(), host.trim());
        let mut seen: Option<(Option<String>, Instant)> = None;
        let mut poll = Duration::from_millis(100);
        let mut told = false;
        loop {
            if let Put::Done(v) = put(&lake, &key, Body::payload(&owner, false), PutMode::Create)? {
                return Ok(Lease::held(lake, key, owner, v));
            }
            let (store, k) = (Arc::clone(&lake.remote.store), key.clone());
            let current = lake.run(async move {
                match store.get(&k).await {
                    Ok(got) => {
                        let e_tag = got.meta.e_tag.clone();
                        let version = got.meta.version.clone();
                        Ok(Some((UpdateVersion { e_tag, version }, got.bytes().await?)))
                    }
                    // Deleted by hand in between: try creating it again.
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })?;
            let Some((version, bytes)) = current else { continue };
            let body: Option<Body> = serde_json::from_slice(&bytes).ok();
            let unchanged_since = match &seen {
                Some((tag, since)) if *tag == version.e_tag => *since,
                _ => Instant::now(),
            };
            seen = Some((version.e_tag.clone(), unchanged_since));
            // Unreadable (not ours) counts as released: it guards nothing.
            let free = body.as_ref().is_none_or(|b| b.released) || unchanged_since.elapsed() >= TTL;
            if free && let Put::Done(v) = put(&lake, &key, Body::payload(&owner, false), PutMode::Update(version))? {
                return Ok(Lease::held(lake, key, owner, v));
            }
            if !told && !free {
                told = true;
                let holder =
                    body.map_or_else(String::new, |b| format!(" (held by {}, renewed {})", b.owner, b.renewed_at));
                tracing::warn!(
                    "{}: another writer is writing to this lake{holder}; waiting for it to finish (a writer that died loses the lease after {} s without renewal)",
                    lake.remote.url,
                    TTL.as_secs()
                );
            }
            std::thread::sleep(poll);
            poll = (poll * 2).min(MAX_POLL);
        }
    }

    fn held(lake: Objects, key: ObjectPath, owner: String, version: UpdateVersion) -> Lease {
        let held = Arc::new(Mutex::new(Held { version, renewed: Instant::now(), lost: None }));
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let (lake, key, owner, held) = (lake.clone(), key.clone(), owner.clone(), Arc::clone(&held));
            std::thread::spawn(move || renew(&lake, &key, &owner, &held, &stopped))
        };
        Lease { lake, key, owner, held, stop: Some(stop), renewer: Some(renewer) }
    }

    /// Fails unless the lease is held with enough time left to commit.
    pub fn check(&self) -> Result<(), LakeError> {
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let why = match &h.lost {
            Some(why) => why.clone(),
            None if h.renewed.elapsed() + MARGIN > TTL => "it could not be renewed in time".to_string(),
            None => return Ok(()),
        };
        Err(LakeError::LeaseLost { url: self.lake.remote.url.to_string(), why })
    }
}

/// The renewer: every [`RENEW`] until told to stop or the lease is lost.
fn renew(lake: &Objects, key: &ObjectPath, owner: &str, held: &Mutex<Held>, stopped: &mpsc::Receiver<()>) {
    loop {
        match stopped.recv_timeout(RENEW) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let version = held.lock().unwrap_or_else(|e| e.into_inner()).version.clone();
        let result = put(lake, key, Body::payload(owner, false), PutMode::Update(version));
        let mut h = held.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(Put::Done(v)) => {
                h.version = v;
                h.renewed = Instant::now();
            }
            Ok(Put::Lost) => {
                h.lost = Some("another writer took it over".into());
                return;
            }
            Err(e) if h.renewed.elapsed() >= TTL => {
                h.lost = Some(format!("it could not be renewed: {e}"));
                return;
            }
            // Tried again at the next tick, while the lease still lives.
            Err(e) => tracing::warn!(error = %e, "renewing the lake's write lease failed; trying again"),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        let h = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if h.lost.is_none() {
            // Released for the next writer at once. Bounded: with the store
            // down this must not hold up the error; the lease then expires.
            let (store, key) = (Arc::clone(&self.lake.remote.store), self.key.clone());
            let (body, mode) = (Body::payload(&self.owner, true), PutMode::Update(h.version.clone()));
            let _ = crate::store::block_on(async move {
                let put = store.put_opts(&key, body, PutOptions { mode, ..PutOptions::default() });
                tokio::time::timeout(Duration::from_secs(5), put).await
            });
        }
    }
}
