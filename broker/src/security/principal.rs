//! Who a connection is: the principal Kafka's default principal builder
//! gives. On an SSL listener without SASL that is `User:` and the client
//! certificate's subject as RFC 2253 writes it (Java's
//! `X500Principal.getName()`), `User:ANONYMOUS` without a certificate.

use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// The principal of a client that presented `cert` (DER); `None` if the
/// certificate cannot be read, which the handshake's verification would
/// already have refused.
pub fn from_certificate(cert: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(cert).ok()?;
    Some(format!("User:{}", rfc2253(cert.subject())))
}

/// The attribute keywords RFC 2253 output uses; any other attribute is
/// written as its OID with the hex of its DER value, as Java does.
fn keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// RFC 2253: the RDNs last first, joined by `,` without spaces; the
/// values of a multi-valued RDN joined by `+`; special characters escaped.
pub fn rfc2253(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    let rdns: Vec<_> = name.iter_rdn().collect();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = attr.attr_type().to_id_string();
            match (keyword(&oid), attr.as_str()) {
                (Some(key), Ok(value)) => {
                    out.push_str(key);
                    out.push('=');
                    escape_into(&mut out, value);
                }
                (key, _) => {
                    out.push_str(key.unwrap_or(&oid));
                    out.push_str("=#");
                    let value = attr.attr_value();
                    let tag = value.tag().0;
                    let class = value.class() as u8;
                    let constructed = u8::from(value.header.is_constructed());
                    // Tags of attribute values are small: one octet.
                    let first = (class << 6) | (constructed << 5) | (tag as u8 & 0x1f);
                    let mut der = vec![first];
                    push_length(&mut der, value.data.len());
                    der.extend_from_slice(value.data);
                    for b in der {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

fn push_length(der: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        der.push(len as u8);
        return;
    }
    let bytes: Vec<u8> = len
        .to_be_bytes()
        .into_iter()
        .skip_while(|&b| b == 0)
        .collect();
    der.push(0x80 | bytes.len() as u8);
    der.extend(bytes);
}

fn escape_into(out: &mut String, value: &str) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn special_characters_are_escaped_as_rfc_2253_says() {
        let mut out = String::new();
        escape_into(&mut out, "#Example, Inc. <ops>+\"x\"; a\\b ");
        assert_eq!(out, "\\#Example\\, Inc. \\<ops\\>\\+\\\"x\\\"\\; a\\\\b\\ ");
        let mut out = String::new();
        escape_into(&mut out, " lead");
        assert_eq!(out, "\\ lead");
    }

    /// Made with `openssl req -x509 -subj "/C=US/ST=CA/L=San Francisco/
    /// O=Example, Inc./OU=fleet/CN=#writer /emailAddress=w@example.com"`.
    const SUBJECT_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIICbTCCAhOgAwIBAgIUCrnWMQNDvRBQ922nnJpr+byYpVwwCgYIKoZIzj0EAwIw\n\
gYsxCzAJBgNVBAYTAlVTMQswCQYDVQQIDAJDQTEWMBQGA1UEBwwNU2FuIEZyYW5j\n\
aXNjbzEWMBQGA1UECgwNRXhhbXBsZSwgSW5jLjEOMAwGA1UECwwFZmxlZXQxETAP\n\
BgNVBAMMCCN3cml0ZXIgMRwwGgYJKoZIhvcNAQkBFg13QGV4YW1wbGUuY29tMB4X\n\
DTI2MTIwNzIzNTUxNFoXDTM2MTIwNDIzNTUxNFowgYsxCzAJBgNVBAYTAlVTMQsw\n\
CQYDVQQIDAJDQTEWMBQGA1UEBwwNU2FuIEZyYW5jaXNjbzEWMBQGA1UECgwNRXhh\n\
bXBsZSwgSW5jLjEOMAwGA1UECwwFZmxlZXQxETAPBgNVBAMMCCN3cml0ZXIgMRww\n\
GgYJKoZIhvcNAQkBFg13QGV4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYIKoZIzj0D\n\
AQcDQgAEMc1t3XjnudLpSqcCr1q+w009A9eiC4QkyghFUHn+omxKNaBCv8xqbeOJ\n\
pZ2ffiSPz04MS64FsXwo+ZW3A1yYRaNTMFEwHQYDVR0OBBYEFPRiAskPuh7PhKsa\n\
1wm7vBnpd1HPMB8GA1UdIwQYMBaAFPRiAskPuh7PhKsa1wm7vBnpd1HPMA8GA1Ud\n\
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIhAIqi0kKYuYgJtt0v/hyCs7aV\n\
UfF0ZUY+gBO9vAZ2gvTFAiAR5bpEPgy8i3hZhOnVirOZFnYfXFNF/j/oaHQBHuX9\n\
oA==\n\
-----END CERTIFICATE-----";

    #[test]
    fn a_certificate_subject_reads_as_javas_x500_principal_writes_it() {
        let der =
            rustls::pki_types::CertificateDer::from_pem_slice(SUBJECT_PEM.as_bytes()).expect("pem");
        // What `openssl x509 -nameopt RFC2253` prints, but for the email
        // address, which Java writes as its OID and DER value.
        assert_eq!(
            from_certificate(&der).expect("parsed"),
            "User:1.2.840.113549.1.9.1=#160d77406578616d706c652e636f6d,\
             CN=\\#writer\\ ,OU=fleet,O=Example\\, Inc.,L=San Francisco,ST=CA,C=US"
        );
        assert_eq!(from_certificate(b"not a certificate"), None);
    }

    #[test]
    fn long_lengths_use_the_long_form() {
        let mut der = Vec::new();
        push_length(&mut der, 300);
        assert_eq!(der, [0x82, 0x01, 0x2c]);
    }
}
