//! The embedded store's disk: a [redb](https://www.redb.org) database in the data folder
//! (`<data dir>/grantflow.redb`), the journal of the in-process engine ([`super::MemoryStore`]).
//!
//! - **What is on disk**: every live session (as created; last-seen written behind), every
//!   tombstone, user watermark and lock, policy, audit record and idempotency record, and the
//!   store's generation marker (`meta/generation`: an id and the instant L the folder began).
//! - **When**: changes are queued under the engine's lock (so in the order the state saw
//!   them) and committed by one writer thread in groups, each commit fsynced
//!   ([`redb::Durability::Immediate`]); a call returns only once the changes it rests on are
//!   committed. redb's copy-on-write commits survive `kill -9` and power loss: a commit is
//!   either all there or not at all.
//! - **A disk that refuses a write** (full, read-only, gone) fails the store for good: every
//!   later call is refused (fail closed) and `/readyz` says so, until a restart reads back
//!   what is on disk.
//! - **The data folder replaced** under a running process (its file is no longer the one
//!   open) is found by `maintain` and fails the store the same way.
//! - **One process per folder**: redb locks the file; a second process gets a clear error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::StoreError;
use super::tenant::{Applied, Logged, Tenant};
use crate::audit::AuditRecord;
use crate::clock::UnixMillis;
use crate::decision::{Tombstone, UserMarks};
use crate::policy::Policy;
use crate::session::SessionRecord;

/// The database file inside the data folder.
pub const DATABASE_FILE: &str = "grantflow.redb";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const SESSIONS: TableDefinition<&str, &str> = TableDefinition::new("sessions");
const TOMBSTONES: TableDefinition<&str, &str> = TableDefinition::new("tombstones");
const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
const AUDIT: TableDefinition<&str, &str> = TableDefinition::new("audit");
const APPLIED: TableDefinition<&str, &str> = TableDefinition::new("idempotency");

/// Changes queued and committed in one transaction at most.
const MAX_BATCH: usize = 4_096;

/// One change to write. `None` deletes.
#[derive(Debug)]
pub(super) enum Op {
    Session {
        tenant: String,
        key: String,
        record: Option<SessionRecord>,
    },
    Tombstone {
        tenant: String,
        key: String,
        tombstone: Option<Tombstone>,
    },
    Marks {
        tenant: String,
        user: String,
        marks: Option<UserMarks>,
    },
    Policy {
        tenant: String,
        policy: Option<Policy>,
    },
    Audit {
        tenant: String,
        record: AuditRecord,
    },
    AuditDrop {
        tenant: String,
        id: String,
    },
    Applied {
        tenant: String,
        key: String,
        applied: Option<Applied>,
    },
    /// A live session's last-seen time (written behind).
    Touch {
        tenant: String,
        key: String,
        last_seen: UnixMillis,
    },
}

/// The generation marker.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Generation {
    id: String,
    /// When this folder's state began: tokens issued before it are refused.
    lost_at: UnixMillis,
}

/// How far the writer got.
#[derive(Debug, Clone, Default)]
struct Progress {
    /// Every change up to this sequence number is committed.
    committed: u64,
    /// Why the disk refused a write, once it did.
    failed: Option<String>,
}

/// The journal: a queue to the writer thread and what it has committed.
pub(super) struct Journal {
    /// `None` only while dropping.
    queue: Option<std::sync::mpsc::Sender<(u64, Op)>>,
    /// The writer thread, joined on drop so the folder is closed when the store is gone.
    writer: Option<std::thread::JoinHandle<()>>,
    /// The sequence number of the last queued change. Only written under the engine's lock.
    queued: AtomicU64,
    progress: watch::Receiver<Progress>,
    failed: Arc<AtomicBool>,
    path: PathBuf,
    /// Device and inode of the file opened, to notice a replaced folder.
    identity: Option<(u64, u64)>,
}

/// A journal and the state read back from the folder.
pub(super) struct Opened {
    pub(super) journal: Journal,
    pub(super) tenants: HashMap<String, Tenant>,
    pub(super) generation: String,
    pub(super) lost_at: UnixMillis,
    /// The folder was new (or empty).
    pub(super) created: bool,
    /// Audit records (tenant, id) read back past the cap, to delete from the folder.
    pub(super) audit_dropped: Vec<(String, String)>,
}

fn disk_error(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("the data folder {what}: {error}"))
}

fn composite(tenant: &str, key: &str) -> String {
    format!("{tenant}\u{0}{key}")
}

fn split(key: &str) -> Option<(&str, &str)> {
    key.split_once('\u{0}')
}

fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("plain data serialises")
}

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Journal {
    /// Opens (or creates) the database in `dir`, reads every table back into tenant states,
    /// and starts the writer thread. `begins` dates a new generation; `now` dates audit records
    /// whose time cannot be read; `audit_cap` bounds the audit records read back per tenant
    /// (the oldest past it are dropped).
    pub(super) fn open(
        dir: &Path,
        begins: UnixMillis,
        now: UnixMillis,
        audit_cap: usize,
    ) -> Result<Opened, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| disk_error(&format!("{} cannot be created", dir.display()), e))?;
        let path = dir.join(DATABASE_FILE);
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                "the data folder {} is in use by another process (one process per folder)",
                dir.display()
            )),
            other => disk_error(&format!("{} cannot be opened", path.display()), other),
        })?;
        let (generation, created) = Self::generation(&db, begins)?;
        let (tenants, audit_dropped) = read_state(&db, now, audit_cap)
            .map_err(|e| disk_error(&format!("{} cannot be read", path.display()), e))?;

        let (queue, receiver) = std::sync::mpsc::channel();
        let (progress_tx, progress) = watch::channel(Progress::default());
        let failed = Arc::new(AtomicBool::new(false));
        let writer_failed = failed.clone();
        let writer = std::thread::Builder::new()
            .name("grantflow-journal".into())
            .spawn(move || write_loop(db, receiver, progress_tx, writer_failed))
            .map_err(|e| disk_error("writer cannot start", e))?;
        Ok(Opened {
            journal: Journal {
                queue: Some(queue),
                writer: Some(writer),
                queued: AtomicU64::new(0),
                progress,
                failed,
                identity: file_identity(&path),
                path,
            },
            tenants,
            generation: generation.id,
            lost_at: generation.lost_at,
            created,
            audit_dropped,
        })
    }

    /// The folder's generation marker, written now when it has none.
    fn generation(db: &Database, now: UnixMillis) -> Result<(Generation, bool), StoreError> {
        let read = || -> Result<Option<Generation>, redb::Error> {
            let txn = db.begin_read()?;
            let table = match txn.open_table(META) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(table
                .get("generation")?
                .and_then(|v| serde_json::from_str(v.value()).ok()))
        };
        if let Some(generation) = read().map_err(|e| disk_error("marker cannot be read", e))? {
            return Ok((generation, false));
        }
        let generation = Generation {
            id: uuid::Uuid::now_v7().to_string(),
            lost_at: now,
        };
        let write = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            {
                let mut meta = txn.open_table(META)?;
                meta.insert("generation", to_json(&generation).as_str())?;
                // Create every table, so that reads never meet a missing one.
                for table in [POLICIES, SESSIONS, TOMBSTONES, USERS, AUDIT, APPLIED] {
                    txn.open_table(table)?;
                }
            }
            txn.commit()?;
            Ok(())
        };
        write().map_err(|e| disk_error("marker cannot be written", e))?;
        Ok((generation, true))
    }

    /// Queues a change; called under the engine's lock.
    pub(super) fn record(&self, op: Op) {
        let seq = self.queued.fetch_add(1, Ordering::SeqCst) + 1;
        let sent = self
            .queue
            .as_ref()
            .is_some_and(|q| q.send((seq, op)).is_ok());
        if !sent {
            self.failed.store(true, Ordering::SeqCst);
        }
    }

    /// The sequence number of the last queued change.
    pub(super) fn queued(&self) -> u64 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Refuses when the disk refused a write before.
    pub(super) fn healthy(&self) -> Result<(), StoreError> {
        if self.failed.load(Ordering::SeqCst) {
            let reason = self.progress.borrow().failed.clone();
            return Err(StoreError::Unavailable(
                reason.unwrap_or_else(|| "the data folder's writer stopped".to_owned()),
            ));
        }
        Ok(())
    }

    /// Waits until every change up to `seq` is committed.
    pub(super) async fn durable(&self, seq: u64) -> Result<(), StoreError> {
        if seq == 0 || self.progress.borrow().committed >= seq {
            return self.healthy();
        }
        let mut progress = self.progress.clone();
        let reached = progress
            .wait_for(|p| p.committed >= seq || p.failed.is_some())
            .await
            .map(|p| p.failed.clone());
        match reached {
            Ok(None) => Ok(()),
            Ok(Some(reason)) => Err(StoreError::Unavailable(reason)),
            Err(_) => Err(StoreError::Unavailable(
                "the data folder's writer stopped".into(),
            )),
        }
    }

    /// Fails the store when the database file is no longer the one it opened (the folder was
    /// replaced or deleted while running): what it writes would not be read back.
    pub(super) fn check_folder(&self) -> Result<(), StoreError> {
        self.healthy()?;
        if self.identity.is_some() && file_identity(&self.path) != self.identity {
            self.failed.store(true, Ordering::SeqCst);
            tracing::error!(
                path = %self.path.display(),
                "the data folder was replaced or removed while running: refusing every request until a restart"
            );
            return Err(StoreError::Unavailable(format!(
                "the data file {} was replaced or removed while running; restart to read it",
                self.path.display()
            )));
        }
        Ok(())
    }
}

impl Drop for Journal {
    /// Closes the queue and waits for the writer to commit what is queued and close the
    /// database, so the folder can be opened again as soon as the store is dropped.
    fn drop(&mut self) {
        self.queue.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Tenant states and the audit records (tenant, id) dropped past the cap.
type State = (HashMap<String, Tenant>, Vec<(String, String)>);

/// Reads every table into tenant states. A record that cannot be read fails the open: the
/// store will not start without a fact it cannot vouch for (a tombstone, say). An audit
/// record's age counts from its `time` (`now` when that cannot be read); past `audit_cap`
/// records per tenant the oldest are dropped.
fn read_state(db: &Database, now: UnixMillis, audit_cap: usize) -> Result<State, String> {
    fn rows<T: DeserializeOwned>(
        txn: &redb::ReadTransaction,
        table: TableDefinition<&str, &str>,
        mut each: impl FnMut(&str, &str, T),
    ) -> Result<(), String> {
        let name = redb::TableHandle::name(&table).to_owned();
        let table = match txn.open_table(table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        for row in table.iter().map_err(|e| e.to_string())? {
            let (key, value) = row.map_err(|e| e.to_string())?;
            let key = key.value();
            let parsed = serde_json::from_str(value.value())
                .map_err(|e| format!("a record of table {name} is damaged: {e}"))?;
            match split(key) {
                Some((tenant, id)) => each(tenant, id, parsed),
                None => each(key, "", parsed),
            }
        }
        Ok(())
    }

    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let mut tenants: HashMap<String, Tenant> = HashMap::new();
    rows::<Policy>(&txn, POLICIES, |tenant, _, policy| {
        tenants
            .entry(tenant.to_owned())
            .or_default()
            .sessions
            .policy = Some(policy);
    })?;
    // A session is stored under its own key (`record.id`).
    rows::<SessionRecord>(&txn, SESSIONS, |tenant, _key, record| {
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.sessions.insert_live(record);
    })?;
    rows::<Tombstone>(&txn, TOMBSTONES, |tenant, key, tombstone| {
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.sessions.ended.insert(key.to_owned(), tombstone);
    })?;
    rows::<UserMarks>(&txn, USERS, |tenant, user, marks| {
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.sessions.users.insert(user.to_owned(), marks);
    })?;
    rows::<Applied>(&txn, APPLIED, |tenant, key, applied| {
        let t = tenants.entry(tenant.to_owned()).or_default();
        t.applied.insert(key.to_owned(), applied);
    })?;
    // Audit ids are UUIDv7: in key order, each tenant's records come oldest first.
    rows::<AuditRecord>(&txn, AUDIT, |tenant, _, record| {
        let t = tenants.entry(tenant.to_owned()).or_default();
        let at = humantime::parse_rfc3339_weak(&record.time)
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(now, crate::clock::millis);
        t.audit.push_back(Logged { at, record });
    })?;
    let mut dropped = Vec::new();
    for (id, tenant) in tenants.iter_mut() {
        // By time, as housekeeping drops them (stable: ties keep the order appended).
        tenant
            .audit
            .make_contiguous()
            .sort_by_key(|logged| logged.at);
        while tenant.audit.len() > audit_cap
            && let Some(old) = tenant.audit.pop_front()
        {
            dropped.push((id.clone(), old.record.id));
        }
    }
    if !dropped.is_empty() {
        tracing::error!(
            dropped = dropped.len(),
            cap = audit_cap,
            "audit records read back past the cap are dropped from the data folder (the JSON audit log keeps them)"
        );
    }
    Ok((tenants, dropped))
}

/// The writer thread: takes every queued change, commits them in one fsynced transaction,
/// reports progress; stops when the engine is dropped.
fn write_loop(
    db: Database,
    queue: std::sync::mpsc::Receiver<(u64, Op)>,
    progress: watch::Sender<Progress>,
    failed: Arc<AtomicBool>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let last = batch.last().map_or(0, |(seq, _)| *seq);
        if failed.load(Ordering::SeqCst) {
            continue;
        }
        match commit(&db, batch) {
            Ok(()) => progress.send_modify(|p| p.committed = last),
            Err(error) => {
                tracing::error!(%error, "the data folder refused a write: refusing every request until a restart");
                failed.store(true, Ordering::SeqCst);
                progress.send_modify(|p| {
                    p.failed = Some(format!("the data folder refused a write: {error}"));
                });
            }
        }
    }
}

fn commit(db: &Database, batch: Vec<(u64, Op)>) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)
        .map_err(|e| redb::Error::Corrupted(e.to_string()))?;
    {
        let mut policies = txn.open_table(POLICIES)?;
        let mut sessions = txn.open_table(SESSIONS)?;
        let mut tombstones = txn.open_table(TOMBSTONES)?;
        let mut users = txn.open_table(USERS)?;
        let mut audit = txn.open_table(AUDIT)?;
        let mut applied_table = txn.open_table(APPLIED)?;
        fn put<T: Serialize>(
            table: &mut redb::Table<&str, &str>,
            key: &str,
            value: Option<&T>,
        ) -> Result<(), redb::Error> {
            match value {
                Some(value) => {
                    table.insert(key, to_json(value).as_str())?;
                }
                None => {
                    table.remove(key)?;
                }
            }
            Ok(())
        }
        for (_, op) in batch {
            match op {
                Op::Session {
                    tenant,
                    key,
                    record,
                } => put(&mut sessions, &composite(&tenant, &key), record.as_ref())?,
                Op::Tombstone {
                    tenant,
                    key,
                    tombstone,
                } => put(
                    &mut tombstones,
                    &composite(&tenant, &key),
                    tombstone.as_ref(),
                )?,
                Op::Marks {
                    tenant,
                    user,
                    marks,
                } => put(&mut users, &composite(&tenant, &user), marks.as_ref())?,
                Op::Policy { tenant, policy } => put(&mut policies, &tenant, policy.as_ref())?,
                Op::Audit { tenant, record } => {
                    put(&mut audit, &composite(&tenant, &record.id), Some(&record))?
                }
                Op::AuditDrop { tenant, id } => {
                    put::<AuditRecord>(&mut audit, &composite(&tenant, &id), None)?
                }
                Op::Applied {
                    tenant,
                    key,
                    applied,
                } => put(
                    &mut applied_table,
                    &composite(&tenant, &key),
                    applied.as_ref(),
                )?,
                Op::Touch {
                    tenant,
                    key,
                    last_seen,
                } => {
                    let key = composite(&tenant, &key);
                    let stored = sessions
                        .get(key.as_str())?
                        .and_then(|v| serde_json::from_str::<SessionRecord>(v.value()).ok());
                    if let Some(mut record) = stored {
                        record.last_seen = last_seen;
                        put(&mut sessions, &key, Some(&record))?;
                    }
                }
            }
        }
    }
    txn.commit()?;
    Ok(())
}
