//! In-memory state backend for tests and throwaway hosts. Nothing survives the
//! process.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::quota::{Quota, Usage};
use super::StateError;

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

    /// Writes (`Some`) or deletes (`None`) a row, counted against `quota`
    /// if one is given; returns whether a row existed before.
    pub(crate) fn write(
        &self,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        quota: Option<&Quota>,
    ) -> Result<bool, StateError> {
        let mut rows = self.rows();
        if let Some(quota) = quota {
            let old = rows.get(&key).map(Vec::len);
            let usage_key = quota.usage_key();
            let usage = Usage::decode(rows.get(&usage_key).map(Vec::as_slice));
            let usage = usage.after(old, value.as_ref().map(Vec::len), quota)?;
            rows.insert(usage_key, usage.encode());
        }
        let old = match value {
            Some(value) => rows.insert(key, value),
            None => rows.remove(&key),
        };
        Ok(old.is_some())
    }

    pub(crate) fn scan(&self, prefix: &[u8]) -> super::EncodedRows {
        self.rows()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
