//! The node's signed cluster map: one row (`CLUSTER_MAP_KEY`) of the `data` family, written
//! with a synced WAL like everything else, so a map the node acknowledged survives a crash.
//! The engine keeps bytes only; the handler (`handler::cluster_map`) checks the signature
//! and the epoch before anything is written. Older builds ignore the row (data format 1
//! unchanged).

use rackpoint_proto::key::CLUSTER_MAP_KEY;
use rackpoint_proto::limits::MAX_CLUSTER_MAP_BYTES;
use rocksdb::WriteBatch;

use super::{db_error, Engine, EngineError};

impl Engine {
    /// The stored signed cluster map's bytes, if the node holds one (a stored value over
    /// `MAX_CLUSTER_MAP_BYTES` is reported corrupt, not loaded).
    pub fn cluster_map(&self) -> Result<Option<Vec<u8>>, EngineError> {
        let Some(value) =
            self.db.get_pinned_cf(self.data_cf(), CLUSTER_MAP_KEY).map_err(db_error)?
        else {
            return Ok(None);
        };
        if value.len() > MAX_CLUSTER_MAP_BYTES as usize {
            let reason = format!("a stored cluster map of {} bytes", value.len());
            return Err(EngineError::Corrupt { reason });
        }
        Ok(Some(value.to_vec()))
    }

    /// Stores `bytes` as the node's cluster map in place of any earlier one; durable on
    /// return.
    pub fn put_cluster_map(&self, bytes: &[u8]) -> Result<(), EngineError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.data_cf(), CLUSTER_MAP_KEY, bytes);
        self.write(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineOptions;

    #[test]
    fn the_map_survives_a_reopen_and_is_no_shard_or_manifest() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let engine = Engine::open(dir.path(), EngineOptions::default()).expect("opens");
            assert_eq!(engine.cluster_map().expect("reads"), None);
            engine.put_cluster_map(b"first").expect("stores");
            engine.put_cluster_map(b"second").expect("replaces");
        }
        let engine = Engine::open(dir.path(), EngineOptions::default()).expect("reopens");
        assert_eq!(engine.cluster_map().expect("reads"), Some(b"second".to_vec()));
        assert_eq!(engine.counts(), Default::default());
    }
}
