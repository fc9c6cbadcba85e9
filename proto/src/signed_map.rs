//! The signed cluster map: the cluster-wide part of a map ([`ClusterLayout`]: epoch, code,
//! nodes) signed with the cluster CA's key by the admin tool, so that a map a node serves
//! is the admin's word, not the node's. Nodes store and serve the signed bytes as they got
//! them; a client accepts a map only if it verifies against the CA certificate it already
//! trusts and its epoch is newer than its own ([`check_newer`]), and a node accepts one
//! (`PutClusterMap`, admin only) under the same two rules. So a node, or whoever holds a
//! node's key, can withhold a map or serve an older one (refused as not newer), but never
//! make or change one.
//!
//! Bytes (`MAP_FORMAT` 1), at most `MAX_CLUSTER_MAP_BYTES`:
//!
//! ```text
//! [format u8 = 1][scheme u16 BE][signature length u16 BE][signature][body]
//! ```
//!
//! `body` is the layout's canonical encoding (postcard of a fixed struct, [`layout_bytes`]);
//! the signature is over `SIGNATURE_DOMAIN || body`. `scheme` is a TLS `SignatureScheme`
//! code (ECDSA P-256/SHA-256, the CA key `rackpoint cluster init` makes; P-384/SHA-384 and
//! Ed25519 too). The domain string begins with `r`, never the `0x30` of a DER SEQUENCE, so a
//! map signature and a certificate signature by the same key can never stand for each other.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::cluster::{ClusterLayout, CodeParams, ConfigError, NodeInfo};
use crate::ids::NodeId;
use crate::limits::{MAX_CLUSTER_MAP_BYTES, MAX_MAP_SIGNATURE_BYTES};

/// The format byte this build writes and reads.
pub const MAP_FORMAT: u8 = 1;
/// What every map signature covers before the body.
pub const SIGNATURE_DOMAIN: &[u8] = b"rackpoint cluster map v1\0";
/// TLS `SignatureScheme` ecdsa_secp256r1_sha256 (ASN.1 DER signature).
pub const SCHEME_ECDSA_P256_SHA256: u16 = 0x0403;
/// TLS `SignatureScheme` ecdsa_secp384r1_sha384 (ASN.1 DER signature).
pub const SCHEME_ECDSA_P384_SHA384: u16 = 0x0503;
/// TLS `SignatureScheme` ed25519.
pub const SCHEME_ED25519: u16 = 0x0807;
/// Bytes before the signature: format, scheme, signature length.
const FIXED_BYTES: usize = 5;

/// Why a signed map was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// Longer than `MAX_CLUSTER_MAP_BYTES`.
    #[error("a signed cluster map of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// Shorter than its fixed fields and signature say.
    #[error("the signed cluster map is truncated")]
    Truncated,
    /// A format this build does not read.
    #[error("signed cluster map format {0} is not known (this build reads format {MAP_FORMAT})")]
    UnknownFormat(u8),
    /// A signature scheme this build does not verify.
    #[error("signature scheme {0:#06x} is not one a cluster map is signed with")]
    UnknownScheme(u16),
    /// A signature longer than `MAX_MAP_SIGNATURE_BYTES`.
    #[error("a map signature of {0} bytes is over the limit of {MAX_MAP_SIGNATURE_BYTES}")]
    SignatureTooLong(usize),
    /// The signature does not verify against any trusted CA certificate.
    #[error("the cluster map is not signed by the cluster CA")]
    BadSignature,
    /// A trusted CA certificate that cannot be parsed.
    #[error("the CA certificate cannot verify a map: {0}")]
    BadCa(String),
    /// The signed body does not decode.
    #[error("the signed cluster map's body does not decode: {0}")]
    Body(String),
    /// The signed layout breaks a map rule (no nodes, a duplicate id, a bad code, ...).
    #[error("the signed cluster map is invalid: {0}")]
    Invalid(ConfigError),
    /// The map's epoch is not newer than the one held.
    #[error("cluster map epoch {offered} is not newer than the epoch {held} held")]
    Stale {
        /// The epoch held.
        held: u64,
        /// The epoch offered.
        offered: u64,
    },
}

/// The layout as the body encodes it: every field, always (postcard keeps no names, so the
/// order here is the format).
#[derive(Serialize, Deserialize)]
struct LayoutV1 {
    epoch: u64,
    code: CodeParams,
    nodes: Vec<NodeV1>,
}

#[derive(Serialize, Deserialize)]
struct NodeV1 {
    id: NodeId,
    addr: SocketAddr,
    rack: String,
    decommissioned: bool,
}

/// The canonical body of `layout`: the bytes its signature covers (after the domain).
pub fn layout_bytes(layout: &ClusterLayout) -> Vec<u8> {
    let v1 = LayoutV1 {
        epoch: layout.epoch,
        code: layout.code,
        nodes: layout
            .nodes
            .iter()
            .map(|n| NodeV1 {
                id: n.id,
                addr: n.addr,
                rack: n.rack.clone(),
                decommissioned: n.decommissioned,
            })
            .collect(),
    };
    postcard::to_allocvec(&v1).expect("a layout always encodes")
}

/// What a signature over `body` signs: `SIGNATURE_DOMAIN || body`.
pub fn message_to_sign(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + body.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(body);
    m
}

/// The signed map's bytes from a body and its signature (by scheme `scheme`).
pub fn seal(body: &[u8], scheme: u16, signature: &[u8]) -> Result<Vec<u8>, MapError> {
    if signature.len() > MAX_MAP_SIGNATURE_BYTES {
        return Err(MapError::SignatureTooLong(signature.len()));
    }
    let mut out = Vec::with_capacity(FIXED_BYTES + signature.len() + body.len());
    out.push(MAP_FORMAT);
    out.extend_from_slice(&scheme.to_be_bytes());
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
    out.extend_from_slice(body);
    check_len(out.len())?;
    Ok(out)
}

fn check_len(len: usize) -> Result<(), MapError> {
    if len > MAX_CLUSTER_MAP_BYTES as usize {
        return Err(MapError::TooLarge { len, max: MAX_CLUSTER_MAP_BYTES });
    }
    Ok(())
}

/// A map whose signature verified against a trusted CA certificate, with its bytes as
/// signed (what a node stores and serves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedMap {
    layout: ClusterLayout,
    bytes: Vec<u8>,
}

impl SignedMap {
    /// Checks `bytes`: length, format, the signature against one of `trusted_cas` (DER CA
    /// certificates), then the body's encoding and the map rules. Nothing of the body is
    /// decoded before its signature verifies.
    pub fn open(bytes: &[u8], trusted_cas: &[&[u8]]) -> Result<Self, MapError> {
        check_len(bytes.len())?;
        let fixed = bytes.get(..FIXED_BYTES).ok_or(MapError::Truncated)?;
        if fixed[0] != MAP_FORMAT {
            return Err(MapError::UnknownFormat(fixed[0]));
        }
        let scheme = u16::from_be_bytes([fixed[1], fixed[2]]);
        let sig_len = usize::from(u16::from_be_bytes([fixed[3], fixed[4]]));
        if sig_len > MAX_MAP_SIGNATURE_BYTES {
            return Err(MapError::SignatureTooLong(sig_len));
        }
        let signature = bytes.get(FIXED_BYTES..FIXED_BYTES + sig_len).ok_or(MapError::Truncated)?;
        let body = &bytes[FIXED_BYTES + sig_len..];
        verify(scheme, &message_to_sign(body), signature, trusted_cas)?;
        let (v1, rest) = postcard::take_from_bytes::<LayoutV1>(body)
            .map_err(|e| MapError::Body(e.to_string()))?;
        if !rest.is_empty() {
            return Err(MapError::Body(format!("{} trailing bytes", rest.len())));
        }
        let layout = ClusterLayout {
            epoch: v1.epoch,
            code: v1.code,
            nodes: v1
                .nodes
                .into_iter()
                .map(|n| NodeInfo {
                    id: n.id,
                    addr: n.addr,
                    rack: n.rack,
                    decommissioned: n.decommissioned,
                })
                .collect(),
        };
        layout.validate().map_err(MapError::Invalid)?;
        Ok(Self { layout, bytes: bytes.to_vec() })
    }

    /// The verified layout.
    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    /// Its epoch.
    pub fn epoch(&self) -> u64 {
        self.layout.epoch
    }

    /// The bytes as signed.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn verify(
    scheme: u16,
    message: &[u8],
    signature: &[u8],
    trusted_cas: &[&[u8]],
) -> Result<(), MapError> {
    let alg: &dyn rustls_pki_types::SignatureVerificationAlgorithm = match scheme {
        SCHEME_ECDSA_P256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        SCHEME_ECDSA_P384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
        SCHEME_ED25519 => webpki::ring::ED25519,
        other => return Err(MapError::UnknownScheme(other)),
    };
    let mut unusable = None;
    for ca in trusted_cas {
        let der = rustls_pki_types::CertificateDer::from(*ca);
        let cert = match webpki::EndEntityCert::try_from(&der) {
            Ok(cert) => cert,
            Err(e) => {
                unusable = Some(MapError::BadCa(e.to_string()));
                continue;
            }
        };
        if cert.verify_signature(alg, message, signature).is_ok() {
            return Ok(());
        }
    }
    Err(match (unusable, trusted_cas.len()) {
        (Some(e), 1) => e,
        _ => MapError::BadSignature,
    })
}

/// The epoch rule, the same for a node taking a pushed map and a client taking a fetched
/// one: only a newer epoch than the one held (anything, when none is held).
pub fn check_newer(held: Option<u64>, offered: u64) -> Result<(), MapError> {
    match held {
        Some(held) if offered <= held => Err(MapError::Stale { held, offered }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(epoch: u64, nodes: u32) -> ClusterLayout {
        ClusterLayout {
            epoch,
            code: CodeParams::new(4, 2, 1 << 20).expect("valid"),
            nodes: (1..=nodes)
                .map(|i| NodeInfo {
                    id: NodeId(i),
                    addr: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                    rack: format!("rack-{}", i % 3),
                    decommissioned: i == 2,
                })
                .collect(),
        }
    }

    #[test]
    fn envelopes_are_checked_before_any_signature_or_body() {
        let body = layout_bytes(&layout(1, 3));
        let sealed = seal(&body, SCHEME_ECDSA_P256_SHA256, &[7; 70]).expect("seals");
        assert_eq!(SignedMap::open(&sealed[..4], &[]), Err(MapError::Truncated));
        let mut other = sealed.clone();
        other[0] = 2;
        assert_eq!(SignedMap::open(&other, &[]), Err(MapError::UnknownFormat(2)));
        let mut other = sealed.clone();
        other[1] = 0x09;
        assert_eq!(SignedMap::open(&other, &[]), Err(MapError::UnknownScheme(0x0903)));
        assert_eq!(SignedMap::open(&sealed, &[]), Err(MapError::BadSignature), "no CA, no map");
        assert!(matches!(
            SignedMap::open(&sealed, &[b"not a certificate"]),
            Err(MapError::BadCa(_))
        ));
        let big = vec![0u8; MAX_CLUSTER_MAP_BYTES as usize + 1];
        assert!(matches!(SignedMap::open(&big, &[]), Err(MapError::TooLarge { .. })));
        assert!(matches!(
            seal(&body, SCHEME_ED25519, &[0; MAX_MAP_SIGNATURE_BYTES + 1]),
            Err(MapError::SignatureTooLong(_))
        ));
        let mut long_sig = sealed.clone();
        long_sig[3..5].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(SignedMap::open(&long_sig, &[]), Err(MapError::SignatureTooLong(_))));
    }

    #[test]
    fn the_body_is_canonical_and_names_every_field() {
        let a = layout_bytes(&layout(5, 4));
        assert_eq!(a, layout_bytes(&layout(5, 4)), "one layout, one encoding");
        assert_ne!(a, layout_bytes(&layout(6, 4)), "the epoch is signed");
        let mut l = layout(5, 4);
        l.nodes[0].decommissioned = true;
        assert_ne!(a, layout_bytes(&l), "a decommission is signed");
        assert!(message_to_sign(&a).starts_with(b"rackpoint cluster map v1\0"));
        assert_ne!(message_to_sign(&a)[0], 0x30, "never a DER SEQUENCE");
    }

    proptest! {
        /// Only a strictly newer epoch passes; anything passes when nothing is held.
        #[test]
        fn the_epoch_rule(held in proptest::option::of(any::<u64>()), offered in any::<u64>()) {
            let ok = check_newer(held, offered).is_ok();
            prop_assert_eq!(ok, held.is_none_or(|h| offered > h));
            if let (Some(h), false) = (held, ok) {
                prop_assert_eq!(check_newer(held, offered), Err(MapError::Stale { held: h, offered }));
            }
        }

        /// Arbitrary bytes never panic and never open without a CA.
        #[test]
        fn arbitrary_bytes_never_open(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            prop_assert!(SignedMap::open(&b, &[]).is_err());
        }
    }
}
