//! Reading a lake on object storage: the same layout under the URL's
//! prefix, reached through the [`crate::store::Remote`] client. Errors name
//! the lake's URL and never the store's configuration (it holds credentials).

use std::path::PathBuf;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::{COMMITS, Commit, EVENTS, LakeError, parse_commit};
use crate::store::Remote;

/// The key of lake-relative path `rel` under the lake's prefix.
fn key(r: &Remote, rel: &str) -> ObjectPath {
    r.prefix.parts().chain(ObjectPath::from(rel).parts()).collect()
}

/// The URL of lake directory `dir`, as DataFusion lists it.
pub fn url_of(r: &Remote, dir: &str) -> String {
    format!("s3://{}/{}/", r.url.host_str().unwrap_or_default(), key(r, dir))
}

fn store_err(r: &Remote) -> impl Fn(object_store::Error) -> LakeError + '_ {
    // The store's messages can span lines (a server's XML body): one line each.
    move |e| LakeError::Remote {
        url: r.url.to_string(),
        message: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Fails unless the prefix holds a lake: at least one object under `events/`.
pub async fn require_lake(r: &Remote) -> Result<(), LakeError> {
    let events = key(r, EVENTS);
    let first = r.store.list(Some(&events)).try_next().await.map_err(store_err(r))?;
    if first.is_none() {
        return Err(LakeError::NoLake { path: PathBuf::from(r.url.as_str()) });
    }
    Ok(())
}

/// Every committed run of the lake, oldest first.
pub async fn commits(r: &Remote) -> Result<Vec<Commit>, LakeError> {
    let listed: Vec<_> = r.store.list(Some(&key(r, COMMITS))).try_collect().await.map_err(store_err(r))?;
    let mut out = Vec::new();
    for meta in listed.into_iter().filter(|m| m.location.extension() == Some("json")) {
        let bytes = r.store.get(&meta.location).await.map_err(store_err(r))?.bytes().await.map_err(store_err(r))?;
        let name = PathBuf::from(format!("s3://{}/{}", r.url.host_str().unwrap_or_default(), meta.location));
        out.push(parse_commit(&name, &bytes)?);
    }
    out.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(out)
}

/// The names of the "directories" (common prefixes) directly under lake directory `dir`.
pub async fn subdirs(r: &Remote, dir: &str) -> Result<Vec<String>, LakeError> {
    let listed = r.store.list_with_delimiter(Some(&key(r, dir))).await.map_err(store_err(r))?;
    Ok(listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_string)).collect())
}
