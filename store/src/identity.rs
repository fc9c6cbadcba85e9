//! Who is calling: the identity a node reads out of a peer's verified certificate (name,
//! serial, fingerprint, expiry and access grant), and the revocation list it checks on every
//! request, re-read from disk when it changes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rackpoint_proto::access::{Grant, GrantError, GRANT_EXTENSION_OID};
use rackpoint_proto::limits::{MAX_REVOCATION_FILE_BYTES, REVOCATION_RECHECK_MS};

use crate::der;

/// Longest certificate name kept (for logs and error messages).
const MAX_CALLER_NAME_CHARS: usize = 128;

/// Why a peer's certificate gives no usable identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The peer presented no certificate (the TLS layer requires one, so this is a bug).
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate does not parse.
    #[error("the peer's certificate does not parse: {0}")]
    Parse(String),
    /// Its grant extension does not parse.
    #[error("the peer's access grant is invalid: {0}")]
    Grant(#[from] GrantError),
}

/// What a node knows of a caller, from its certificate (which the TLS layer has verified
/// against the cluster CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The certificate's common name.
    pub name: String,
    /// The certificate's serial number, lower-case hex.
    pub serial: String,
    /// `blake3:` and the hex blake3 of the certificate's DER bytes.
    pub fingerprint: String,
    /// Seconds since the Unix epoch after which the certificate is no longer valid.
    pub not_after: i64,
    /// What it may do; `None` for a certificate that is not a client identity (a node's, or
    /// one without a grant).
    pub grant: Option<Grant>,
}

impl Caller {
    /// A caller made in-process (tests, tools driving a handler directly): `name` with
    /// `grant`, never expiring.
    pub fn in_process(name: &str, grant: Grant) -> Self {
        Self {
            name: name.to_owned(),
            serial: String::new(),
            fingerprint: format!("in-process:{name}"),
            not_after: i64::MAX,
            grant: Some(grant),
        }
    }

    /// Reads a caller out of a certificate's DER bytes (already verified by the TLS layer
    /// against the cluster CA, and still parsed with every length checked). A certificate
    /// that may serve (a node's) carries no client grant, whatever its extensions say.
    pub fn from_der(der: &[u8]) -> Result<Self, IdentityError> {
        let cert = der::Certificate::parse(der).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let name = cert
            .common_name
            .unwrap_or("(no common name)")
            .chars()
            .filter(|c| !c.is_control())
            .take(MAX_CALLER_NAME_CHARS)
            .collect();
        let serial = hex(cert.serial);
        let fingerprint = format!("blake3:{}", blake3::hash(der).to_hex());
        let grant = match cert.extension(GRANT_EXTENSION_OID) {
            Some(value) if !cert.serves => Some(Grant::from_der(value)?),
            _ => None,
        };
        Ok(Self { name, serial, fingerprint, not_after: cert.not_after, grant })
    }

    /// Whether the certificate is past its end of validity at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        i64::try_from(secs).unwrap_or(i64::MAX) > self.not_after
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (serial {})", self.name, self.serial)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a revocation list could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the revocation list {path}: {error}")]
pub struct RevocationError {
    /// The file.
    pub path: PathBuf,
    /// The OS error.
    pub error: std::io::Error,
}

/// The certificates a node refuses: serials and fingerprints from `node.toml`'s `revoked`
/// file, re-read when its modification time or length changes (looked at most once every
/// `REVOCATION_RECHECK_MS`). An unreadable file at start is an error; an unreadable file
/// later keeps the last list read (and says so in the log), so revocations never lapse.
#[derive(Debug)]
pub struct Revocations {
    path: Option<PathBuf>,
    state: Mutex<RevocationState>,
}

#[derive(Debug)]
struct RevocationState {
    checked: Instant,
    stamp: Option<(SystemTime, u64)>,
    entries: HashSet<String>,
}

impl Revocations {
    /// No revocation list.
    pub fn none() -> Self {
        Self::with(None, None, HashSet::new())
    }

    /// Reads the list at `path` (or none).
    pub fn load(path: Option<&Path>) -> Result<Self, RevocationError> {
        let Some(path) = path else { return Ok(Self::none()) };
        let (stamp, entries) = read_list(path)?;
        Ok(Self::with(Some(path.to_owned()), Some(stamp), entries))
    }

    fn with(
        path: Option<PathBuf>,
        stamp: Option<(SystemTime, u64)>,
        entries: HashSet<String>,
    ) -> Self {
        let state = RevocationState { checked: Instant::now(), stamp, entries };
        Self { path, state: Mutex::new(state) }
    }

    /// Whether `caller`'s serial or fingerprint is on the list (re-reading it if it changed).
    pub fn is_revoked(&self, caller: &Caller) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(path) = &self.path {
            if state.checked.elapsed() >= Duration::from_millis(REVOCATION_RECHECK_MS) {
                state.checked = Instant::now();
                refresh(path, &mut state);
            }
        }
        state.entries.contains(&caller.serial) || state.entries.contains(&caller.fingerprint)
    }
}

fn refresh(path: &Path, state: &mut RevocationState) {
    let stamp = std::fs::metadata(path).and_then(|m| Ok((m.modified()?, m.len())));
    match stamp {
        Ok(stamp) if Some(stamp) == state.stamp => {}
        _ => match read_list(path) {
            Ok((stamp, entries)) => {
                tracing::info!(path = %path.display(), entries = entries.len(), "revocation list re-read");
                state.stamp = Some(stamp);
                state.entries = entries;
            }
            Err(e) => tracing::error!("{e}; the last list read stays in force"),
        },
    }
}

fn read_list(path: &Path) -> Result<((SystemTime, u64), HashSet<String>), RevocationError> {
    let error = |error| RevocationError { path: path.to_owned(), error };
    let meta = std::fs::metadata(path).map_err(error)?;
    let stamp = (meta.modified().map_err(error)?, meta.len());
    let bytes = crate::config::read_bounded(path, MAX_REVOCATION_FILE_BYTES).map_err(error)?;
    Ok((stamp, parse_list(&String::from_utf8_lossy(&bytes))))
}

/// One entry a line: a serial (hex, colons allowed) or `blake3:` and a fingerprint; `#`
/// starts a comment.
fn parse_list(text: &str) -> HashSet<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|entry| !entry.is_empty())
        .map(|entry| entry.replace(':', "").to_ascii_lowercase().replacen("blake3", "blake3:", 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(serial: &str) -> Caller {
        Caller {
            name: "c".into(),
            serial: serial.into(),
            fingerprint: format!("blake3:{}", "ab".repeat(32)),
            not_after: 10,
            grant: None,
        }
    }

    #[test]
    fn lists_name_serials_with_or_without_colons_and_fingerprints() {
        let list = parse_list("# revoked\n0A:1b:2C  # lost laptop\n\nblake3:ABAB\n");
        assert!(list.contains("0a1b2c"));
        assert!(list.contains("blake3:abab"));
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn an_edited_list_takes_effect_and_a_removed_one_keeps_the_last() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("revoked.txt");
        std::fs::write(&path, "").expect("write");
        let list = Revocations::load(Some(&path)).expect("loads");
        assert!(!list.is_revoked(&caller("0a1b")));
        std::fs::write(&path, "0a:1b\n").expect("write");
        // The recheck interval has not passed: force it by ageing the last check.
        list.state.lock().expect("lock").checked -= Duration::from_millis(REVOCATION_RECHECK_MS);
        assert!(list.is_revoked(&caller("0a1b")));
        std::fs::remove_file(&path).expect("remove");
        list.state.lock().expect("lock").checked -= Duration::from_millis(REVOCATION_RECHECK_MS);
        assert!(list.is_revoked(&caller("0a1b")), "a vanished list keeps the last entries");
        assert!(Revocations::load(Some(&path)).is_err(), "a missing list at start is an error");
    }

    #[test]
    fn expiry_is_seconds_since_the_epoch() {
        let c = caller("00");
        assert!(c.expired_at(UNIX_EPOCH + Duration::from_secs(11)));
        assert!(!c.expired_at(UNIX_EPOCH + Duration::from_secs(10)));
    }
}
