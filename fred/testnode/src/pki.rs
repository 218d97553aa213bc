//! Throw-away PKI for tests: one CA and one certificate per node or user, in the file layout
//! `fred/make-certs.sh` also writes (`ca.crt`, `ca.key`, `NAME.crt`, `NAME.key`), plus reading a
//! certificate's CN, which is how FReD names the calling user.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::tls::NodeTls;

/// A CA and certificates signed by it, as PEM files in `dir`.
#[derive(Clone, Debug)]
pub struct TestPki {
    /// Holds `ca.crt`, `ca.key`, `NAME.crt`, `NAME.key`.
    pub dir: PathBuf,
}

impl TestPki {
    /// CA + one cert per name: CN = name, EKU serverAuth+clientAuth, SANs IP 127.0.0.1 and DNS
    /// localhost. The same certificate serves a node (server) and a user (client), as in FReD's
    /// own test setups.
    pub fn generate(dir: &Path, names: &[&str]) -> anyhow::Result<TestPki> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki = TestPki {
            dir: dir.to_path_buf(),
        };

        let mut ca_params = CertificateParams::default();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fred-testnode test CA (not FReD)");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        write(&pki.ca(), &ca_cert.pem())?;
        write(&pki.dir.join("ca.key"), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params, ca_key);

        for name in names {
            let mut params =
                CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
            params.distinguished_name.push(DnType::CommonName, *name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &issuer)?;
            write(&pki.cert(name), &cert.pem())?;
            write(&pki.key(name), &key.serialize_pem())?;
        }
        Ok(pki)
    }

    /// The CA certificate (`ca.crt`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `NAME.crt`.
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// `NAME.key` (PKCS#8 PEM).
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// The TLS files for serving as node `name` with this PKI.
    pub fn node_tls(&self, name: &str) -> NodeTls {
        NodeTls {
            cert: self.cert(name),
            key: self.key(name),
            ca: self.ca(),
        }
    }
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

/// The subject common name of a DER certificate: the user name FReD authorises.
///
/// A minimal DER walk (Certificate > tbsCertificate > subject > RDNs) so no X.509 parser is
/// needed; `None` if the certificate is malformed or has no CN.
pub fn common_name(der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03]; // 2.5.4.3
    let (cert, _) = tlv(der, SEQUENCE)?;
    let (tbs, _) = tlv(cert, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.1; // [0] version
    }
    for _ in 0..4 {
        rest = any_tlv(rest)?.2; // serialNumber, signature, issuer, validity
    }
    let (mut subject, _) = tlv(rest, SEQUENCE)?;
    while !subject.is_empty() {
        let (rdn, next) = tlv(subject, 0x31)?;
        subject = next;
        let mut attrs = rdn;
        while !attrs.is_empty() {
            let (attr, next) = tlv(attrs, SEQUENCE)?;
            attrs = next;
            let (oid, value) = tlv(attr, 0x06)?;
            if oid == CN_OID {
                let (tag, text, _) = any_tlv(value)?;
                // UTF8String, PrintableString, T61String, IA5String
                if matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) {
                    return String::from_utf8(text.to_vec()).ok();
                }
            }
        }
    }
    None
}

/// One DER element with the expected tag: (contents, rest).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, body, rest) = any_tlv(input)?;
    (t == tag).then_some((body, rest))
}

/// One DER element (single-byte tags only, enough for certificates): (tag, contents, rest).
fn any_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let (bytes, rest) = input.split_at(n);
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_to_der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        decode_base64(&b64)
    }

    fn decode_base64(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').map(val).collect();
        let mut out = Vec::new();
        for chunk in bytes.chunks(4) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, v)| acc | (u32::from(*v) << (18 - 6 * i)));
            out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
        }
        out
    }

    #[test]
    fn generated_certs_carry_their_name_as_cn() {
        let dir = tempfile::tempdir().unwrap();
        let pki = TestPki::generate(dir.path(), &["nodeA", "alice"]).unwrap();
        for name in ["nodeA", "alice"] {
            assert!(pki.key(name).exists());
            let der = pem_to_der(&fs::read_to_string(pki.cert(name)).unwrap());
            assert_eq!(common_name(&der).as_deref(), Some(name));
        }
        assert!(pki.ca().exists() && dir.path().join("ca.key").exists());
    }

    #[test]
    fn malformed_der_has_no_cn() {
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x85, 1, 2]), None);
        assert_eq!(common_name(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
    }
}
