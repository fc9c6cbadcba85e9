//! Just enough DER to read what a node needs from a peer's X.509 certificate: serial, end of
//! validity, subject common name, whether it may serve (extended key usage), and the value of
//! an extension by OID. Every length is checked against the bytes that hold it; anything
//! unexpected is an error, never a panic. (A small reader rather than an X.509 crate: the
//! certificate is already verified by rustls, and the crates available pulled in features that
//! rebuilt RocksDB's bindings.)

/// Why a certificate does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct DerError(&'static str);

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const BOOLEAN: u8 = 0x01;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VERSION_TAG: u8 = 0xa0;
const EXTENSIONS_TAG: u8 = 0xa3;

/// The subject's common name, 2.5.4.3.
const CN: &[u64] = &[2, 5, 4, 3];
/// Extended key usage, 2.5.29.37.
const EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// id-kp-serverAuth, 1.3.6.1.5.5.7.3.1.
const SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
/// anyExtendedKeyUsage, 2.5.29.37.0.
const ANY_USAGE: &[u64] = &[2, 5, 29, 37, 0];

/// A cursor over DER bytes.
#[derive(Debug, Clone, Copy)]
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The next element: its tag and contents.
    fn next(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, rest) = self.0.split_first().ok_or(DerError("truncated tag"))?;
        let (&first, rest) = rest.split_first().ok_or(DerError("truncated length"))?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                let (bytes, rest) =
                    (rest.get(..n).ok_or(DerError("truncated length"))?, &rest[n..]);
                (bytes.iter().fold(0usize, |acc, &b| acc << 8 | usize::from(b)), rest)
            }
            _ => return Err(DerError("unsupported length form")),
        };
        let body = rest.get(..len).ok_or(DerError("length past the end"))?;
        self.0 = &rest[len..];
        Ok((tag, body))
    }

    /// The next element, which must have `tag`.
    fn expect(&mut self, tag: u8, what: &'static str) -> Result<&'a [u8], DerError> {
        match self.next()? {
            (t, body) if t == tag => Ok(body),
            _ => Err(DerError(what)),
        }
    }
}

/// Whether the DER contents of an OID are `arcs`.
fn oid_is(body: &[u8], arcs: &[u64]) -> bool {
    let mut decoded = Vec::with_capacity(arcs.len());
    let mut value: u64 = 0;
    for &b in body {
        if value > u64::MAX >> 7 {
            return false;
        }
        value = value << 7 | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if decoded.is_empty() {
                let first = (value / 40).min(2);
                decoded.extend([first, value - first * 40]);
            } else {
                decoded.push(value);
            }
            value = 0;
        }
    }
    body.last().is_some_and(|b| b & 0x80 == 0) && decoded == arcs
}

/// What a node reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate<'a> {
    /// The serial number's bytes as encoded.
    pub serial: &'a [u8],
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
    /// The subject's first common name, if it is text.
    pub common_name: Option<&'a str>,
    /// Whether its extended key usage allows serving (serverAuth or any).
    pub serves: bool,
    extensions: Vec<(&'a [u8], &'a [u8])>,
}

impl<'a> Certificate<'a> {
    /// Parses a certificate's DER bytes.
    pub fn parse(der: &'a [u8]) -> Result<Self, DerError> {
        let mut outer = Reader(der);
        let cert = outer.expect(SEQUENCE, "not a certificate")?;
        let mut cert = Reader(cert);
        let mut tbs = Reader(cert.expect(SEQUENCE, "no tbsCertificate")?);
        if tbs.peek_tag() == Some(VERSION_TAG) {
            tbs.next()?;
        }
        let serial = tbs.expect(INTEGER, "no serial")?;
        tbs.expect(SEQUENCE, "no signature algorithm")?;
        tbs.expect(SEQUENCE, "no issuer")?;
        let mut validity = Reader(tbs.expect(SEQUENCE, "no validity")?);
        validity.next()?;
        let not_after = time(validity.next()?)?;
        let common_name = common_name(tbs.expect(SEQUENCE, "no subject")?)?;
        tbs.expect(SEQUENCE, "no public key")?;
        let mut extensions = Vec::new();
        while !tbs.is_empty() {
            let (tag, body) = tbs.next()?;
            if tag == EXTENSIONS_TAG {
                let mut list = Reader(Reader(body).expect(SEQUENCE, "bad extensions")?);
                while !list.is_empty() {
                    let mut ext = Reader(list.expect(SEQUENCE, "bad extension")?);
                    let oid = ext.expect(OID, "bad extension id")?;
                    if ext.peek_tag() == Some(BOOLEAN) {
                        ext.next()?;
                    }
                    extensions.push((oid, ext.expect(OCTET_STRING, "bad extension value")?));
                }
            }
        }
        let mut cert = Self { serial, not_after, common_name, serves: false, extensions };
        if let Some(eku) = cert.extension(EXT_KEY_USAGE) {
            let mut usages = Reader(Reader(eku).expect(SEQUENCE, "bad key usage")?);
            while !usages.is_empty() {
                let usage = usages.expect(OID, "bad key usage")?;
                cert.serves |= oid_is(usage, SERVER_AUTH) || oid_is(usage, ANY_USAGE);
            }
        }
        Ok(cert)
    }

    /// The value (the OCTET STRING's contents) of the extension `oid`, if present.
    pub fn extension(&self, oid: &[u64]) -> Option<&'a [u8]> {
        self.extensions.iter().find(|(id, _)| oid_is(id, oid)).map(|(_, value)| *value)
    }
}

/// The first common name of a Name (a SEQUENCE of SETs of (OID, value) SEQUENCEs).
fn common_name(name: &[u8]) -> Result<Option<&str>, DerError> {
    let mut rdns = Reader(name);
    while !rdns.is_empty() {
        let mut set = Reader(rdns.expect(SET, "bad name")?);
        while !set.is_empty() {
            let mut attr = Reader(set.expect(SEQUENCE, "bad name attribute")?);
            let oid = attr.expect(OID, "bad name attribute")?;
            let (_, value) = attr.next()?;
            if oid_is(oid, CN) {
                return Ok(std::str::from_utf8(value).ok());
            }
        }
    }
    Ok(None)
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as
/// seconds since the Unix epoch.
fn time((tag, body): (u8, &[u8])) -> Result<i64, DerError> {
    let text = std::str::from_utf8(body).map_err(|_| DerError("bad time"))?;
    let digits = text.strip_suffix('Z').ok_or(DerError("time not in UTC"))?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DerError("bad time"));
    }
    let num = |s: &str| s.parse::<i64>().map_err(|_| DerError("bad time"));
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return Err(DerError("bad time")),
    };
    let field = |i: usize| num(&rest[i..i + 2]);
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(DerError("bad time"));
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;
    use proptest::prelude::*;
    use rackpoint_proto::access::{Grant, GRANT_EXTENSION_OID};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM").to_vec()
    }

    #[test]
    fn reads_what_rcgen_wrote() {
        let ca = TestCa::new("test CA");
        let client = der_of(&ca.client_with("trainer-7", &Grant::admin()).cert_pem);
        let cert = Certificate::parse(&client).expect("parses");
        assert_eq!(cert.common_name, Some("trainer-7"));
        assert!(!cert.serves);
        let grant = cert.extension(GRANT_EXTENSION_OID).expect("grant extension");
        assert_eq!(Grant::from_der(grant).expect("grant"), Grant::admin());
        // rcgen's default validity ends on 4096-01-01.
        assert_eq!(cert.not_after, days_from_civil(4096, 1, 1) * 86_400);
        let node = der_of(&ca.node(rackpoint_proto::NodeId(3)).cert_pem);
        let node = Certificate::parse(&node).expect("parses");
        assert!(node.serves && node.extension(GRANT_EXTENSION_OID).is_none());
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 2), 20_789);
    }

    #[test]
    fn oids_compare_by_arcs() {
        // 1.3.6.1.5.5.7.3.1
        assert!(oid_is(&[0x2b, 6, 1, 5, 5, 7, 3, 1], SERVER_AUTH));
        assert!(!oid_is(&[0x2b, 6, 1, 5, 5, 7, 3, 2], SERVER_AUTH));
        assert!(!oid_is(&[0x2b, 6, 0x81], &[1, 3, 6]), "a truncated arc is no match");
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Certificate::parse(&bytes);
        }

        #[test]
        fn any_corruption_of_a_real_certificate_parses_or_fails(at in 0usize..2000, byte in any::<u8>()) {
            let ca = TestCa::new("ca");
            let mut der = der_of(&ca.client().cert_pem);
            let i = at % der.len();
            der[i] = byte;
            let _ = Certificate::parse(&der);
            der.truncate(i);
            let _ = Certificate::parse(&der);
        }
    }
}
