//! Embedded on-disk state backend: one redb file, the default for a single host.
//!
//! Reads run on tokio's blocking threads, so a slow disk never stalls the
//! workers that run actors. Writes go to one writer thread that commits them
//! in groups: it takes every write that is waiting, applies them in order in a
//! single durable transaction and only then acknowledges each of them. Many
//! actors writing at once therefore share one fsync, and no write is
//! acknowledged before it is on disk. The writer's queue is bounded
//! ([`MAX_QUEUED_WRITES`]): past it, writers wait for room.

use std::path::Path;
use std::sync::Arc;
use std::thread;

use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::quota::{Quota, Usage};
use super::{OpenStateError, StateError};

const ROWS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("rows");

/// Writes committed together at most; bounds the size of one transaction.
const MAX_GROUP: usize = 4096;

/// Writes waiting for the writer thread at most; more wait for room.
pub const MAX_QUEUED_WRITES: usize = 2 * MAX_GROUP;

struct WriteRequest {
    key: Vec<u8>,
    /// `None` deletes the row.
    value: Option<Vec<u8>>,
    /// Writes nothing: its ack says every earlier write is committed.
    barrier: bool,
    /// The quota the write counts against, if any.
    quota: Option<Quota>,
    /// Receives whether the row existed before the write.
    ack: oneshot::Sender<Result<bool, StateError>>,
}

/// Handle to an open redb state file. Cheap to clone. When the last handle is
/// dropped, pending writes are committed, the writer thread stops and the file
/// is closed, so it can be opened again at once.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    writes: Option<mpsc::Sender<WriteRequest>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer's loop once it has drained it.
        self.writes = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    /// Opens or creates the state file at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, OpenStateError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| OpenStateError::CreateDir {
                dir: dir.into(),
                source,
            })?;
        }
        let failed = |e: redb::Error| OpenStateError::Embedded {
            path: path.into(),
            source: Box::new(e),
        };
        let db = Database::create(path).map_err(|e| failed(e.into()))?;
        // Create the table up front so that readers never find it missing.
        let txn = db.begin_write().map_err(|e| failed(e.into()))?;
        txn.open_table(ROWS).map_err(|e| failed(e.into()))?;
        txn.commit().map_err(|e| failed(e.into()))?;
        let db = Arc::new(db);
        let (writes, mut queue) = mpsc::channel(MAX_QUEUED_WRITES);
        let writer_db = db.clone();
        let writer = thread::Builder::new()
            .name("grove-state-writer".into())
            .spawn(move || write_loop(&writer_db, &mut queue))
            .map_err(OpenStateError::Writer)?;
        Ok(EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                writes: Some(writes),
                writer: Some(writer),
            }),
        })
    }

    /// Runs a read on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Database) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(unavailable)?
    }

    pub(crate) async fn get(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StateError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ROWS).map_err(unavailable)?;
            let value = table.get(key.as_slice()).map_err(unavailable)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
        .await
    }

    pub(crate) async fn scan(&self, prefix: Vec<u8>) -> Result<super::EncodedRows, StateError> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(ROWS).map_err(unavailable)?;
            let mut rows = Vec::new();
            for entry in table.range(prefix.as_slice()..).map_err(unavailable)? {
                let (k, v) = entry.map_err(unavailable)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                rows.push((k.value().to_vec(), v.value().to_vec()));
            }
            Ok(rows)
        })
        .await
    }

    /// Queues a write (`None` deletes), counted against `quota` if one is
    /// given, and waits until its group is committed; returns whether the
    /// row existed before.
    pub(crate) async fn write(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        quota: Option<&Quota>,
    ) -> Result<bool, StateError> {
        self.queue(key, value, false, quota.cloned()).await
    }

    /// Waits until every write queued before it is committed.
    pub(crate) async fn settle(&self) -> Result<(), StateError> {
        self.queue(Vec::new(), None, true, None).await.map(drop)
    }

    async fn queue(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        barrier: bool,
        quota: Option<Quota>,
    ) -> Result<bool, StateError> {
        let (ack, done) = oneshot::channel();
        self.inner
            .writes
            .as_ref()
            .ok_or_else(|| unavailable("the state writer has stopped"))?
            .send(WriteRequest {
                key,
                value,
                barrier,
                quota,
                ack,
            })
            .await
            .map_err(|_| unavailable("the state writer has stopped"))?;
        done.await
            .map_err(|_| unavailable("the state writer has stopped"))?
    }
}

fn write_loop(db: &Database, queue: &mut mpsc::Receiver<WriteRequest>) {
    while let Some(first) = queue.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        match commit_group(db, &group) {
            Ok(answers) => {
                for (request, answer) in group.into_iter().zip(answers) {
                    let _ = request.ack.send(answer);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "state commit failed");
                for request in group {
                    let _ = request.ack.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Commits a group of writes in one transaction. A write refused by its
/// quota is answered so and changes nothing; the others are applied.
fn commit_group(
    db: &Database,
    group: &[WriteRequest],
) -> Result<Vec<Result<bool, StateError>>, StateError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let mut answers = Vec::with_capacity(group.len());
    {
        let mut table = txn.open_table(ROWS).map_err(unavailable)?;
        for request in group {
            if request.barrier {
                answers.push(Ok(false));
                continue;
            }
            if let Some(quota) = &request.quota {
                let old = table
                    .get(request.key.as_slice())
                    .map_err(unavailable)?
                    .map(|v| v.value().len());
                let usage_key = quota.usage_key();
                let usage = table
                    .get(usage_key.as_slice())
                    .map_err(unavailable)?
                    .map(|v| Usage::decode(Some(v.value())))
                    .unwrap_or_default();
                match usage.after(old, request.value.as_ref().map(Vec::len), quota) {
                    Ok(usage) => {
                        table
                            .insert(usage_key.as_slice(), usage.encode().as_slice())
                            .map_err(unavailable)?;
                    }
                    Err(refused) => {
                        answers.push(Err(refused));
                        continue;
                    }
                }
            }
            let old = match &request.value {
                Some(value) => table.insert(request.key.as_slice(), value.as_slice()),
                None => table.remove(request.key.as_slice()),
            }
            .map_err(unavailable)?;
            answers.push(Ok(old.is_some()));
        }
    }
    txn.commit().map_err(unavailable)?;
    Ok(answers)
}
