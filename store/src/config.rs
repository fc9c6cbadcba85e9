//! Reading a node's `node.toml`: parse and validate it (`proto::NodeConfig`), then resolve its
//! relative paths against the file's own folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use rackpoint_proto::cluster::ConfigError;
use rackpoint_proto::limits::MAX_CONFIG_FILE_BYTES;
use rackpoint_proto::NodeConfig;

/// Why a `node.toml` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read node config {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not a valid node config.
    #[error("invalid node config {path}: {error}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: ConfigError,
    },
}

/// Reads `path`, validates it, and makes `data_dir`, `ca`, `cert` and `key` relative to
/// the file's folder when they are relative.
pub fn load_node_config(path: &Path) -> Result<NodeConfig, ConfigFileError> {
    let read_error = |error| ConfigFileError::Read { path: path.to_owned(), error };
    let bytes = read_bounded(path, MAX_CONFIG_FILE_BYTES).map_err(read_error)?;
    let text = String::from_utf8(bytes)
        .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    let mut config = NodeConfig::from_toml(&text)
        .map_err(|error| ConfigFileError::Invalid { path: path.to_owned(), error })?;
    // `absolute` only fails on an empty path, which could not have been read.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let base = absolute.parent().unwrap_or(Path::new(""));
    for p in [&mut config.data_dir, &mut config.ca, &mut config.cert, &mut config.key] {
        *p = base.join(&*p);
    }
    for p in [&mut config.revoked, &mut config.cluster_map].into_iter().flatten() {
        *p = base.join(&*p);
    }
    Ok(config)
}

/// Reads a whole file of at most `max` bytes; a longer one is an `InvalidData` error.
pub(crate) fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        let message = format!("the file is over the limit of {max} bytes");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, message));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
        id = 2
        listen = "127.0.0.1:0"
        rack = "r1"
        data_dir = "data"
        ca = "/etc/rackpoint/ca.pem"
        cert = "tls/node.pem"
        key = "tls/node.key"
    "#;

    #[test]
    fn relative_paths_are_resolved_against_the_file_folder() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, TEXT).expect("write");
        let c = load_node_config(&path).expect("loads");
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.cert, dir.path().join("tls/node.pem"));
        assert_eq!(c.ca, PathBuf::from("/etc/rackpoint/ca.pem"));
    }

    #[test]
    fn missing_and_invalid_files_are_typed_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("node.toml");
        assert!(matches!(load_node_config(&path), Err(ConfigFileError::Read { .. })));
        std::fs::write(&path, "id = \"two\"").expect("write");
        assert!(matches!(load_node_config(&path), Err(ConfigFileError::Invalid { .. })));
        std::fs::write(&path, vec![b'#'; MAX_CONFIG_FILE_BYTES as usize + 1]).expect("write");
        assert!(matches!(load_node_config(&path), Err(ConfigFileError::Read { .. })));
    }
}
