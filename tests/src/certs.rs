//! Certificates for the TLS tests, made with the `openssl` command line as
//! an operator would: a CA, a server certificate for localhost and
//! 127.0.0.1, client certificates, and a second, foreign CA whose
//! certificates the broker must refuse. P-256 keys keep handshakes cheap.

use std::path::{Path, PathBuf};
use std::process::Command;

/// PEM files in one directory: `NAME.pem` (certificate) and `NAME.key`.
pub struct Certs {
    pub dir: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Certs {
    /// A CA `ca` and a server certificate `server` signed by it; a
    /// foreign CA `other-ca`.
    pub fn new(dir: &Path) -> Certs {
        let certs = Certs {
            dir: dir.to_path_buf(),
        };
        for ca in ["ca", "other-ca"] {
            openssl(
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=sluice test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.pem"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
                dir,
            );
        }
        certs.issue("server", "/CN=localhost", "ca", "serverAuth");
        certs
    }

    /// Issues `name` with `subject`, signed by CA `ca`, for `usage`
    /// (serverAuth or clientAuth).
    pub fn issue(&self, name: &str, subject: &str, ca: &str, usage: &str) {
        let ext = self.dir.join(format!("{name}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                 extendedKeyUsage={usage}\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
            ),
        )
        .expect("writing the extensions file");
        openssl(
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ],
            &self.dir,
        );
    }

    pub fn pem(&self, name: &str) -> String {
        self.dir.join(format!("{name}.pem")).display().to_string()
    }

    pub fn key(&self, name: &str) -> String {
        self.dir.join(format!("{name}.key")).display().to_string()
    }
}
