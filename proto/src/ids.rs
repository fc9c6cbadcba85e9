//! Validated names and id newtypes shared by the node, the client and the simulator.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_JOB_NAME_BYTES, MAX_OBJECT_NAME_BYTES};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} name is empty")]
    Empty {
        /// Which kind of name.
        what: &'static str,
    },
    /// The name is longer than its limit.
    #[error("{what} name is {len} bytes, over the limit of {max}")]
    TooLong {
        /// Which kind of name.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An object name that is not a relative path of plain components.
    #[error("object name {name:?} is not a relative path of plain components ('/' separates them; none may be empty, '.' or '..', and none may lead or trail)")]
    BadPath {
        /// The refused name.
        name: String,
    },
    /// The name holds a character it may not.
    #[error("{what} name {name:?} has a character that is not allowed ({allowed})")]
    BadChar {
        /// Which kind of name.
        what: &'static str,
        /// The refused name (cut to its limit).
        name: String,
        /// What is allowed.
        allowed: &'static str,
    },
}

fn check_len(what: &'static str, s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > max {
        return Err(NameError::TooLong { what, len: s.len(), max });
    }
    Ok(())
}

fn bad_char(what: &'static str, s: &str, allowed: &'static str) -> NameError {
    NameError::BadChar { what, name: s.chars().take(MAX_OBJECT_NAME_BYTES).collect(), allowed }
}

/// A training job's name: `[A-Za-z0-9._-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobName(String);

impl JobName {
    /// Validates `s` as a job name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_len("job", &s, MAX_JOB_NAME_BYTES)?;
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')) {
            return Err(bad_char("job", &s, "A-Z a-z 0-9 . _ -"));
        }
        Ok(Self(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An object's name inside a part: 1 to 255 bytes of UTF-8, a relative path whose only
/// separator is `/` (a folder tree saved by `rackpoint put DIR`): no control characters, no
/// `\\`, no leading or trailing `/`, no empty, `.` or `..` component. It is always safe as a
/// path below the folder it is restored into.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectName(String);

impl ObjectName {
    /// Validates `s` as an object name.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        check_len("object", &s, MAX_OBJECT_NAME_BYTES)?;
        if s.chars().any(|c| c.is_control() || c == '\\') {
            return Err(bad_char("object", &s, "no control characters or '\\'"));
        }
        if s.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(NameError::BadPath { name: s });
        }
        Ok(Self(s))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}
string_newtype_impls!(JobName);
string_newtype_impls!(ObjectName);

macro_rules! int_newtype {
    ($(#[$doc:meta])* $t:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $t(pub $inner);
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}
int_newtype!(
    /// A training step: checkpoints of one job are ordered by it.
    Step(u64)
);
int_newtype!(
    /// A writing rank: one part per rank per checkpoint.
    Rank(u32)
);
int_newtype!(
    /// A storage node's id, unique in the cluster map.
    NodeId(u32)
);
int_newtype!(
    /// A shard's index inside its stripe: `0..k` data, `k..k+m` parity.
    ShardIndex(u8)
);
int_newtype!(
    /// A stripe's index inside its object.
    StripeIndex(u32)
);

/// A 32-byte blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The blake3 digest of `bytes`: the one way shard, object and manifest hashes are made.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The digest as lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", &self.to_hex()[..16])
    }
}

/// The address of one stripe: `(job, step, rank, object, stripe)`. Its shards' keys come from
/// [`StripeId::shard`]; placement hashes it to rank nodes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StripeId {
    /// The job.
    pub job: JobName,
    /// The checkpoint's step.
    pub step: Step,
    /// The writing rank.
    pub rank: Rank,
    /// The object inside the part.
    pub object: ObjectName,
    /// The stripe inside the object.
    pub stripe: StripeIndex,
}

impl fmt::Display for StripeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} step {} rank {} object {} stripe {}",
            self.job, self.step, self.rank, self.object, self.stripe
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names() {
        assert!(JobName::new("llama-70b_run.3").is_ok());
        assert_eq!(JobName::new(""), Err(NameError::Empty { what: "job" }));
        assert!(matches!(JobName::new("a".repeat(129)), Err(NameError::TooLong { .. })));
        assert!(JobName::new("a".repeat(128)).is_ok());
        for bad in ["a b", "a/b", "é", "a\0b"] {
            assert!(matches!(JobName::new(bad), Err(NameError::BadChar { .. })), "{bad}");
        }
    }

    #[test]
    fn object_names_are_safe_relative_paths() {
        for good in [
            "model.layers.0.weight",
            "optimizer état.bin",
            "a/b",
            "tok/en/izer.json",
            "..a/b..",
            ".metadata",
        ] {
            assert!(ObjectName::new(good).is_ok(), "{good:?}");
        }
        for bad in [
            ".", "..", "a\\b", "a\nb", "a\0b", "", "/a", "a/", "a//b", "a/./b", "a/../b", "../a",
            "a/..",
        ] {
            assert!(ObjectName::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectName::new("x".repeat(256)).is_err());
    }

    proptest::proptest! {
        /// Whatever the bytes, an accepted name is a path of plain components: joined to a
        /// folder it never leaves it (no root, no `..`, no `.`).
        #[test]
        fn an_accepted_object_name_stays_below_its_folder(name in "[a-z./\\\\]{1,12}") {
            if let Ok(n) = ObjectName::new(name.clone()) {
                let joined = std::path::Path::new("/base").join(n.as_str());
                proptest::prop_assert!(joined.starts_with("/base"));
                let below: Vec<_> = joined.strip_prefix("/base").expect("below").components().collect();
                proptest::prop_assert_eq!(below.len(), name.split('/').count());
                for c in below {
                    proptest::prop_assert!(matches!(c, std::path::Component::Normal(_)), "{name:?}");
                }
            }
        }
    }

    #[test]
    fn digest_of_is_blake3() {
        assert_eq!(Digest::of(b"abc").0, *blake3::hash(b"abc").as_bytes());
        assert_ne!(Digest::of(b"abc"), Digest::of(b"abd"));
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        let ok: Result<JobName, _> = serde_json_like("\"job-1\"");
        assert!(ok.is_ok());
        let bad: Result<JobName, _> = serde_json_like("\"bad name\"");
        assert!(bad.is_err());
    }

    fn serde_json_like<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, toml::de::Error> {
        #[derive(Deserialize)]
        struct W<T> {
            v: T,
        }
        toml::from_str::<W<T>>(&format!("v = {s}")).map(|w| w.v)
    }
}
