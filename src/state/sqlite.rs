//! The SQLite backend (rusqlite, SQLite built in): one file, or memory. One connection
//! behind a mutex, used from tokio's blocking pool; WAL journal, so readers do not wait
//! for a progress write, and each call is one transaction committed before it returns.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::lease::{self, Millis, Renewal};
use super::migrate::{self, Migration};
use super::retention::{self, Retention};
use super::{BanRow, Ending, JobRow, NewJob, Phase, Store, StoreError, StoreResult};

/// The schema, step by step (never edit a released step: add one).
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    sealed BLOB NOT NULL,
    options TEXT NOT NULL,
    phase TEXT NOT NULL,
    progress TEXT NOT NULL,
    error TEXT,
    reply_code INTEGER,
    submitted INTEGER NOT NULL,
    started INTEGER,
    finished INTEGER,
    owner TEXT,
    lease_until INTEGER,
    runs TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX jobs_phase ON jobs (phase, id);
CREATE TABLE bans (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    until INTEGER NOT NULL,
    reason TEXT NOT NULL,
    lifted INTEGER NOT NULL,
    changed INTEGER NOT NULL,
    by TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE INDEX bans_changed ON bans (changed);
",
}];

pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    url: String,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let conn = Connection::open(path).map_err(|e| StoreError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Sqlite::setup(conn, url)
    }

    pub fn memory() -> Result<Sqlite, StoreError> {
        let url = "sqlite::memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|e| StoreError::Unreachable {
            url: url.clone(),
            message: e.to_string(),
        })?;
        Sqlite::setup(conn, url)
    }

    fn setup(mut conn: Connection, url: String) -> Result<Sqlite, StoreError> {
        let failed = |e: rusqlite::Error| StoreError::Failed {
            url: url.clone(),
            message: e.to_string(),
        };
        // WAL: a reader (the API) never waits for a writer (a progress write); another
        // process holding the file (a second fxprelay by mistake) makes us wait, not fail.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(failed)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(failed)?;
        migrate_schema(&mut conn).map_err(|e| match e {
            Migrate::Sql(e) => failed(e),
            Migrate::TooNew(t) => StoreError::Schema(t),
        })?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            url,
        })
    }

    /// Runs `f` on the connection, off the async threads.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, StoreResult<T>> {
        let conn = self.conn.clone();
        let url = self.url.clone();
        Box::pin(async move {
            let res = tokio::task::spawn_blocking(move || {
                let mut c = conn.lock().unwrap_or_else(PoisonError::into_inner);
                f(&mut c)
            })
            .await;
            match res {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StoreError::Failed {
                    url,
                    message: e.to_string(),
                }),
                Err(e) => Err(StoreError::Failed {
                    url,
                    message: e.to_string(),
                }),
            }
        })
    }
}

enum Migrate {
    Sql(rusqlite::Error),
    TooNew(migrate::TooNew),
}

fn migrate_schema(conn: &mut Connection) -> Result<(), Migrate> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(Migrate::Sql)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS fxprelay_schema (version INTEGER NOT NULL)")
        .map_err(Migrate::Sql)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM fxprelay_schema",
            [],
            |r| r.get(0),
        )
        .map_err(Migrate::Sql)?;
    let steps = migrate::pending(current, MIGRATIONS).map_err(Migrate::TooNew)?;
    for step in steps {
        tx.execute_batch(step.sql).map_err(Migrate::Sql)?;
        tx.execute(
            "INSERT INTO fxprelay_schema (version) VALUES (?1)",
            [step.version],
        )
        .map_err(Migrate::Sql)?;
    }
    tx.commit().map_err(Migrate::Sql)
}

const COLUMNS: &str = "id, source, destination, sealed, options, phase, progress, error, reply_code, \
     submitted, started, finished, owner, lease_until, runs";

fn job_row(r: &Row<'_>) -> rusqlite::Result<JobRow> {
    let bad = |i, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let phase: String = r.get(5)?;
    let runs: String = r.get(14)?;
    Ok(JobRow {
        id: r.get(0)?,
        source: r.get(1)?,
        destination: r.get(2)?,
        sealed: r.get(3)?,
        options: r.get(4)?,
        phase: Phase::from_word(&phase).ok_or_else(|| bad(5, format!("phase {phase:?}")))?,
        progress: r.get(6)?,
        error: r.get(7)?,
        reply_code: r.get(8)?,
        submitted: r.get(9)?,
        started: r.get(10)?,
        finished: r.get(11)?,
        owner: r.get(12)?,
        lease_until: r.get(13)?,
        runs: serde_json::from_str(&runs).map_err(|e| bad(14, e.to_string()))?,
    })
}

fn get_job(c: &Connection, id: &str) -> rusqlite::Result<Option<JobRow>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
        [id],
        job_row,
    )
    .optional()
}

impl Store for Sqlite {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn insert_job<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, StoreResult<()>> {
        let job = job.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO jobs (id, source, destination, sealed, options, phase, progress, submitted) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7)",
                params![
                    job.id,
                    job.source,
                    job.destination,
                    job.sealed,
                    job.options,
                    job.progress,
                    job.submitted
                ],
            )
            .map(drop)
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        let id = id.to_owned();
        self.call(move |c| get_job(c, &id))
    }

    fn jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>> {
        let after = after.unwrap_or("").to_owned();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE id > ?1 ORDER BY id LIMIT ?2"
            ))?;
            q.query_map(params![after, limit], job_row)?.collect()
        })
    }

    fn active_jobs(&self) -> BoxFuture<'_, StoreResult<usize>> {
        self.call(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE phase IN ('queued', 'running')",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    fn claim<'a>(
        &'a self,
        me: &'a str,
        now: Millis,
        lease: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        let me = me.to_owned();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The oldest claimable job (the WHERE says what `lease::claimable` says; the
            // check below keeps the two honest).
            let row = tx
                .query_row(
                    &format!(
                        "SELECT {COLUMNS} FROM jobs WHERE phase IN ('queued', 'interrupted') \
                         OR (phase = 'running' AND (lease_until IS NULL OR lease_until <= ?1)) \
                         ORDER BY id LIMIT 1"
                    ),
                    [now],
                    job_row,
                )
                .optional()?;
            let Some(mut row) = row else {
                return Ok(None);
            };
            let Some(runs) = row.claim(&me, now, lease) else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE jobs SET phase = 'running', owner = ?2, lease_until = ?3, \
                 started = COALESCE(started, ?4), finished = NULL, error = NULL, runs = ?5 \
                 WHERE id = ?1",
                params![row.id, me, row.lease_until, now, runs],
            )?;
            tx.commit()?;
            Ok(Some(row))
        })
    }

    fn renew<'a>(
        &'a self,
        id: &'a str,
        me: &'a str,
        now: Millis,
        lease: Millis,
        progress: &'a str,
    ) -> BoxFuture<'a, StoreResult<Renewal>> {
        let (id, me, progress) = (id.to_owned(), me.to_owned(), progress.to_owned());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let found: Option<(String, Option<String>)> = tx
                .query_row("SELECT phase, owner FROM jobs WHERE id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((phase, owner)) = found else {
                return Ok(Renewal::Lost);
            };
            let Some(phase) = Phase::from_word(&phase) else {
                return Ok(Renewal::Lost);
            };
            let renewal = lease::renewal(phase, owner.as_deref(), &me);
            if renewal == Renewal::Kept {
                tx.execute(
                    "UPDATE jobs SET lease_until = ?2, progress = ?3 WHERE id = ?1",
                    params![id, now.saturating_add(lease), progress],
                )?;
                tx.commit()?;
            }
            Ok(renewal)
        })
    }

    fn settle<'a>(
        &'a self,
        id: &'a str,
        me: &'a str,
        end: &'a Ending,
    ) -> BoxFuture<'a, StoreResult<()>> {
        let (id, me, end) = (id.to_owned(), me.to_owned(), end.clone());
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "UPDATE jobs SET phase = ?3, error = ?4, reply_code = ?5, progress = ?6, \
                 finished = ?7, lease_until = NULL \
                 WHERE id = ?1 AND owner = ?2 AND phase = 'running'",
                params![
                    id,
                    me,
                    end.phase.as_str(),
                    end.error,
                    end.reply_code,
                    end.progress,
                    end.at
                ],
            )?;
            if n == 0 {
                // Cancelled meanwhile: what had moved is still worth showing.
                tx.execute(
                    "UPDATE jobs SET progress = ?3, lease_until = NULL \
                     WHERE id = ?1 AND owner = ?2 AND phase = 'cancelled'",
                    params![id, me, end.progress],
                )?;
            }
            tx.commit()
        })
    }

    fn cancel<'a>(
        &'a self,
        id: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        let id = id.to_owned();
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "UPDATE jobs SET phase = 'cancelled', finished = ?2, error = NULL, reply_code = NULL \
                 WHERE id = ?1 AND phase IN ('queued', 'running', 'interrupted')",
                params![id, now],
            )?;
            let row = get_job(&tx, &id)?;
            tx.commit()?;
            Ok(row)
        })
    }

    fn interrupt_queued<'a>(
        &'a self,
        now: Millis,
        error: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>> {
        let error = error.to_owned();
        self.call(move |c| {
            let mut q = c.prepare_cached(&format!(
                "UPDATE jobs SET phase = 'interrupted', error = ?1, finished = ?2 \
                 WHERE phase = 'queued' RETURNING {COLUMNS}"
            ))?;
            q.query_map(params![error, now], job_row)?.collect()
        })
    }

    fn recover<'a>(&'a self, me: &'a str) -> BoxFuture<'a, StoreResult<usize>> {
        let me = me.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET lease_until = NULL WHERE phase = 'running' AND owner = ?1",
                [me],
            )
        })
    }

    fn prune(&self, keep: Retention, now: Millis) -> BoxFuture<'_, StoreResult<usize>> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let finished: Vec<(String, Millis)> = {
                let mut q = tx.prepare_cached(
                    "SELECT id, COALESCE(finished, submitted) FROM jobs \
                     WHERE phase IN ('done', 'failed', 'cancelled') \
                     ORDER BY COALESCE(finished, submitted) DESC, id DESC",
                )?;
                q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?
            };
            let gone = retention::expired(&finished, keep, now);
            for id in &gone {
                tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
            }
            tx.execute("DELETE FROM bans WHERE until < ?1", [now])?;
            tx.commit()?;
            Ok(gone.len())
        })
    }

    fn put_ban<'a>(&'a self, ban: &'a BanRow) -> BoxFuture<'a, StoreResult<()>> {
        let ban = ban.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO bans (tbl, key, until, reason, lifted, changed, by) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (tbl, key) DO UPDATE SET until = excluded.until, \
                 reason = excluded.reason, lifted = excluded.lifted, \
                 changed = excluded.changed, by = excluded.by",
                params![
                    ban.table,
                    ban.key,
                    ban.until,
                    ban.reason,
                    ban.lifted,
                    ban.changed,
                    ban.by
                ],
            )
            .map(drop)
        })
    }

    fn bans_since(&self, since: Millis, now: Millis) -> BoxFuture<'_, StoreResult<Vec<BanRow>>> {
        self.call(move |c| {
            let mut q = c.prepare_cached(
                "SELECT tbl, key, until, reason, lifted, changed, by FROM bans \
                 WHERE changed > ?1 AND until > ?2 ORDER BY changed",
            )?;
            q.query_map(params![since, now], |r| {
                Ok(BanRow {
                    table: r.get(0)?,
                    key: r.get(1)?,
                    until: r.get(2)?,
                    reason: r.get(3)?,
                    lifted: r.get(4)?,
                    changed: r.get(5)?,
                    by: r.get(6)?,
                })
            })?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> NewJob {
        NewJob {
            id: id.into(),
            source: "ftp://a/x".into(),
            destination: "ftp://b/x".into(),
            sealed: vec![1, 2, 3],
            options: "{}".into(),
            progress: "{}".into(),
            submitted: 1,
        }
    }

    #[tokio::test]
    async fn a_job_is_claimed_once_renewed_and_taken_over_after_its_lease() {
        let s = Sqlite::memory().unwrap();
        s.insert_job(&job("j1")).await.unwrap();
        let a = s.claim("a", 100, 1_000).await.unwrap().unwrap();
        assert_eq!(a.id, "j1");
        assert!(s.claim("b", 500, 1_000).await.unwrap().is_none());
        assert_eq!(
            s.renew("j1", "a", 900, 1_000, "{}").await.unwrap(),
            Renewal::Kept
        );
        // Renewed to 1900: not before.
        assert!(s.claim("b", 1_800, 1_000).await.unwrap().is_none());
        let b = s.claim("b", 1_900, 1_000).await.unwrap().unwrap();
        assert_eq!(
            b.runs
                .iter()
                .map(|r| r.instance.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(
            s.renew("j1", "a", 2_000, 1_000, "{}").await.unwrap(),
            Renewal::Lost
        );
        // a's late ending does not overwrite b's run.
        let end = Ending {
            phase: Phase::Failed,
            error: Some("late".into()),
            reply_code: None,
            progress: "{}".into(),
            at: 2_000,
        };
        s.settle("j1", "a", &end).await.unwrap();
        assert_eq!(s.job("j1").await.unwrap().unwrap().phase, Phase::Running);
        s.settle(
            "j1",
            "b",
            &Ending {
                phase: Phase::Done,
                error: None,
                ..end
            },
        )
        .await
        .unwrap();
        let row = s.job("j1").await.unwrap().unwrap();
        assert_eq!((row.phase, row.finished), (Phase::Done, Some(2_000)));
    }

    #[tokio::test]
    async fn a_cancel_reaches_the_runner_at_its_next_renewal() {
        let s = Sqlite::memory().unwrap();
        s.insert_job(&job("j1")).await.unwrap();
        s.claim("a", 0, 10_000).await.unwrap().unwrap();
        let row = s.cancel("j1", 5).await.unwrap().unwrap();
        assert_eq!(row.phase, Phase::Cancelled);
        assert_eq!(
            s.renew("j1", "a", 6, 10_000, "{}").await.unwrap(),
            Renewal::Cancelled
        );
        assert!(s.cancel("nope", 5).await.unwrap().is_none());
        assert!(s.claim("b", 1_000_000, 1).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_restarted_instance_reclaims_its_own_jobs_at_once() {
        let s = Sqlite::memory().unwrap();
        s.insert_job(&job("j1")).await.unwrap();
        s.claim("a", 0, 60_000).await.unwrap().unwrap();
        assert!(s.claim("a", 1, 60_000).await.unwrap().is_none());
        assert_eq!(s.recover("a").await.unwrap(), 1);
        assert!(s.claim("a", 1, 60_000).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn finished_jobs_beyond_the_count_are_pruned() {
        let s = Sqlite::memory().unwrap();
        for i in 0..3 {
            let id = format!("j{i}");
            s.insert_job(&job(&id)).await.unwrap();
            s.cancel(&id, 10 + i).await.unwrap();
        }
        s.insert_job(&job("q")).await.unwrap();
        let keep = Retention {
            keep_finished: 2,
            keep_for: std::time::Duration::from_secs(60),
        };
        assert_eq!(s.prune(keep, 20).await.unwrap(), 1);
        let ids: Vec<String> = s
            .jobs(None, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["j1", "j2", "q"]);
    }

    #[test]
    fn a_schema_newer_than_the_binary_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Sqlite::open(&path).unwrap());
        let c = Connection::open(&path).unwrap();
        c.execute("INSERT INTO fxprelay_schema (version) VALUES (99)", [])
            .unwrap();
        drop(c);
        match Sqlite::open(&path) {
            Err(StoreError::Schema(t)) => assert_eq!((t.found, t.known), (99, 1)),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("opened a newer schema"),
        }
    }

    #[tokio::test]
    async fn bans_changed_since_a_time_are_read_until_they_run_out() {
        let s = Sqlite::memory().unwrap();
        let ban = BanRow {
            table: "defense".into(),
            key: "192.0.2.7".into(),
            until: 1_000,
            reason: "login failures".into(),
            lifted: false,
            changed: 10,
            by: "a".into(),
        };
        s.put_ban(&ban).await.unwrap();
        assert_eq!(s.bans_since(0, 5).await.unwrap(), vec![ban.clone()]);
        assert!(s.bans_since(10, 5).await.unwrap().is_empty());
        assert!(s.bans_since(0, 1_000).await.unwrap().is_empty());
        let lifted = BanRow {
            lifted: true,
            changed: 20,
            ..ban
        };
        s.put_ban(&lifted).await.unwrap();
        assert_eq!(s.bans_since(10, 5).await.unwrap(), vec![lifted]);
    }
}
