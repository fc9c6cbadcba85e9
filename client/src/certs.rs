//! The cluster's certificate authority: makes the CA, signs node and client certificates
//! (rcgen on ring, ECDSA P-256), and writes PEM files with private keys readable by their
//! owner only.
//!
//! A node certificate names the node (`node-<id>.rackpoint`, see
//! [`rackpoint_proto::cluster::node_server_name`]) and its listen IP, and is a server
//! identity only: nodes refuse it as a client. A client certificate is a client identity
//! only and carries its access grant (`rackpoint_proto::access`): the jobs it reaches and its
//! level, in a non-critical extension that nodes read on every request.
//!
//! The CA key also signs the cluster map ([`ClusterCa::sign_layout`], see
//! `rackpoint_proto::signed_map`), so that nodes and clients verify a map they are given
//! with the CA certificate they already hold.

use std::fs::{OpenOptions, Permissions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rackpoint_proto::access::{Grant, GRANT_EXTENSION_OID};
use rackpoint_proto::cluster::{node_server_name, ClusterLayout};
use rackpoint_proto::limits::{CERT_VALIDITY_YEARS, MAX_CLIENT_CERT_DAYS};
use rackpoint_proto::signed_map;
use rackpoint_proto::NodeId;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::SignatureScheme;

/// Unix permissions of a private key file: read and write by the owner only.
pub const KEY_FILE_MODE: u32 = 0o600;

/// Why a certificate could not be made, loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to make a key or a certificate.
    #[error("cannot make {what}: {error}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's reason.
        error: rcgen::Error,
    },
    /// A PEM private key did not parse.
    #[error("cannot read the CA private key: {0}")]
    BadKey(rcgen::Error),
    /// The CA certificate is not PEM, or does not carry the CA key's public key.
    #[error("the CA certificate does not belong to the CA key: {0}")]
    KeyMismatch(String),
    /// A name is not valid in a certificate.
    #[error("{name:?} is not a valid certificate name: {error}")]
    BadName {
        /// The refused name.
        name: String,
        /// rcgen's reason.
        error: rcgen::Error,
    },
    /// A validity in days of 0 or over `MAX_CLIENT_CERT_DAYS`.
    #[error("a certificate is valid for 1 to {MAX_CLIENT_CERT_DAYS} days, not {0}")]
    Days(u32),
    /// The CA key could not sign a cluster map.
    #[error("cannot sign the cluster map with the CA key: {0}")]
    Sign(String),
    /// A file could not be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
}

/// A certificate and its private key, both PEM, with the names a revocation list takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedPem {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The serial number, lower-case hex (as nodes log it and revocation lists name it).
    pub serial: String,
    /// `blake3:` and the hex blake3 of the certificate's DER (the other name a revocation
    /// list takes).
    pub fingerprint: String,
}

/// The cluster's certificate authority: every node and client certificate is signed by it,
/// and nodes and clients trust only it.
pub struct ClusterCa {
    /// The CA certificate as it was written (the trust anchor).
    cert_pem: String,
    /// The CA as rcgen's issuer (same name, key and key identifier as `cert_pem`).
    issuer: Certificate,
    key: KeyPair,
}

impl ClusterCa {
    /// Makes a new CA with a fresh key.
    pub fn generate() -> Result<Self, CertError> {
        let key = KeyPair::generate().map_err(|error| generate_error("the CA key", error))?;
        let issuer = self_signed_ca(&key)?;
        Ok(Self { cert_pem: issuer.pem(), issuer, key })
    }

    /// Loads an existing CA from its certificate and private key (PEM), to issue more
    /// certificates that chain to the same trust anchor.
    ///
    /// The issuer is rebuilt from the key: its name is derived from the public key, so it is
    /// the same name the original certificate carries. The certificate must hold the key's
    /// public key, or `KeyMismatch` is returned.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let key = KeyPair::from_pem(key_pem).map_err(CertError::BadKey)?;
        let cert_der = pem_certificate_der(cert_pem)?;
        let spki = key.public_key_der();
        if !cert_der.windows(spki.len()).any(|w| w == spki.as_slice()) {
            return Err(CertError::KeyMismatch("the certificate holds another public key".into()));
        }
        let issuer = self_signed_ca(&key)?;
        Ok(Self { cert_pem: cert_pem.to_owned(), issuer, key })
    }

    /// The CA certificate (PEM): the trust anchor nodes and clients load.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate's DER bytes (what a signed cluster map is verified against).
    pub fn cert_der(&self) -> Result<Vec<u8>, CertError> {
        pem_certificate_der(&self.cert_pem)
    }

    /// The CA private key (PEM). Whoever holds it can issue identities in the cluster.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Issues a node's certificate: DNS name `node_server_name(id)`, IP `ip`, usable as a
    /// server only (nodes refuse it as a client, so a storage host's key reaches no job).
    pub fn issue_node(&self, id: NodeId, ip: IpAddr) -> Result<CertifiedPem, CertError> {
        let name = node_server_name(id);
        let dns = name
            .clone()
            .try_into()
            .map_err(|error| CertError::BadName { name: name.clone(), error })?;
        let mut params = leaf_params(&name);
        set_validity(&mut params);
        params.subject_alt_names = vec![SanType::DnsName(dns), SanType::IpAddress(ip)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params, &format!("the certificate of node {id}"))
    }

    /// Issues a client certificate with common name `name` carrying `grant`, valid from a
    /// day ago (clock skew) for `days` days, usable as a client only.
    pub fn issue_client(
        &self,
        name: &str,
        grant: &Grant,
        days: u32,
    ) -> Result<CertifiedPem, CertError> {
        if days == 0 || days > MAX_CLIENT_CERT_DAYS {
            return Err(CertError::Days(days));
        }
        let mut params = leaf_params(name);
        let today = unix_days_now();
        let (y, m, d) = ymd(today - 1);
        params.not_before = rcgen::date_time_ymd(y, m, d);
        let (y, m, d) = ymd(today + i64::from(days));
        params.not_after = rcgen::date_time_ymd(y, m, d);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.custom_extensions =
            vec![CustomExtension::from_oid_content(GRANT_EXTENSION_OID, grant.to_der())];
        self.sign(params, &format!("the client certificate {name:?}"))
    }

    /// The cluster-wide part of a map, signed with the CA key: the bytes nodes store and
    /// serve (`rackpoint_proto::signed_map`).
    pub fn sign_layout(&self, layout: &ClusterLayout) -> Result<Vec<u8>, CertError> {
        use rustls::pki_types::PrivateKeyDer;
        let sign_error = |e: &dyn std::fmt::Display| CertError::Sign(e.to_string());
        let der = PrivateKeyDer::try_from(self.key.serialize_der()).map_err(|e| sign_error(&e))?;
        let key =
            rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| sign_error(&e))?;
        let schemes = [
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::ED25519,
        ];
        let signer = key
            .choose_scheme(&schemes)
            .ok_or_else(|| sign_error(&"the CA key is neither ECDSA P-256, P-384 nor Ed25519"))?;
        let body = signed_map::layout_bytes(layout);
        let signature =
            signer.sign(&signed_map::message_to_sign(&body)).map_err(|e| sign_error(&e))?;
        signed_map::seal(&body, u16::from(signer.scheme()), &signature).map_err(|e| sign_error(&e))
    }

    fn sign(&self, mut params: CertificateParams, what: &str) -> Result<CertifiedPem, CertError> {
        let key = KeyPair::generate().map_err(|error| generate_error(what, error))?;
        let serial = fresh_serial(&key);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|error| generate_error(what, error))?;
        Ok(CertifiedPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.iter().map(|b| format!("{b:02x}")).collect(),
            fingerprint: format!("blake3:{}", blake3::hash(cert.der()).to_hex()),
        })
    }
}

/// A 16-byte serial, unique per key and moment: the blake3 of the new public key and the
/// time. Its first byte is kept in 0x40..=0x7f so that DER stores all 16 bytes as they are
/// (positive, no leading zero), and the hex nodes print is the hex issued here.
fn fresh_serial(key: &KeyPair) -> [u8; 16] {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&key.public_key_der()).update(&nanos.to_le_bytes());
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    serial[0] = 0x40 | (serial[0] & 0x3f);
    serial
}

fn generate_error(what: &str, error: rcgen::Error) -> CertError {
    CertError::Generate { what: what.to_owned(), error }
}

/// The CA's certificate for `key`. Its common name is derived from the public key, so
/// rebuilding it from the same key gives the same issuer name and key identifier.
fn self_signed_ca(key: &KeyPair) -> Result<Certificate, CertError> {
    let fingerprint = blake3::hash(&key.public_key_der()).to_hex();
    let mut params = CertificateParams::default();
    params.distinguished_name =
        distinguished_name(&format!("Rackpoint cluster CA {}", &fingerprint.as_str()[..16]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut params);
    params.self_signed(key).map_err(|error| generate_error("the CA certificate", error))
}

fn leaf_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Rackpoint");
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Valid from January 1st of this year for `CERT_VALIDITY_YEARS` years.
fn set_validity(params: &mut CertificateParams) {
    let year = current_year();
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + CERT_VALIDITY_YEARS, 1, 1);
}

/// Whole days since 1970-01-01 (UTC) now; a clock before 1970 counts as day 0.
fn unix_days_now() -> i64 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    i64::try_from(secs / 86_400).unwrap_or(0)
}

/// Year, month and day of the day `days` after 1970-01-01 (Howard Hinnant's civil-from-days).
fn ymd(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = (if mp < 10 { mp + 3 } else { mp - 9 }) as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

/// The current calendar year (UTC). Counting whole days of the proleptic Gregorian
/// calendar from 1970 is exact; a clock before 1970 counts as 1970.
fn current_year() -> i32 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut days = secs / 86_400;
    let mut year = 1970;
    loop {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        let len = if leap { 366 } else { 365 };
        if days < len {
            return year;
        }
        days -= len;
        year += 1;
    }
}

/// The DER bytes of the first certificate in a PEM text.
fn pem_certificate_der(cert_pem: &str) -> Result<Vec<u8>, CertError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map(|c| c.to_vec())
        .map_err(|e| CertError::KeyMismatch(format!("the CA certificate is not PEM: {e}")))
}

/// Writes a private key file readable and writable by its owner only (mode 0600), also
/// when the file already exists with wider permissions.
pub fn write_key_file(path: &Path, key_pem: &str) -> Result<(), CertError> {
    let write_error = |error| CertError::Write { path: path.to_owned(), error };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(write_error)?;
    file.set_permissions(Permissions::from_mode(KEY_FILE_MODE)).map_err(write_error)?;
    file.write_all(key_pem.as_bytes()).map_err(write_error)?;
    file.sync_all().map_err(write_error)
}

/// Writes a certificate (or any public) file.
pub fn write_public_file(path: &Path, text: &str) -> Result<(), CertError> {
    std::fs::write(path, text).map_err(|error| CertError::Write { path: path.to_owned(), error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(ca_pem: &str) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
            .expect("CA is a valid anchor");
        Arc::new(roots)
    }

    fn verify_server(ca_pem: &str, cert_pem: &str, name: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider())
            .build()
            .expect("verifier");
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM");
        let name = ServerName::try_from(name.to_owned()).expect("server name");
        verifier.verify_server_cert(&cert, &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    fn verify_client(ca_pem: &str, cert_pem: &str) -> Result<(), rustls::Error> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider())
            .build()
            .expect("verifier");
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert PEM");
        verifier.verify_client_cert(&cert, &[], UnixTime::now()).map(|_| ())
    }

    #[test]
    fn node_certificates_verify_for_their_own_name_only() {
        let ca = ClusterCa::generate().expect("CA");
        let node = ca.issue_node(NodeId(3), [127, 0, 0, 1].into()).expect("node cert");
        verify_server(ca.cert_pem(), &node.cert_pem, "node-3.rackpoint").expect("own name");
        verify_server(ca.cert_pem(), &node.cert_pem, "127.0.0.1").expect("listen IP");
        assert!(verify_server(ca.cert_pem(), &node.cert_pem, "node-4.rackpoint").is_err());
        assert!(verify_client(ca.cert_pem(), &node.cert_pem).is_err(), "a node is never a client");
    }

    #[test]
    fn client_certificates_are_clients_only() {
        let ca = ClusterCa::generate().expect("CA");
        let client = ca.issue_client("trainer", &Grant::admin(), 1).expect("client cert");
        verify_client(ca.cert_pem(), &client.cert_pem).expect("client auth");
        assert!(verify_server(ca.cert_pem(), &client.cert_pem, "trainer").is_err());
    }

    #[test]
    fn another_ca_is_not_trusted() {
        let ca = ClusterCa::generate().expect("CA");
        let other = ClusterCa::generate().expect("CA");
        let client = other.issue_client("intruder", &Grant::admin(), 1).expect("client cert");
        assert!(verify_client(ca.cert_pem(), &client.cert_pem).is_err());
        let node = other.issue_node(NodeId(1), [127, 0, 0, 1].into()).expect("node cert");
        assert!(verify_server(ca.cert_pem(), &node.cert_pem, "node-1.rackpoint").is_err());
    }

    #[test]
    fn a_reloaded_ca_issues_certificates_that_chain_to_the_original() {
        let ca = ClusterCa::generate().expect("CA");
        let reloaded = ClusterCa::load(ca.cert_pem(), &ca.key_pem()).expect("reload");
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        let node = reloaded.issue_node(NodeId(9), [10, 0, 0, 9].into()).expect("node cert");
        verify_server(ca.cert_pem(), &node.cert_pem, "node-9.rackpoint").expect("chains");
    }

    #[test]
    fn loading_a_ca_with_the_wrong_key_or_garbage_fails() {
        let ca = ClusterCa::generate().expect("CA");
        let other = ClusterCa::generate().expect("CA");
        assert!(matches!(
            ClusterCa::load(ca.cert_pem(), &other.key_pem()),
            Err(CertError::KeyMismatch(_))
        ));
        assert!(matches!(ClusterCa::load(ca.cert_pem(), "junk"), Err(CertError::BadKey(_))));
        assert!(matches!(ClusterCa::load("junk", &ca.key_pem()), Err(CertError::KeyMismatch(_))));
    }

    #[test]
    fn key_files_are_private_even_when_they_existed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("k.key");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).expect("chmod");
        write_key_file(&path, "new key").expect("write key");
        let meta = std::fs::metadata(&path).expect("stat");
        assert_eq!(meta.mode() & 0o777, KEY_FILE_MODE);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new key");
    }

    #[test]
    fn days_become_calendar_dates() {
        assert_eq!(ymd(0), (1970, 1, 1));
        assert_eq!(ymd(11_017), (2000, 3, 1));
        assert_eq!(ymd(20_789), (2026, 12, 2));
        assert_eq!(ymd(-1), (1969, 12, 31));
    }

    #[test]
    fn current_year_is_plausible() {
        let year = current_year();
        assert!((2024..2200).contains(&year), "{year}");
    }

    mod map_signing {
        use super::*;
        use proptest::prelude::*;
        use rackpoint_proto::cluster::CodeParams;
        use rackpoint_proto::signed_map::{MapError, SignedMap};
        use rackpoint_proto::NodeInfo;

        fn der(ca: &ClusterCa) -> Vec<u8> {
            pem_certificate_der(ca.cert_pem()).expect("CA PEM")
        }

        fn layout(epoch: u64) -> ClusterLayout {
            ClusterLayout {
                epoch,
                code: CodeParams::new(4, 2, 4096).expect("valid"),
                nodes: (1..=7)
                    .map(|i| NodeInfo {
                        id: NodeId(i),
                        addr: ([127, 0, 0, 1], 7000 + i as u16).into(),
                        rack: format!("rack-{}", i % 3),
                        decommissioned: i == 4,
                    })
                    .collect(),
            }
        }

        /// One CA and one signed map for every case (signing is the slow part).
        fn fixture() -> &'static (ClusterCa, ClusterCa, Vec<u8>) {
            static FIXTURE: std::sync::OnceLock<(ClusterCa, ClusterCa, Vec<u8>)> =
                std::sync::OnceLock::new();
            FIXTURE.get_or_init(|| {
                let ca = ClusterCa::generate().expect("CA");
                let other = ClusterCa::generate().expect("CA");
                let signed = ca.sign_layout(&layout(3)).expect("signs");
                (ca, other, signed)
            })
        }

        #[test]
        fn a_signed_map_opens_with_its_ca_only() {
            let (ca, other, signed) = fixture();
            let map = SignedMap::open(signed, &[&der(ca)]).expect("verifies");
            assert_eq!((map.epoch(), map.layout()), (3, &layout(3)));
            assert_eq!(map.bytes(), signed.as_slice());
            assert_eq!(SignedMap::open(signed, &[&der(other)]), Err(MapError::BadSignature));
            let either = SignedMap::open(signed, &[&der(other), &der(ca)]).expect("one of two");
            assert_eq!(either.epoch(), 3);
            // The CA reloaded from its files signs maps the same certificate verifies.
            let reloaded = ClusterCa::load(ca.cert_pem(), &ca.key_pem()).expect("loads");
            let again = reloaded.sign_layout(&layout(4)).expect("signs");
            assert_eq!(SignedMap::open(&again, &[&der(ca)]).map(|m| m.epoch()), Ok(4));
        }

        #[test]
        fn an_invalid_layout_is_refused_even_when_signed() {
            let (ca, _, _) = fixture();
            let mut empty = layout(9);
            empty.nodes.clear();
            let signed = ca.sign_layout(&empty).expect("signs");
            assert!(matches!(SignedMap::open(&signed, &[&der(ca)]), Err(MapError::Invalid(_))));
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            /// Any one byte changed anywhere (envelope, signature or body) and the map does
            /// not open.
            #[test]
            fn any_byte_flip_is_refused(pos in any::<usize>(), flip in 1u8..=255) {
                let (ca, _, signed) = fixture();
                let mut bytes = signed.clone();
                let i = pos % bytes.len();
                bytes[i] ^= flip;
                prop_assert!(SignedMap::open(&bytes, &[&der(ca)]).is_err(), "byte {}", i);
            }

            /// Cut short or lengthened, it does not open either.
            #[test]
            fn any_truncation_or_extension_is_refused(cut in any::<usize>(), extra in 1u8..=255) {
                let (ca, _, signed) = fixture();
                let short = &signed[..cut % signed.len()];
                prop_assert!(SignedMap::open(short, &[&der(ca)]).is_err());
                let mut long = signed.clone();
                long.push(extra);
                prop_assert!(SignedMap::open(&long, &[&der(ca)]).is_err());
            }
        }
    }
}
