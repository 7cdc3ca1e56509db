//! The open sessions, for `GET /api/v1/sessions` and the console: each session registers
//! when it starts, its shell refreshes what its machine knows ([`Snapshot`]) as events
//! arrive and counts the running transfer's bytes as they move, and the entry goes away
//! when the session ends (its [`Registration`] drops). An operator can end a session
//! (`DELETE /api/v1/sessions/{id}`): its `end` token is cancelled.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

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
    /// Cancelled to end the session.
    end: CancellationToken,
    /// Bytes the running transfer has moved so far (the data task adds to it).
    live: Arc<AtomicU64>,
    /// When the running transfer began.
    transfer_started: Option<SystemTime>,
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
    /// Whether the client's control connection is TLS.
    pub tls: bool,
}

/// The transfer a session runs now.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransferView {
    pub verb: String,
    pub path: String,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Since the transfer began.
    pub seconds: f64,
}

impl Sessions {
    /// Registers a session; cancelling `end` is how [`Sessions::end`] ends it.
    pub fn register(
        &self,
        listener: &str,
        client: SocketAddr,
        end: CancellationToken,
    ) -> Registration {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.open().insert(
            id,
            Entry {
                listener: listener.to_owned(),
                client,
                started: SystemTime::now(),
                snapshot: Snapshot::default(),
                end,
                live: Arc::new(AtomicU64::new(0)),
                transfer_started: None,
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
                        bytes: e.live.load(Ordering::Relaxed),
                        seconds: e.transfer_started.map_or(0.0, |t| {
                            now.duration_since(t).unwrap_or_default().as_secs_f64()
                        }),
                    }),
                    tls: s.client_tls,
                }
            })
            .collect()
    }

    /// Ends session `id` (its client hears `421`); false when no such session is open.
    pub fn end(&self, id: u64) -> bool {
        match self.inner.open().get(&id) {
            Some(e) => {
                e.end.cancel();
                true
            }
            None => false,
        }
    }

    /// Open sessions per listener.
    pub fn count_by_listener(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for e in self.inner.open().values() {
            *counts.entry(e.listener.clone()).or_default() += 1;
        }
        counts
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
    /// Records what the session's machine knows now. A transfer that begins starts its
    /// byte count and clock from zero.
    pub fn update(&self, snapshot: Snapshot) {
        if let Some(e) = self.inner.open().get_mut(&self.id) {
            if snapshot.transfer.is_some() && snapshot.transfer != e.snapshot.transfer {
                e.live.store(0, Ordering::Relaxed);
                e.transfer_started = Some(SystemTime::now());
            }
            e.snapshot = snapshot;
        }
    }

    /// The running transfer's byte count, for the data task to add to.
    pub fn live_bytes(&self) -> Option<Arc<AtomicU64>> {
        self.inner.open().get(&self.id).map(|e| e.live.clone())
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
        let (end_a, end_b) = (CancellationToken::new(), CancellationToken::new());
        let a = sessions.register("ftp", "192.0.2.1:4000".parse().unwrap(), end_a.clone());
        let b = sessions.register("ftp", "192.0.2.2:4000".parse().unwrap(), end_b.clone());
        let running = Snapshot {
            user: Some("alice".into()),
            transfer: Some(("RETR".into(), "f".into())),
            download_bytes: 7,
            client_tls: true,
            ..Snapshot::default()
        };
        a.update(running.clone());
        a.live_bytes().unwrap().fetch_add(100, Ordering::Relaxed);
        let list = sessions.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].user.as_deref(), Some("alice"));
        assert_eq!(list[0].download_bytes, 7);
        assert!(list[0].tls && !list[1].tls);
        let t = list[0].transfer.as_ref().unwrap();
        assert_eq!((t.verb.as_str(), t.bytes), ("RETR", 100));
        assert_eq!(list[1].client, "192.0.2.2:4000");
        // The same transfer keeps its count; the next one starts from zero.
        a.update(running.clone());
        assert_eq!(sessions.list()[0].transfer.as_ref().unwrap().bytes, 100);
        a.update(Snapshot {
            transfer: Some(("STOR".into(), "g".into())),
            ..running
        });
        assert_eq!(sessions.list()[0].transfer.as_ref().unwrap().bytes, 0);
        assert_eq!(sessions.count_by_listener()["ftp"], 2);
        // Ending one cancels its token only; an unknown id ends nothing.
        assert!(sessions.end(2) && end_b.is_cancelled() && !end_a.is_cancelled());
        assert!(!sessions.end(99));
        drop(a);
        assert_eq!(sessions.list().len(), 1);
        drop(b);
        assert!(sessions.is_empty());
    }
}
