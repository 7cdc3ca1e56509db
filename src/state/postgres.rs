//! The PostgreSQL backend (tokio-postgres), for a fleet: every instance reads and writes
//! the same tables. A job is claimed with `SELECT ... FOR UPDATE SKIP LOCKED` in the
//! transaction that marks it, so two instances never claim one job; the lease the
//! claimant renews decides when another may take it over ([`super::lease`]).
//!
//! The connection is made again when it has dropped (the server restarted): a call
//! while the server is away fails with [`StoreError::Unreachable`] and the next one
//! tries again.

use futures_util::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls, Row};

use super::lease::{self, Millis, Renewal};
use super::migrate::{self, Migration};
use super::retention::{self, Retention};
use super::{BanRow, Ending, JobRow, NewJob, Phase, Store, StoreError, StoreResult};
use crate::config::state_url_without_password;

/// The schema, step by step (never edit a released step: add one).
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    sql: "
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    destination TEXT NOT NULL,
    sealed BYTEA NOT NULL,
    options TEXT NOT NULL,
    phase TEXT NOT NULL,
    progress TEXT NOT NULL,
    error TEXT,
    reply_code INTEGER,
    submitted BIGINT NOT NULL,
    started BIGINT,
    finished BIGINT,
    owner TEXT,
    lease_until BIGINT,
    runs TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX jobs_phase ON jobs (phase, id);
CREATE TABLE bans (
    tbl TEXT NOT NULL,
    key TEXT NOT NULL,
    until BIGINT NOT NULL,
    reason TEXT NOT NULL,
    lifted BOOLEAN NOT NULL,
    changed BIGINT NOT NULL,
    by_instance TEXT NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE INDEX bans_changed ON bans (changed);
",
}];

/// Any number, so two instances starting at once migrate one after the other.
const MIGRATION_LOCK: i64 = 0x6678_7072_656c_6179; // "fxprelay"

pub struct Postgres {
    url: String,
    shown: String,
    client: Mutex<Option<Client>>,
}

const COLUMNS: &str = "id, source, destination, sealed, options, phase, progress, error, reply_code, \
     submitted, started, finished, owner, lease_until, runs";

fn job_row(r: &Row) -> Result<JobRow, StoreError> {
    let phase: String = r.get(5);
    let runs: String = r.get(14);
    let code: Option<i32> = r.get(8);
    Ok(JobRow {
        id: r.get(0),
        source: r.get(1),
        destination: r.get(2),
        sealed: r.get(3),
        options: r.get(4),
        phase: Phase::from_word(&phase)
            .ok_or_else(|| StoreError::Corrupt(format!("phase {phase:?}")))?,
        progress: r.get(6),
        error: r.get(7),
        reply_code: code.and_then(|c| u16::try_from(c).ok()),
        submitted: r.get(9),
        started: r.get(10),
        finished: r.get(11),
        owner: r.get(12),
        lease_until: r.get(13),
        runs: serde_json::from_str(&runs).map_err(|e| StoreError::Corrupt(e.to_string()))?,
    })
}

impl Postgres {
    /// Connects and migrates; an unreachable server is an error naming the URL (without
    /// its password).
    pub async fn connect(url: &str) -> Result<Postgres, StoreError> {
        let pg = Postgres {
            url: url.to_owned(),
            shown: state_url_without_password(url),
            client: Mutex::new(None),
        };
        let mut guard = pg.client.lock().await;
        let client = pg.connected(&mut guard).await?;
        pg.migrate(client).await?;
        drop(guard);
        Ok(pg)
    }

    fn failed(&self, e: tokio_postgres::Error) -> StoreError {
        // A closed connection or a refused one: the server is away, not the query wrong.
        if e.is_closed() || e.as_db_error().is_none() {
            StoreError::Unreachable {
                url: self.shown.clone(),
                message: e.to_string(),
            }
        } else {
            StoreError::Failed {
                url: self.shown.clone(),
                message: e.to_string(),
            }
        }
    }

    /// The client, connected again if the last one dropped.
    async fn connected<'g>(
        &self,
        slot: &'g mut Option<Client>,
    ) -> Result<&'g mut Client, StoreError> {
        if slot.as_ref().is_none_or(Client::is_closed) {
            let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(|e| StoreError::Unreachable {
                    url: self.shown.clone(),
                    message: e.to_string(),
                })?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::warn!(error = %e, "state store connection ended");
                }
            });
            *slot = Some(client);
        }
        Ok(slot.as_mut().expect("just connected"))
    }

    async fn migrate(&self, client: &mut Client) -> Result<(), StoreError> {
        let tx = client.transaction().await.map_err(|e| self.failed(e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| self.failed(e))?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS fxprelay_schema (version BIGINT NOT NULL)")
            .await
            .map_err(|e| self.failed(e))?;
        let current: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM fxprelay_schema",
                &[],
            )
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        for step in migrate::pending(current, MIGRATIONS)? {
            tx.batch_execute(step.sql)
                .await
                .map_err(|e| self.failed(e))?;
            tx.execute(
                "INSERT INTO fxprelay_schema (version) VALUES ($1)",
                &[&step.version],
            )
            .await
            .map_err(|e| self.failed(e))?;
        }
        tx.commit().await.map_err(|e| self.failed(e))
    }
}

/// Runs the body with the connected client as `c`, mapping errors; one call at a time
/// on the one connection (each is short; the store is not the hot path).
macro_rules! with_client {
    ($self:ident, |$c:ident| $body:expr) => {{
        let mut guard = $self.client.lock().await;
        let $c = $self.connected(&mut guard).await?;
        let res: Result<_, tokio_postgres::Error> = async { $body }.await;
        res.map_err(|e| $self.failed(e))
    }};
}

impl Store for Postgres {
    fn url(&self) -> String {
        self.shown.clone()
    }

    fn insert_job<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            with_client!(self, |c| {
                c
                .execute(
                    "INSERT INTO jobs (id, source, destination, sealed, options, phase, progress, submitted) \
                     VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7)",
                    &[
                        &job.id,
                        &job.source,
                        &job.destination,
                        &job.sealed,
                        &job.options,
                        &job.progress,
                        &job.submitted,
                    ],
                )
                .await
                .map(drop)
            })
        })
    }

    fn job<'a>(&'a self, id: &'a str) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        Box::pin(async move {
            let row = with_client!(self, |c| c
                .query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
                .await)?;
            row.as_ref().map(job_row).transpose()
        })
    }

    fn jobs<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>> {
        Box::pin(async move {
            let after = after.unwrap_or("");
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = with_client!(self, |c| c
                .query(
                    &format!("SELECT {COLUMNS} FROM jobs WHERE id > $1 ORDER BY id LIMIT $2"),
                    &[&after, &limit],
                )
                .await)?;
            rows.iter().map(job_row).collect()
        })
    }

    fn active_jobs(&self) -> BoxFuture<'_, StoreResult<usize>> {
        Box::pin(async move {
            let row = with_client!(self, |c| c
                .query_one(
                    "SELECT COUNT(*) FROM jobs WHERE phase IN ('queued', 'running')",
                    &[],
                )
                .await)?;
            Ok(row.get::<_, i64>(0) as usize)
        })
    }

    fn claim<'a>(
        &'a self,
        me: &'a str,
        now: Millis,
        lease: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        Box::pin(async move {
            let mut guard = self.client.lock().await;
            let c = self.connected(&mut guard).await?;
            let tx = c.transaction().await.map_err(|e| self.failed(e))?;
            // SKIP LOCKED: a job another instance is claiming right now is passed over,
            // never waited for and never claimed twice.
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM jobs WHERE phase IN ('queued', 'interrupted') \
                         OR (phase = 'running' AND (lease_until IS NULL OR lease_until <= $1)) \
                         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
                    ),
                    &[&now],
                )
                .await
                .map_err(|e| self.failed(e))?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut row = job_row(&row)?;
            let Some(runs) = row.claim(me, now, lease) else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE jobs SET phase = 'running', owner = $2, lease_until = $3, \
                 started = COALESCE(started, $4), finished = NULL, error = NULL, runs = $5 \
                 WHERE id = $1",
                &[&row.id, &me, &row.lease_until, &now, &runs],
            )
            .await
            .map_err(|e| self.failed(e))?;
            tx.commit().await.map_err(|e| self.failed(e))?;
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
        Box::pin(async move {
            let until = now.saturating_add(lease);
            let found = with_client!(self, |c| {
                let n = c
                    .execute(
                        "UPDATE jobs SET lease_until = $3, progress = $4 \
                         WHERE id = $1 AND owner = $2 AND phase = 'running'",
                        &[&id, &me, &until, &progress],
                    )
                    .await?;
                if n == 1 {
                    return Ok(None);
                }
                c.query_opt("SELECT phase, owner FROM jobs WHERE id = $1", &[&id])
                    .await
                    .map(Some)
            })?;
            Ok(match found {
                None => Renewal::Kept,
                Some(None) => Renewal::Lost,
                Some(Some(r)) => {
                    let phase: String = r.get(0);
                    let owner: Option<String> = r.get(1);
                    match Phase::from_word(&phase) {
                        Some(p) => lease::renewal(p, owner.as_deref(), me),
                        None => Renewal::Lost,
                    }
                }
            })
        })
    }

    fn settle<'a>(
        &'a self,
        id: &'a str,
        me: &'a str,
        end: &'a Ending,
    ) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            let code = end.reply_code.map(i32::from);
            with_client!(self, |c| {
                let n = c
                    .execute(
                        "UPDATE jobs SET phase = $3, error = $4, reply_code = $5, progress = $6, \
                         finished = $7, lease_until = NULL \
                         WHERE id = $1 AND owner = $2 AND phase = 'running'",
                        &[
                            &id,
                            &me,
                            &end.phase.as_str(),
                            &end.error,
                            &code,
                            &end.progress,
                            &end.at,
                        ],
                    )
                    .await?;
                if n == 0 {
                    c.execute(
                        "UPDATE jobs SET progress = $3, lease_until = NULL \
                         WHERE id = $1 AND owner = $2 AND phase = 'cancelled'",
                        &[&id, &me, &end.progress],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn cancel<'a>(
        &'a self,
        id: &'a str,
        now: Millis,
    ) -> BoxFuture<'a, StoreResult<Option<JobRow>>> {
        Box::pin(async move {
            with_client!(self, |c| {
                c
                .execute(
                    "UPDATE jobs SET phase = 'cancelled', finished = $2, error = NULL, reply_code = NULL \
                     WHERE id = $1 AND phase IN ('queued', 'running', 'interrupted')",
                    &[&id, &now],
                )
                .await
            })?;
            self.job(id).await
        })
    }

    fn interrupt_queued<'a>(
        &'a self,
        now: Millis,
        error: &'a str,
    ) -> BoxFuture<'a, StoreResult<Vec<JobRow>>> {
        Box::pin(async move {
            let rows = with_client!(self, |c| c
                .query(
                    &format!(
                        "UPDATE jobs SET phase = 'interrupted', error = $1, finished = $2 \
                         WHERE phase = 'queued' RETURNING {COLUMNS}"
                    ),
                    &[&error, &now],
                )
                .await)?;
            rows.iter().map(job_row).collect()
        })
    }

    fn recover<'a>(&'a self, me: &'a str) -> BoxFuture<'a, StoreResult<usize>> {
        Box::pin(async move {
            let n = with_client!(self, |c| c
                .execute(
                    "UPDATE jobs SET lease_until = NULL WHERE phase = 'running' AND owner = $1",
                    &[&me],
                )
                .await)?;
            Ok(n as usize)
        })
    }

    fn prune(&self, keep: Retention, now: Millis) -> BoxFuture<'_, StoreResult<usize>> {
        Box::pin(async move {
            let rows = with_client!(self, |c| c
                .query(
                    "SELECT id, COALESCE(finished, submitted) FROM jobs \
                     WHERE phase IN ('done', 'failed', 'cancelled') \
                     ORDER BY COALESCE(finished, submitted) DESC, id DESC",
                    &[],
                )
                .await)?;
            let finished: Vec<(String, Millis)> =
                rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let gone: Vec<String> = retention::expired(&finished, keep, now)
                .into_iter()
                .map(str::to_owned)
                .collect();
            with_client!(self, |c| {
                c.execute("DELETE FROM jobs WHERE id = ANY($1)", &[&gone])
                    .await?;
                c.execute("DELETE FROM bans WHERE until < $1", &[&now])
                    .await
            })?;
            Ok(gone.len())
        })
    }

    fn put_ban<'a>(&'a self, ban: &'a BanRow) -> BoxFuture<'a, StoreResult<()>> {
        Box::pin(async move {
            with_client!(self, |c| c
                .execute(
                    "INSERT INTO bans (tbl, key, until, reason, lifted, changed, by_instance) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (tbl, key) DO UPDATE SET until = excluded.until, \
                     reason = excluded.reason, lifted = excluded.lifted, \
                     changed = excluded.changed, by_instance = excluded.by_instance",
                    &[
                        &ban.table,
                        &ban.key,
                        &ban.until,
                        &ban.reason,
                        &ban.lifted,
                        &ban.changed,
                        &ban.by,
                    ],
                )
                .await
                .map(drop))
        })
    }

    fn bans_since(&self, since: Millis, now: Millis) -> BoxFuture<'_, StoreResult<Vec<BanRow>>> {
        Box::pin(async move {
            let rows = with_client!(self, |c| c
                .query(
                    "SELECT tbl, key, until, reason, lifted, changed, by_instance FROM bans \
                     WHERE changed > $1 AND until > $2 ORDER BY changed",
                    &[&since, &now],
                )
                .await)?;
            Ok(rows
                .iter()
                .map(|r| BanRow {
                    table: r.get(0),
                    key: r.get(1),
                    until: r.get(2),
                    reason: r.get(3),
                    lifted: r.get(4),
                    changed: r.get(5),
                    by: r.get(6),
                })
                .collect())
        })
    }
}
