//! Storage of the audit trail: sealed entries, checkpoints, payloads, and the
//! cursor over the governance history. Appends are one `BEGIN IMMEDIATE`
//! transaction per batch (one sync for many entries: group commit), and only
//! when the stored head is where the writer thinks it is, so two processes
//! appending to one tenant can never fork its chain.

use sqlx::{AnyConnection, Row};

use crate::records::EventRecord;
use crate::{Result, TenantStore};

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: i64,
    pub body: String,
    pub mac: String,
    pub cosign: Option<String>,
}

/// The full data kept beside an entry: the call's input, its output and its
/// import journal (viewers only; the entry holds their digests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub input: Option<String>,
    pub output: Option<String>,
    pub journal: Option<String>,
}

impl Payload {
    /// A payload holding only a call's input.
    pub fn input(input: &str) -> Payload {
        Payload {
            input: Some(input.to_owned()),
            ..Payload::default()
        }
    }
}

/// Rows per multi-row INSERT (4 parameters each, far below SQLite's limit
/// of 32,766 and PostgreSQL's of 65,535 parameters per statement).
const ROWS_PER_INSERT: usize = 256;

/// `($1, …, $cols), ($cols+1, …), …` for `rows` rows: numbered placeholders,
/// which both SQLite and PostgreSQL read (sqlx's `QueryBuilder` on the `Any`
/// driver writes `?`, which PostgreSQL does not).
fn values(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let cells: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What one group commit writes.
#[derive(Debug, Default)]
pub struct AuditBatch {
    /// The sequence number the first row must have.
    pub first_seq: i64,
    pub rows: Vec<AuditRow>,
    /// (seq, payload) of calls whose payloads are kept.
    pub payloads: Vec<(i64, Payload)>,
    /// (tree size, signed note, time in ms).
    pub checkpoint: Option<(i64, String, i64)>,
    /// The governance history is chained up to this event.
    pub events_seq: Option<i64>,
}

/// The tenant's writer lock held for one audit batch: read what other
/// writers appended since this writer's head, seal on top of it, append.
/// Holding the lock from the read to the commit is what makes the append
/// succeed first time with several writers (processes or nodes): nobody
/// can move the head in between. Dropped without [`AuditSession::append`],
/// nothing is written.
pub struct AuditSession {
    tx: sqlx::Transaction<'static, sqlx::Any>,
}

impl std::fmt::Debug for AuditSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSession").finish_non_exhaustive()
    }
}

impl AuditSession {
    /// Stored entries with `seq >= from`, at most `limit`, in order.
    pub async fn rows(&mut self, from: i64, limit: i64) -> Result<Vec<AuditRow>> {
        rows_on(&mut self.tx, from, limit).await
    }

    /// How far the governance history has been chained.
    pub async fn events_cursor(&mut self) -> Result<i64> {
        events_cursor_on(&mut self.tx).await
    }

    /// Governance events after `seq`, oldest first, at most `limit`.
    pub async fn events_after(&mut self, seq: i64, limit: i64) -> Result<Vec<EventRecord>> {
        events_after_on(&mut self.tx, seq, limit).await
    }

    /// Appends the batch and commits. `Ok(false)`: the stored chain is not
    /// where the batch starts; nothing was written.
    pub async fn append(self, batch: &AuditBatch) -> Result<bool> {
        append(self.tx, batch).await
    }
}

impl TenantStore {
    /// Takes the tenant's writer lock for one audit batch.
    pub async fn audit_session(&self) -> Result<AuditSession> {
        Ok(AuditSession {
            tx: self.write().await?,
        })
    }

    /// Appends a batch atomically. `Ok(false)`: the stored chain has moved
    /// (another writer appended); nothing was written.
    pub async fn append_audit(&self, batch: &AuditBatch) -> Result<bool> {
        append(self.write().await?, batch).await
    }
    /// Stored entries with `seq >= from`, at most `limit`, in order.
    pub async fn audit_rows(&self, from: i64, limit: i64) -> Result<Vec<AuditRow>> {
        rows_on(&mut *self.read().await?, from, limit).await
    }

    /// Every checkpoint: (size, note), smallest first.
    pub async fn audit_checkpoints(&self) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT size, note FROM audit_checkpoints ORDER BY size")
            .fetch_all(&mut *self.read().await?)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("size")?, r.try_get("note")?)))
            .collect()
    }

    /// Adds a checkpoint (ignored when one of that size exists).
    pub async fn add_audit_checkpoint(&self, size: i64, note: &str, at_ms: i64) -> Result<()> {
        let query = sqlx::query(
            "INSERT INTO audit_checkpoints (size, note, at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(size)
        .bind(note)
        .bind(at_ms);
        self.execute_one(query).await?;
        Ok(())
    }

    /// The stored payload of one entry.
    pub async fn audit_payload(&self, seq: i64) -> Result<Option<Payload>> {
        let row = sqlx::query("SELECT input, output, journal FROM audit_payloads WHERE seq = $1")
            .bind(seq)
            .fetch_optional(&mut *self.read().await?)
            .await?;
        row.map(|r| {
            Ok(Payload {
                input: r.try_get("input")?,
                output: r.try_get("output")?,
                journal: r.try_get("journal")?,
            })
        })
        .transpose()
    }

    /// The entries of one invocation (its decision and completion), by
    /// sequence number.
    pub async fn audit_invocation(&self, invocation: &str) -> Result<Vec<AuditRow>> {
        let rows = sqlx::query(if self.postgres() {
            "SELECT seq, body, mac, cosign FROM audit_entries \
                 WHERE (body::jsonb ->> 'invocation') = $1 ORDER BY seq"
        } else {
            "SELECT seq, body, mac, cosign FROM audit_entries \
                 WHERE json_extract(body, '$.invocation') = $1 ORDER BY seq"
        })
        .bind(invocation)
        .fetch_all(&mut *self.read().await?)
        .await?;
        rows.iter().map(audit_row).collect()
    }

    /// How far the governance history has been chained.
    pub async fn audit_events_cursor(&self) -> Result<i64> {
        events_cursor_on(&mut *self.read().await?).await
    }

    /// Governance events after `seq`, oldest first, at most `limit`.
    pub async fn events_after(&self, seq: i64, limit: i64) -> Result<Vec<EventRecord>> {
        events_after_on(&mut *self.read().await?, seq, limit).await
    }
}

// The queries shared by the session (inside the writer's lock) and the
// plain readers: one text each, whichever connection runs it.

async fn rows_on(c: &mut AnyConnection, from: i64, limit: i64) -> Result<Vec<AuditRow>> {
    let rows = sqlx::query(
        "SELECT seq, body, mac, cosign FROM audit_entries WHERE seq >= $1 ORDER BY seq LIMIT $2",
    )
    .bind(from)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(audit_row).collect()
}

async fn events_cursor_on(c: &mut AnyConnection) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT events_seq FROM audit_cursor WHERE id = 1")
            .fetch_one(c)
            .await?,
    )
}

async fn events_after_on(c: &mut AnyConnection, seq: i64, limit: i64) -> Result<Vec<EventRecord>> {
    let rows = sqlx::query(
        "SELECT seq, at, actor, action, subject, detail FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(seq)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter().map(crate::tenant::event_row).collect()
}

/// One `audit_entries` row (`seq, body, mac, cosign`).
fn audit_row(r: &sqlx::any::AnyRow) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: r.try_get("seq")?,
        body: r.try_get("body")?,
        mac: r.try_get("mac")?,
        cosign: r.try_get("cosign")?,
    })
}

/// The append itself, in the writer's transaction `tx`.
async fn append(mut tx: sqlx::Transaction<'static, sqlx::Any>, batch: &AuditBatch) -> Result<bool> {
    let next: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq) + 1, 0) FROM audit_entries")
        .fetch_one(&mut *tx)
        .await?;
    if next != batch.first_seq {
        tx.rollback().await?;
        return Ok(false);
    }
    // Multi-row inserts: one statement per chunk instead of one per row
    // (each statement is a round trip to SQLite's worker thread).
    for chunk in batch.rows.chunks(ROWS_PER_INSERT) {
        let q = format!(
            "INSERT INTO audit_entries (seq, body, mac, cosign) VALUES {}",
            values(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        for r in chunk {
            query = query.bind(r.seq).bind(&r.body).bind(&r.mac).bind(&r.cosign);
        }
        query.execute(&mut *tx).await?;
    }
    for chunk in batch.payloads.chunks(ROWS_PER_INSERT) {
        let q = format!(
            "INSERT INTO audit_payloads (seq, input, output, journal) VALUES {}",
            values(chunk.len(), 4)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(q));
        for (seq, p) in chunk {
            query = query
                .bind(*seq)
                .bind(&p.input)
                .bind(&p.output)
                .bind(&p.journal);
        }
        query.execute(&mut *tx).await?;
    }
    if let Some((size, note, at)) = &batch.checkpoint {
        sqlx::query(
            "INSERT INTO audit_checkpoints (size, note, at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(size)
        .bind(note)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    if let Some(seq) = batch.events_seq {
        sqlx::query("UPDATE audit_cursor SET events_seq = $1 WHERE id = 1 AND events_seq < $2")
            .bind(seq)
            .bind(seq)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(true)
}
