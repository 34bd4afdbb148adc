//! The saved form of the mock's state (`--state FILE`, `GET/PUT /mock/state`): visible
//! partitions, `last_updated` and issued tokens, as JSON. Files are replaced atomically.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::auth::Token;
use crate::state::{PKey, PartitionState, Partitions};

/// Why state could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("writing {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path} is not a valid state file: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// Everything that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// Keyed by pkey (`"0x5"`); the management partition is restored if missing.
    #[serde(default)]
    pub partitions: BTreeMap<PKey, PartitionState>,
    /// Milliseconds since the Unix epoch of the last visible change.
    #[serde(default)]
    pub last_updated_ms: Option<u64>,
    #[serde(default)]
    pub tokens: Vec<Token>,
}

impl SavedState {
    pub fn table(&self) -> Partitions {
        Partitions::from_map(self.partitions.clone())
    }

    pub fn last_updated(&self) -> Option<SystemTime> {
        self.last_updated_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }
}

/// Loads `path`; `Ok(None)` if it does not exist.
pub fn load(path: &Path) -> Result<Option<SavedState>, PersistError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PersistError::Read { path: path.display().to_string(), source });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| PersistError::Parse { path: path.display().to_string(), source })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn save(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let err = |source| PersistError::Write { path: path.display().to_string(), source };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Guid, Member, Mutation};

    #[test]
    fn state_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        let mut t = Partitions::new();
        t.apply(&Mutation::AddGuids {
            pkey: PKey::new(5).unwrap(),
            members: vec![(Guid::new(1).unwrap(), Member::default())],
            ip_over_ib: None,
            name: None,
        })
        .unwrap();
        let saved = SavedState { partitions: t.as_map().clone(), last_updated_ms: Some(1_000), tokens: Vec::new() };
        save(&path, &serde_json::to_vec(&saved).unwrap()).unwrap();
        let back = load(&path).unwrap().unwrap();
        assert_eq!(back, saved);
        assert_eq!(back.table(), t);
        assert_eq!(back.last_updated(), Some(UNIX_EPOCH + Duration::from_secs(1)));
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"partitions\": {\"0x0\": {}}}").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
    }
}
