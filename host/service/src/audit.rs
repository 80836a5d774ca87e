//! The audit writer: one task per tenant that seals entries into the chain
//! and commits them in groups (one SQLite transaction, so one sync, for
//! everything that arrived meanwhile). Callers wait until their entry is
//! durable. It also chains the governance history (the `events` table is the
//! outbox: each change writes its event in its own transaction, the writer
//! seals it soon after and on every sync), issues signed checkpoints, and
//! rotates keys by age, count or request.
//!
//! Fail closed: if the audit write fails, the caller gets an error, and the
//! call path does not run the tool (or does not answer success).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use warden_audit::{Chain, Entry, KeyFile, KeyPair, Record, sha256_hex};
use warden_store::{AuditBatch, AuditRow, AuditSession, Payload, TenantStore};

use crate::secrets::TenantSecrets;
use crate::{Error, Result};

/// Most entries per group commit.
const MAX_BATCH: usize = 1024;
/// A checkpoint at least this often while entries arrive...
const CHECKPOINT_EVERY_MS: i64 = 1000;
/// ...or after this many entries.
const CHECKPOINT_EVERY_ENTRIES: u64 = 1000;
/// Rotate keys after this long...
pub const ROTATE_AFTER_MS: i64 = 30 * 24 * 3600 * 1000;
/// ...or after this many entries under one key.
pub const ROTATE_AFTER_ENTRIES: u64 = 10_000_000;

/// One request to a tenant's writer.
enum Msg {
    Append {
        entry: Box<Entry>,
        payload: Option<Payload>,
        done: oneshot::Sender<Result<u64>>,
    },
    Rotate {
        actor: String,
        reason: String,
        done: oneshot::Sender<Result<u64>>,
    },
    /// Chain pending governance events and checkpoint the current size.
    Sync { done: oneshot::Sender<Result<u64>> },
}

impl Msg {
    fn fail(self, e: &Error) {
        let err = Error::Internal(format!("audit trail: {e}"));
        let _ = match self {
            Msg::Append { done, .. } | Msg::Rotate { done, .. } | Msg::Sync { done } => {
                done.send(Err(err))
            }
        };
    }
}

/// The audit writers of all tenants. Public for embedding and benchmarks;
/// the host uses one per data directory.
pub struct AuditLog {
    keys_dir: PathBuf,
    writers: Mutex<HashMap<String, mpsc::Sender<Msg>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("keys_dir", &self.keys_dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    pub fn new(data_dir: &Path) -> AuditLog {
        AuditLog {
            keys_dir: data_dir.join("audit-keys"),
            writers: Mutex::new(HashMap::new()),
        }
    }

    fn writer(&self, store: &TenantStore, tenant: &str) -> mpsc::Sender<Msg> {
        let mut map = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = map.get(tenant)
            && !tx.is_closed()
        {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(64 * 1024);
        let w = Writer {
            tenant: tenant.to_owned(),
            store: store.clone(),
            key_path: self.keys_dir.join(format!("{tenant}.json")),
        };
        tokio::spawn(w.run(rx));
        map.insert(tenant.to_owned(), tx.clone());
        tx
    }

    async fn ask(
        &self,
        store: &TenantStore,
        tenant: &str,
        make: impl FnOnce(oneshot::Sender<Result<u64>>) -> Msg,
    ) -> Result<u64> {
        let (done, rx) = oneshot::channel();
        self.writer(store, tenant)
            .send(make(done))
            .await
            .map_err(|_| Error::Internal("audit trail: the writer stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("audit trail: the writer stopped".into()))?
    }

    /// Queues one entry; the receiver answers with its sequence number once
    /// it is durable (or with the error that kept it from being written).
    pub async fn enqueue(
        &self,
        store: &TenantStore,
        entry: Entry,
        payload: Option<Payload>,
    ) -> Result<oneshot::Receiver<Result<u64>>> {
        let (done, rx) = oneshot::channel();
        let tenant = entry.tenant.clone();
        self.writer(store, &tenant)
            .send(Msg::Append {
                entry: Box::new(entry),
                payload,
                done,
            })
            .await
            .map_err(|_| Error::Internal("audit trail: the writer stopped".into()))?;
        Ok(rx)
    }

    /// Appends one entry; returns its sequence number once it is durable.
    pub async fn append(
        &self,
        store: &TenantStore,
        entry: Entry,
        payload: Option<Payload>,
    ) -> Result<u64> {
        durable(self.enqueue(store, entry, payload).await?).await
    }

    /// Chains pending governance events and checkpoints; returns the size.
    pub async fn sync(&self, store: &TenantStore, tenant: &str) -> Result<u64> {
        self.ask(store, tenant, |done| Msg::Sync { done }).await
    }

    /// Rotates the tenant's keys now.
    pub async fn rotate(
        &self,
        store: &TenantStore,
        tenant: &str,
        actor: &str,
        reason: &str,
    ) -> Result<u64> {
        self.ask(store, tenant, |done| Msg::Rotate {
            actor: actor.to_owned(),
            reason: reason.to_owned(),
            done,
        })
        .await
    }

    /// The tenant's key file (for its public keys).
    pub fn keys(&self, tenant: &str) -> Result<KeyFile> {
        read_keys(&self.keys_dir.join(format!("{tenant}.json")))?
            .ok_or_else(|| Error::NotFound(format!("audit keys of tenant `{tenant}`")))
    }

    /// Checkpoints every open tenant (on shutdown).
    pub async fn flush(&self, store: &warden_store::Store) {
        let tenants: Vec<String> = self
            .writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for t in tenants {
            if let Ok(s) = store.tenant(&t).await
                && let Err(e) = self.sync(&s, &t).await
            {
                tracing::error!(tenant = %t, error = %e, "final audit checkpoint failed");
            }
        }
        // Dropping the senders ends the writer tasks (they see their channel
        // close); a later append starts a fresh writer.
        self.writers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

/// Waits for a queued entry to be durable.
/// The write-ahead records of one call: before each effect that leaves the
/// sandbox, an `import.decided` entry (the call's ids, the import call and
/// its decision) is appended and awaited until durable.
#[derive(Debug)]
pub(crate) struct CallWriteAhead {
    sender: mpsc::Sender<Msg>,
    template: Entry,
}

impl warden_runtime::WriteAhead for CallWriteAhead {
    fn before_effect(
        &self,
        event: warden_runtime::ImportEvent,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>> {
        let mut e = self.template.clone();
        e.kind = "import.decided".into();
        e.time_ms = now_ms();
        e.decision = Some("allow".into());
        e.rule = Some("grant".into());
        e.detail = serde_json::json!({
            "import": event.seq,
            "capability": event.capability,
            "operation": event.operation,
            "resource": event.resource,
        });
        let sender = self.sender.clone();
        Box::pin(async move {
            let stopped = || "the audit writer stopped".to_owned();
            let (done, rx) = oneshot::channel();
            sender
                .send(Msg::Append {
                    entry: Box::new(e),
                    payload: None,
                    done,
                })
                .await
                .map_err(|_| stopped())?;
            match rx.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(stopped()),
            }
        })
    }
}

impl AuditLog {
    /// The write-ahead hook of one call; `template` carries the call's ids.
    pub(crate) fn write_ahead(
        &self,
        store: &TenantStore,
        template: Entry,
    ) -> Arc<dyn warden_runtime::WriteAhead> {
        let sender = self.writer(store, &template.tenant);
        Arc::new(CallWriteAhead { sender, template })
    }
}

pub(crate) async fn durable(rx: oneshot::Receiver<Result<u64>>) -> Result<u64> {
    rx.await
        .map_err(|_| Error::Internal("audit trail: the writer stopped".into()))?
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn read_keys(path: &Path) -> Result<Option<KeyFile>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let k: KeyFile = serde_json::from_slice(&bytes)
                .map_err(|e| Error::Internal(format!("audit key file {}: {e}", path.display())))?;
            if k.format != KeyFile::FORMAT || k.pairs.is_empty() {
                return Err(Error::Internal(format!(
                    "audit key file {} is not a {} file with a key",
                    path.display(),
                    KeyFile::FORMAT
                )));
            }
            Ok(Some(k))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Internal(format!(
            "reading audit key file {}: {e}",
            path.display()
        ))),
    }
}

/// Creates the key file with `keys` unless it exists, and returns what the
/// file then holds: several processes (nodes sharing the directory) opening
/// a new tenant's trail at once all end up with the one key that won,
/// instead of each sealing with its own (a hard link to a complete file
/// either creates the name or fails; it never replaces).
fn create_keys(path: &Path, keys: KeyFile) -> Result<KeyFile> {
    let tmp = write_tmp(path, &keys)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(keys),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_keys(path)?
            .ok_or_else(|| Error::Internal(format!("audit key file {} vanished", path.display()))),
        Err(e) => Err(Error::Internal(format!(
            "writing audit key file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes the key file atomically with mode 0600 (directory 0700).
fn write_keys(path: &Path, keys: &KeyFile) -> Result<()> {
    let tmp = write_tmp(path, keys)?;
    std::fs::rename(&tmp, path)
        .map_err(|e| Error::Internal(format!("writing audit key file {}: {e}", path.display())))
}

/// Writes `keys` to a temporary file beside `path` (unique to this process
/// and call), synced, mode 0600; returns its path.
fn write_tmp(path: &Path, keys: &KeyFile) -> Result<PathBuf> {
    let io = |e: std::io::Error| {
        Error::Internal(format!("writing audit key file {}: {e}", path.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = path.with_extension(format!(
        "json.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let bytes = serde_json::to_vec_pretty(keys).map_err(|e| Error::Internal(e.to_string()))?;
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            opts.mode(0o600);
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    Ok(tmp)
}

fn to_row(r: &Record) -> Result<AuditRow> {
    Ok(AuditRow {
        seq: i64::try_from(r.seq).map_err(|e| Error::Internal(e.to_string()))?,
        body: r.body.clone(),
        mac: r.mac.clone(),
        cosign: r
            .cosign
            .as_ref()
            .map(|c| serde_json::to_string(c).unwrap_or_default()),
    })
}

/// A stored row back as a record.
pub(crate) fn from_row(r: AuditRow) -> Result<Record> {
    Ok(Record {
        seq: u64::try_from(r.seq).map_err(|e| Error::Internal(e.to_string()))?,
        body: r.body,
        mac: r.mac,
        cosign: match r.cosign {
            Some(c) => Some(serde_json::from_str(&c).map_err(|e| {
                Error::Internal(format!("stored rotation seals of entry {}: {e}", r.seq))
            })?),
            None => None,
        },
    })
}

/// Every stored record of a tenant, in order.
pub(crate) async fn all_records(store: &TenantStore) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    loop {
        let rows = store.audit_rows(out.len() as i64, 10_000).await?;
        if rows.is_empty() {
            return Ok(out);
        }
        for r in rows {
            out.push(from_row(r)?);
        }
    }
}

struct Writer {
    tenant: String,
    store: TenantStore,
    key_path: PathBuf,
}

/// The writer's live state.
struct State {
    chain: Chain,
    keys: KeyFile,
    events_seq: i64,
    checkpointed: (u64, i64),
}

impl Writer {
    async fn load(&self) -> Result<State> {
        let records = all_records(&self.store).await?;
        let chain = Chain::resume(&self.tenant, &records).map_err(Error::Internal)?;
        let keys = match read_keys(&self.key_path)? {
            Some(k) => k,
            None if records.is_empty() => create_keys(
                &self.key_path,
                KeyFile::new(now_ms()).map_err(Error::Internal)?,
            )?,
            None => {
                return Err(Error::Internal(format!(
                    "audit key file {} is missing but tenant `{}` has audit entries; restore it",
                    self.key_path.display(),
                    self.tenant
                )));
            }
        };
        let checkpoints = self.store.audit_checkpoints().await?;
        let last_cp = checkpoints.last().map_or(0, |(s, _)| *s as u64);
        Ok(State {
            chain,
            keys,
            events_seq: self.store.audit_events_cursor().await?,
            checkpointed: (last_cp, 0),
        })
    }

    async fn run(self, mut rx: mpsc::Receiver<Msg>) {
        let mut state: Option<State> = None;
        loop {
            let first = match tokio::time::timeout(
                Duration::from_millis(CHECKPOINT_EVERY_MS as u64),
                rx.recv(),
            )
            .await
            {
                Ok(Some(m)) => Some(m),
                Ok(None) => return,
                // Idle: chain governance changes and checkpoint.
                Err(_) => None,
            };
            let mut msgs: Vec<Msg> = first.into_iter().collect();
            while msgs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            if state.is_none() {
                match self.load().await {
                    Ok(s) => state = Some(s),
                    Err(e) => {
                        tracing::error!(tenant = %self.tenant, error = %e, "audit trail unavailable");
                        for m in msgs {
                            m.fail(&e);
                        }
                        continue;
                    }
                }
            }
            let Some(st) = state.as_mut() else { continue };
            let idle = msgs.is_empty();
            match self.commit(st, &msgs, idle).await {
                Ok(seqs) => {
                    for (m, seq) in msgs.into_iter().zip(seqs) {
                        let _ = match m {
                            Msg::Append { done, .. }
                            | Msg::Rotate { done, .. }
                            | Msg::Sync { done } => done.send(Ok(seq)),
                        };
                    }
                }
                Err(e) => {
                    tracing::error!(tenant = %self.tenant, error = %e, "audit write failed; calls fail closed");
                    for m in msgs {
                        m.fail(&e);
                    }
                    // The in-memory chain may be ahead of the store: reload.
                    state = None;
                }
            }
        }
    }

    /// Picks up what other writers (processes, nodes) appended since this
    /// writer's head, under the session's lock: their entries extend the
    /// chain, the key file is re-read (they may have rotated), and the
    /// governance cursor moves to where they left it.
    async fn catch_up(&self, st: &mut State, session: &mut AuditSession) -> Result<()> {
        let mut caught = false;
        loop {
            let rows = session.rows(st.chain.size() as i64, 10_000).await?;
            if rows.is_empty() {
                break;
            }
            let records = rows.into_iter().map(from_row).collect::<Result<Vec<_>>>()?;
            st.chain.extend(&records).map_err(Error::Internal)?;
            caught = true;
        }
        if caught {
            st.keys = read_keys(&self.key_path)?.ok_or_else(|| {
                Error::Internal(format!(
                    "audit key file {} is missing but tenant `{}` has audit entries; restore it",
                    self.key_path.display(),
                    self.tenant
                ))
            })?;
            st.events_seq = session.events_cursor().await?;
        }
        Ok(())
    }

    /// Seals and commits one batch under the tenant's writer lock, on top of
    /// whatever other writers appended. Returns, per message, its entry's
    /// seq (or the log size).
    async fn commit(&self, st: &mut State, msgs: &[Msg], idle: bool) -> Result<Vec<u64>> {
        let mut session = self.store.audit_session().await?;
        self.catch_up(st, &mut session).await?;
        let mut chain = st.chain.clone();
        let mut keys = st.keys.clone();
        let first_seq = chain.size();
        let mut records = Vec::new();
        let mut payloads = Vec::new();
        let mut seqs = Vec::with_capacity(msgs.len());
        let mut rotated = false;
        let now = now_ms();

        // Governance history first: it happened before these calls ended.
        let events = session.events_after(st.events_seq, 1000).await?;
        let events_seq = events.last().map(|e| e.seq);
        for ev in &events {
            let mut e = Entry::new(
                &self.tenant,
                "governance",
                &ev.actor,
                ev.at.saturating_mul(1000),
            );
            e.decision = Some(ev.action.clone());
            e.detail = serde_json::json!({
                "event": ev.seq,
                "action": ev.action,
                "subject": ev.subject,
                "detail": ev.detail,
            });
            records.push(
                chain
                    .seal(e, keys.current().map_err(Error::Internal)?)
                    .map_err(Error::Internal)?,
            );
        }
        let mut want_checkpoint = idle && chain.size() > st.checkpointed.0;
        for m in msgs {
            match m {
                Msg::Append { entry, payload, .. } => {
                    let r = chain
                        .seal((**entry).clone(), keys.current().map_err(Error::Internal)?)
                        .map_err(Error::Internal)?;
                    if let Some(p) = payload {
                        payloads.push((r.seq as i64, p.clone()));
                    }
                    seqs.push(r.seq);
                    records.push(r);
                }
                Msg::Rotate { actor, reason, .. } => {
                    let r = self.rotate(&mut chain, &mut keys, actor, reason, now)?;
                    rotated = true;
                    seqs.push(r.seq);
                    records.push(r);
                    want_checkpoint = true;
                }
                Msg::Sync { .. } => {
                    seqs.push(0);
                    want_checkpoint = true;
                }
            }
        }
        // Automatic rotation by age or count.
        let current = keys.current().map_err(Error::Internal)?;
        if now - current.created_ms >= ROTATE_AFTER_MS
            || chain.since_rotation() >= ROTATE_AFTER_ENTRIES
        {
            let r = self.rotate(
                &mut chain,
                &mut keys,
                "system",
                "automatic rotation (age or count)",
                now,
            )?;
            rotated = true;
            records.push(r);
            want_checkpoint = true;
        }
        if records.is_empty() && !want_checkpoint {
            drop(session);
            return Ok(seqs);
        }
        let due = chain.size() - st.checkpointed.0 >= CHECKPOINT_EVERY_ENTRIES
            || now - st.checkpointed.1 >= CHECKPOINT_EVERY_MS;
        let checkpoint = if (want_checkpoint || due) && chain.size() > 0 {
            let note = chain
                .checkpoint(keys.current().map_err(Error::Internal)?)
                .map_err(Error::Internal)?;
            Some((chain.size() as i64, note, now))
        } else {
            None
        };
        if rotated {
            // The new key must exist before any entry names it.
            write_keys(&self.key_path, &keys)?;
        }
        let batch = AuditBatch {
            first_seq: first_seq as i64,
            rows: records.iter().map(to_row).collect::<Result<_>>()?,
            payloads,
            checkpoint: checkpoint.clone(),
            events_seq,
        };
        let written = session.append(&batch).await;
        if !matches!(written, Ok(true)) {
            if rotated {
                let _ = write_keys(&self.key_path, &st.keys);
            }
            return match written {
                Err(e) => Err(e.into()),
                // Cannot happen under the lock; said if it does.
                _ => Err(Error::Internal(
                    "audit trail: the chain moved while this writer held the lock".into(),
                )),
            };
        }
        st.chain = chain;
        st.keys = keys;
        if let Some(s) = events_seq {
            st.events_seq = s;
        }
        if checkpoint.is_some() {
            st.checkpointed = (st.chain.size(), now);
        }
        let size = st.chain.size();
        Ok(msgs
            .iter()
            .zip(seqs)
            .map(|(m, s)| {
                if matches!(m, Msg::Sync { .. }) {
                    size
                } else {
                    s
                }
            })
            .collect())
    }

    fn rotate(
        &self,
        chain: &mut Chain,
        keys: &mut KeyFile,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Record> {
        let old = keys.current().map_err(Error::Internal)?.clone();
        let new = KeyPair::generate(now).map_err(Error::Internal)?;
        let r = chain
            .seal_rotation(&old, &new, actor, reason, now)
            .map_err(Error::Internal)?;
        keys.pairs.push(new);
        Ok(r)
    }
}

// ---- the auditor's operations --------------------------------------------------------

use serde::{Deserialize, Serialize};
use warden_audit::{Bundle, merkle};
use warden_policy::Operation;

use crate::{Caller, Warden};

/// An inclusion proof of one entry in a checkpointed tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InclusionProof {
    pub seq: u64,
    pub size: u64,
    /// SHA-256(0x00 ‖ entry bytes), hex.
    pub leaf_hash: String,
    pub root: String,
    /// Sibling hashes from the leaf up, hex.
    pub proof: Vec<String>,
    /// The signed checkpoint of `size` entries.
    pub checkpoint: String,
    /// The entry itself.
    pub record: Record,
}

/// A consistency proof between two checkpointed tree sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub old_root: String,
    pub new_root: String,
    pub proof: Vec<String>,
    pub old_checkpoint: String,
    pub new_checkpoint: String,
}

fn leaves(records: &[Record]) -> Vec<merkle::Hash> {
    records
        .iter()
        .map(|r| merkle::leaf_hash(r.body.as_bytes()))
        .collect()
}

impl Warden {
    async fn audit_store(&self, caller: &Caller, op: Operation) -> Result<(String, TenantStore)> {
        let p = self.principal(caller, op)?;
        let tenant = p.tenant.clone();
        let store = self.store.tenant(&tenant).await?;
        Ok((tenant, store))
    }

    /// Brings the tenant's trail up to date (governance events chained, a
    /// checkpoint at the current size) and returns its size.
    pub async fn audit_sync(&self, caller: &Caller) -> Result<u64> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        self.audit.sync(&store, &tenant).await
    }

    /// Everything an auditor needs to verify the tenant's trail offline.
    pub async fn audit_export(&self, caller: &Caller) -> Result<Bundle> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let size = self.audit.sync(&store, &tenant).await?;
        let mut records = all_records(&store).await?;
        // Entries appended after the sync have no checkpoint yet; leave them
        // for the next export so the bundle ends at its last checkpoint.
        records.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        let checkpoints = store
            .audit_checkpoints()
            .await?
            .into_iter()
            .filter(|(s, _)| *s as u64 <= size)
            .map(|(_, n)| n)
            .collect();
        let name = warden_audit::origin(&tenant);
        let signers = self
            .audit
            .keys(&tenant)?
            .pairs
            .iter()
            .map(|p| p.verifier(&name).map(|v| v.text()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(Error::Internal)?;
        Ok(Bundle {
            format: Bundle::FORMAT.into(),
            tenant,
            origin: name,
            signers,
            records,
            checkpoints,
        })
    }

    /// The latest signed checkpoint (after a sync).
    pub async fn audit_checkpoint(&self, caller: &Caller) -> Result<String> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        self.audit.sync(&store, &tenant).await?;
        store
            .audit_checkpoints()
            .await?
            .pop()
            .map(|(_, n)| n)
            .ok_or_else(|| Error::NotFound("audit checkpoint (the trail is empty)".into()))
    }

    /// Entries from `from`, at most `limit` (≤ 1000).
    pub async fn audit_entries(
        &self,
        caller: &Caller,
        from: u64,
        limit: u64,
    ) -> Result<Vec<Record>> {
        let (_, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let from = i64::try_from(from).map_err(|_| Error::Invalid("`from` is too large".into()))?;
        let limit = i64::try_from(limit.clamp(1, 1000)).unwrap_or(1000);
        store
            .audit_rows(from, limit)
            .await?
            .into_iter()
            .map(from_row)
            .collect()
    }

    /// The full input and output recorded with an entry.
    pub async fn audit_payload(&self, caller: &Caller, seq: u64) -> Result<Payload> {
        let (_, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let seq = i64::try_from(seq).map_err(|_| Error::Invalid("`seq` is too large".into()))?;
        store
            .audit_payload(seq)
            .await?
            .ok_or_else(|| Error::NotFound(format!("payload of audit entry {seq}")))
    }

    /// Checkpoint notes by size.
    async fn checkpoints_by_size(store: &TenantStore) -> Result<HashMap<u64, String>> {
        Ok(store
            .audit_checkpoints()
            .await?
            .into_iter()
            .map(|(s, n)| (s as u64, n))
            .collect())
    }

    /// Proves entry `seq` is in the tree of a checkpointed `size` (default:
    /// the latest checkpoint).
    pub async fn audit_inclusion(
        &self,
        caller: &Caller,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let latest = self.audit.sync(&store, &tenant).await?;
        let size = size.unwrap_or(latest);
        let cps = Self::checkpoints_by_size(&store).await?;
        let checkpoint = cps
            .get(&size)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("audit checkpoint of size {size}")))?;
        let records = all_records(&store).await?;
        let l = leaves(&records);
        let proof = merkle::inclusion_proof(&l, seq as usize, size as usize).ok_or_else(|| {
            Error::Invalid(format!("entry {seq} is not in a tree of {size} entries"))
        })?;
        Ok(InclusionProof {
            seq,
            size,
            leaf_hash: hex::encode(l[seq as usize]),
            root: hex::encode(merkle::root(&l[..size as usize])),
            proof: proof.iter().map(hex::encode).collect(),
            checkpoint,
            record: records[seq as usize].clone(),
        })
    }

    /// Proves the tree of `old` entries is a prefix of the tree of `new`
    /// (default: the latest checkpoint). Both sizes must be checkpointed.
    pub async fn audit_consistency(
        &self,
        caller: &Caller,
        old: u64,
        new: Option<u64>,
    ) -> Result<ConsistencyProof> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let latest = self.audit.sync(&store, &tenant).await?;
        let new = new.unwrap_or(latest);
        let cps = Self::checkpoints_by_size(&store).await?;
        let cp = |s: u64| {
            cps.get(&s)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("audit checkpoint of size {s}")))
        };
        let (old_checkpoint, new_checkpoint) = (cp(old)?, cp(new)?);
        let l = leaves(&all_records(&store).await?);
        let proof = merkle::consistency_proof(&l, old as usize, new as usize).ok_or_else(|| {
            Error::Invalid(format!("no consistency proof from {old} to {new} entries"))
        })?;
        Ok(ConsistencyProof {
            old_size: old,
            new_size: new,
            old_root: hex::encode(merkle::root(&l[..old as usize])),
            new_root: hex::encode(merkle::root(&l[..new as usize])),
            proof: proof.iter().map(hex::encode).collect(),
            old_checkpoint,
            new_checkpoint,
        })
    }

    /// Rotates the tenant's audit keys; the rotation entry is sealed by the
    /// old and the new keys. Returns its sequence number.
    pub async fn audit_rotate(&self, caller: &Caller, reason: &str) -> Result<u64> {
        let p = self.principal(caller, Operation::RotateAuditKeys)?;
        let store = self.store.tenant(&p.tenant).await?;
        let actor = p.name.clone();
        let tenant = p.tenant.clone();
        self.audit.rotate(&store, &tenant, &actor, reason).await
    }

    /// Where the tenant's audit key file is (for operators and auditors who
    /// check HMACs).
    pub fn audit_key_file(&self, tenant: &str) -> PathBuf {
        self.audit.keys_dir.join(format!("{tenant}.json"))
    }
}

/// What replaying one invocation found.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReplayResult {
    pub invocation: String,
    pub tool: String,
    pub action: String,
    /// The component that ran originally (from the signed entry).
    pub recorded_component: String,
    /// The component replayed (the same unless another was asked for).
    pub component: String,
    /// Guarded import calls in the journal.
    pub imports: usize,
    /// Whether the import sequence, the outcome and the output digest all
    /// matched.
    pub matched: bool,
    /// The first difference, when they did not.
    pub divergence: Option<warden_runtime::Divergence>,
    pub recorded_outcome: String,
    pub outcome: String,
    pub recorded_output_sha256: Option<String>,
    pub output_sha256: Option<String>,
}

impl Warden {
    /// Replays invocation `invocation`: re-executes the recorded component (or
    /// `component`, another stored component, by hash) on the recorded input
    /// with every import answered from the journal, and compares the import
    /// sequence, the outcome and the output digest with the trail. The input
    /// and the journal are checked against the digests in the signed entries
    /// first. Viewers only.
    pub async fn audit_replay(
        &self,
        caller: &Caller,
        invocation: &str,
        component: Option<&str>,
    ) -> Result<ReplayResult> {
        let (tenant, store) = self.audit_store(caller, Operation::ReadAudit).await?;
        let rows = store.audit_invocation(invocation).await?;
        if rows.is_empty() {
            return Err(Error::NotFound(format!(
                "invocation `{invocation}` in the audit trail"
            )));
        }
        let mut decided = None;
        let mut finished = None;
        for r in &rows {
            let e = Entry::decode(r.body.as_bytes()).map_err(|e| {
                Error::Internal(format!("audit entry {} is not readable: {e}", r.seq))
            })?;
            match e.kind.as_str() {
                "invocation.decided" => decided = Some((r.seq, e)),
                "invocation.finished" => finished = Some((r.seq, e)),
                _ => {}
            }
        }
        let (decided_seq, decided) = decided.ok_or_else(|| {
            Error::Invalid(format!("invocation `{invocation}` has no decision entry"))
        })?;
        let Some((finished_seq, finished)) = finished else {
            return Err(Error::Invalid(format!(
                "invocation `{invocation}` did not run (decision: {}), so there is nothing to replay",
                decided.decision.as_deref().unwrap_or("none")
            )));
        };
        let input = store
            .audit_payload(decided_seq)
            .await?
            .and_then(|p| p.input)
            .ok_or_else(|| Error::Invalid(format!("the input of `{invocation}` is not stored")))?;
        if decided.args_sha256.as_deref() != Some(sha256_hex(input.as_bytes()).as_str()) {
            return Err(Error::Invalid(format!(
                "the stored input of `{invocation}` does not match the digest in audit entry {decided_seq}"
            )));
        }
        let journal_text = store
            .audit_payload(finished_seq)
            .await?
            .and_then(|p| p.journal)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "invocation `{invocation}` has no import journal (recorded before journals were kept)"
                ))
            })?;
        let signed = finished
            .detail
            .get("journal_sha256")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if signed != sha256_hex(journal_text.as_bytes()) {
            return Err(Error::Invalid(format!(
                "the stored journal of `{invocation}` does not match the digest in audit entry {finished_seq}"
            )));
        }
        let journal = warden_runtime::Journal::parse(&journal_text).map_err(Error::Invalid)?;
        let imports = journal.imports.len();
        let recorded_component = finished.component.clone().unwrap_or_default();
        let component = component.unwrap_or(&recorded_component).to_owned();
        let tool = self.component(&store, &component).await?;
        let action = finished.action.clone().unwrap_or_default();
        let secrets = Arc::new(TenantSecrets {
            dir: self.data_dir.join("secrets").join(&tenant),
        });
        let replayed = self
            .runtime
            .replay(
                &tool,
                journal,
                secrets,
                warden_runtime::Call {
                    action: &action,
                    input: &input,
                },
            )
            .await
            .map_err(Error::Invalid)?;
        let report = replayed.report;
        let recorded_outcome = finished.decision.clone().unwrap_or_default();
        let outcome = report.outcome.kind().to_owned();
        let output_sha256 = report
            .output
            .as_ref()
            .map(|o| sha256_hex(o.to_string().as_bytes()));
        let divergence = replayed.divergence.or_else(|| {
            if outcome != recorded_outcome {
                Some(warden_runtime::Divergence {
                    at: "outcome".into(),
                    import: None,
                    expected: recorded_outcome.clone(),
                    got: format!("{outcome} ({})", report.outcome.reason()),
                })
            } else if output_sha256 != finished.result_sha256 {
                let show = |d: &Option<String>| d.clone().unwrap_or_else(|| "no output".into());
                Some(warden_runtime::Divergence {
                    at: "output".into(),
                    import: None,
                    expected: format!("sha256 {}", show(&finished.result_sha256)),
                    got: format!("sha256 {}", show(&output_sha256)),
                })
            } else {
                None
            }
        });
        tracing::info!(invocation, matched = divergence.is_none(), "audit replay");
        Ok(ReplayResult {
            invocation: invocation.to_owned(),
            tool: finished.tool.clone().unwrap_or_default(),
            action,
            recorded_component,
            component,
            imports,
            matched: divergence.is_none(),
            divergence,
            recorded_outcome,
            outcome,
            recorded_output_sha256: finished.result_sha256.clone(),
            output_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_key_file_created_wins_and_a_second_creator_reads_it() {
        let dir = std::env::temp_dir().join(format!("warden-keys-{}", std::process::id()));
        let path = dir.join("acme.json");
        let _ = std::fs::remove_file(&path);
        let first = KeyFile::new(1).expect("key");
        let second = KeyFile::new(2).expect("key");
        let a = create_keys(&path, first.clone()).expect("create");
        let b = create_keys(&path, second).expect("create again");
        let id = |k: &KeyFile| k.current().expect("key").hmac_id.clone();
        assert_eq!(id(&a), id(&first));
        assert_eq!(id(&b), id(&first), "the second creator got its own key");
        // Rotation still replaces the file.
        let rotated = KeyFile::new(3).expect("key");
        write_keys(&path, &rotated).expect("write");
        assert_eq!(
            id(&read_keys(&path).expect("read").expect("file")),
            id(&rotated)
        );
        let leftovers = std::fs::read_dir(&dir)
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains(".tmp"))
            })
            .count();
        assert_eq!(leftovers, 0, "temporary key files left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
