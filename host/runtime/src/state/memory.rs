//! In-memory state backend for tests and throwaway hosts. Nothing survives the
//! process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Rows kept in an ordered map. Cheap to clone: clones share the rows.
#[derive(Clone, Default)]
pub struct MemoryStore {
    rows: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryStore {
    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated.
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.rows().get(key).cloned()
    }

    pub(crate) fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        self.rows().insert(key, value);
    }

    pub(crate) fn delete(&self, key: &[u8]) -> bool {
        self.rows().remove(key).is_some()
    }

    pub(crate) fn scan(&self, prefix: &[u8]) -> super::EncodedRows {
        self.rows()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
