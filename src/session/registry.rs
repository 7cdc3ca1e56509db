//! The open sessions, for `GET /api/v1/sessions`: each session registers when it starts,
//! its shell refreshes what its machine knows ([`Snapshot`]) as events arrive, and the
//! entry goes away when the session ends (its [`Registration`] drops).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::view::Snapshot;

/// Every open session of the process. Cheap to clone; clones share the sessions.
#[derive(Debug, Clone, Default)]
pub struct Sessions {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    listener: String,
    client: SocketAddr,
    started: SystemTime,
    snapshot: Snapshot,
}

/// One session's place in [`Sessions`]; removed on drop.
#[derive(Debug)]
pub struct Registration {
    inner: Arc<Inner>,
    id: u64,
}

/// One open session as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SessionView {
    pub id: u64,
    pub listener: String,
    pub client: String,
    pub user: Option<String>,
    pub upstream: Option<String>,
    pub logged_in: bool,
    /// Unix time, seconds.
    pub started: f64,
    pub seconds: f64,
    /// Bytes relayed by the session's finished transfers, client to server.
    pub upload_bytes: u64,
    /// Bytes relayed by the session's finished transfers, server to client.
    pub download_bytes: u64,
    pub transfers: u64,
    pub transfer: Option<TransferView>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TransferView {
    pub verb: String,
    pub path: String,
}

impl Sessions {
    pub fn register(&self, listener: &str, client: SocketAddr) -> Registration {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.open().insert(
            id,
            Entry {
                listener: listener.to_owned(),
                client,
                started: SystemTime::now(),
                snapshot: Snapshot::default(),
            },
        );
        Registration {
            inner: self.inner.clone(),
            id,
        }
    }

    /// The open sessions, oldest first.
    pub fn list(&self) -> Vec<SessionView> {
        let now = SystemTime::now();
        self.inner
            .open()
            .iter()
            .map(|(id, e)| {
                let s = &e.snapshot;
                SessionView {
                    id: *id,
                    listener: e.listener.clone(),
                    client: e.client.to_string(),
                    user: s.user.clone(),
                    upstream: s.upstream.clone(),
                    logged_in: s.logged_in,
                    started: e
                        .started
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64(),
                    seconds: now
                        .duration_since(e.started)
                        .unwrap_or_default()
                        .as_secs_f64(),
                    upload_bytes: s.upload_bytes,
                    download_bytes: s.download_bytes,
                    transfers: s.transfers,
                    transfer: s.transfer.as_ref().map(|(verb, path)| TransferView {
                        verb: verb.clone(),
                        path: path.clone(),
                    }),
                }
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner.open().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn open(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registration {
    /// Records what the session's machine knows now.
    pub fn update(&self, snapshot: Snapshot) {
        if let Some(e) = self.inner.open().get_mut(&self.id) {
            e.snapshot = snapshot;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.inner.open().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_appear_update_and_leave() {
        let sessions = Sessions::default();
        let a = sessions.register("ftp", "192.0.2.1:4000".parse().unwrap());
        let b = sessions.register("ftp", "192.0.2.2:4000".parse().unwrap());
        a.update(Snapshot {
            user: Some("alice".into()),
            transfer: Some(("RETR".into(), "f".into())),
            download_bytes: 7,
            ..Snapshot::default()
        });
        let list = sessions.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].user.as_deref(), Some("alice"));
        assert_eq!(list[0].download_bytes, 7);
        assert_eq!(list[0].transfer.as_ref().unwrap().verb, "RETR");
        assert_eq!(list[1].client, "192.0.2.2:4000");
        drop(a);
        assert_eq!(sessions.list().len(), 1);
        drop(b);
        assert!(sessions.is_empty());
    }
}
