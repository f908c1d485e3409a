//! Client properties the operator gives: a `--command-config` file of
//! `key=value` lines and `-X KEY=VALUE` flags, both in librdkafka's names,
//! each checked against librdkafka before use so that a mistake is
//! reported with where it came from (file and line, or the flag).

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context};
use rdkafka::bindings;

/// Bound on a properties file: it holds a few dozen settings, and reading
/// something else by mistake must not fill memory.
const FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Properties the CLI owns: the bootstrap list is `--bootstrap`, which
/// the reachability check also reads, so it has one source.
const OWNED: [&str; 2] = ["bootstrap.servers", "metadata.broker.list"];

/// Where a property came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    File { path: String, line: usize },
    Flag,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{path}, line {line}"),
            Origin::Flag => write!(f, "-X"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    pub key: String,
    pub value: String,
    pub origin: Origin,
}

/// Reads a properties file: `key=value` per line; blank lines and lines
/// starting with `#` or `!` are skipped; whitespace around the key and
/// the value is dropped; the value runs from the first `=` to the end of
/// the line, so it may hold `=` itself. Later lines win over earlier ones
/// when the properties are applied in order.
pub fn read_file(path: &Path) -> anyhow::Result<Vec<Property>> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).with_context(|| format!("reading {shown}"))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {shown}"))?
        .len();
    if len > FILE_BYTES_MAX {
        bail!("{shown}: {len} bytes, more than a properties file holds (at most {FILE_BYTES_MAX})");
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {shown}"))?;
    let text = String::from_utf8(bytes).with_context(|| format!("{shown}: not UTF-8 text"))?;
    parse(&text, &shown)
}

/// Parses the text of a properties file named `path` (for messages).
pub fn parse(text: &str, path: &str) -> anyhow::Result<Vec<Property>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let origin = Origin::File {
            path: path.to_string(),
            line: i + 1,
        };
        let Some((key, value)) = line.split_once('=') else {
            bail!("{origin}: expected key=value, got {:?}", shorten(line));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!("{origin}: expected key=value, got {:?}", shorten(line));
        }
        out.push(Property {
            key: key.to_string(),
            value: value.trim().to_string(),
            origin,
        });
    }
    Ok(out)
}

/// The start of a malformed line: enough to find it, not a whole secret
/// that happened to be on it.
fn shorten(line: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    if line.chars().count() <= SHOWN_CHARS_MAX {
        return line.to_string();
    }
    let mut s: String = line.chars().take(SHOWN_CHARS_MAX).collect();
    s.push('…');
    s
}

/// Checks each property against librdkafka (the name exists, the value
/// fits its type) and against the ones the CLI owns, naming the origin.
pub fn check(properties: &[Property]) -> anyhow::Result<()> {
    for p in properties {
        if OWNED.contains(&p.key.as_str()) {
            bail!(
                "{}: {} is set with --bootstrap (or SLUICE_BOOTSTRAP)",
                p.origin,
                p.key
            );
        }
        if let Err(e) = librdkafka_accepts(&p.key, &p.value) {
            bail!("{}: {e}", p.origin);
        }
    }
    Ok(())
}

/// librdkafka's own verdict on one property, on a scratch configuration.
fn librdkafka_accepts(key: &str, value: &str) -> Result<(), String> {
    let k = CString::new(key).map_err(|_| format!("{key:?}: a NUL byte in the name"))?;
    let v = CString::new(value).map_err(|_| format!("{key}: a NUL byte in the value"))?;
    let mut err = [0 as std::os::raw::c_char; 512];
    // SAFETY: a fresh configuration owned here and destroyed below; the
    // strings and the error buffer outlive the call, and the buffer's
    // length is passed with it.
    let (result, message) = unsafe {
        let conf = bindings::rd_kafka_conf_new();
        let result =
            bindings::rd_kafka_conf_set(conf, k.as_ptr(), v.as_ptr(), err.as_mut_ptr(), err.len());
        bindings::rd_kafka_conf_destroy(conf);
        (
            result,
            CStr::from_ptr(err.as_ptr()).to_string_lossy().into_owned(),
        )
    };
    if result == bindings::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
        Ok(())
    } else {
        Err(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(props: &[Property]) -> Vec<(&str, &str)> {
        props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect()
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let text = "# a comment\n\n! another\n   \n  security.protocol = SASL_SSL  \r\n\
                    sasl.mechanism=SCRAM-SHA-512\n\t# indented comment\nsasl.username =admin\n";
        let props = parse(text, "client.properties").expect("parses");
        assert_eq!(
            kv(&props),
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("sasl.username", "admin"),
            ]
        );
        assert_eq!(
            props[1].origin,
            Origin::File {
                path: "client.properties".into(),
                line: 6
            }
        );
    }

    #[test]
    fn a_value_keeps_equals_signs_and_hashes() {
        let props = parse("sasl.password=a=b#c!d=\n", "f").expect("parses");
        assert_eq!(kv(&props), [("sasl.password", "a=b#c!d=")]);
    }

    #[test]
    fn an_empty_value_is_kept() {
        let props = parse("ssl.endpoint.identification.algorithm=\n", "f").expect("parses");
        assert_eq!(kv(&props), [("ssl.endpoint.identification.algorithm", "")]);
    }

    #[test]
    fn malformed_lines_are_refused_with_file_and_line() {
        for (text, line) in [
            ("a=1\nno separator here\n", 2),
            ("=value\n", 1),
            ("# c\n\n  = x\n", 3),
            ("sasl mechanism=PLAIN\n", 1),
        ] {
            let e = parse(text, "conf/client.properties")
                .expect_err(text)
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "conf/client.properties, line {line}: expected key=value"
                )),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn a_long_malformed_line_is_shown_cut_short() {
        let line = "x".repeat(200);
        let e = parse(&line, "f").expect_err("malformed").to_string();
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = read_file(Path::new("/nonexistent/client.properties"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("/nonexistent/client.properties"), "{e}");
    }

    #[test]
    fn librdkafka_checks_names_and_values() {
        let flag = |k: &str, v: &str| Property {
            key: k.into(),
            value: v.into(),
            origin: Origin::Flag,
        };
        check(&[
            flag("security.protocol", "SASL_SSL"),
            flag("sasl.mechanism", "SCRAM-SHA-256"),
        ])
        .expect("valid");
        let unknown = check(&[flag("sasl.mechanizm", "PLAIN")])
            .expect_err("unknown name")
            .to_string();
        assert!(
            unknown.starts_with("-X: ") && unknown.contains("sasl.mechanizm"),
            "{unknown}"
        );
        let bad_value = check(&[flag("security.protocol", "TLS")])
            .expect_err("bad value")
            .to_string();
        assert!(bad_value.contains("security.protocol"), "{bad_value}");
        let owned = check(&[flag("bootstrap.servers", "h:1")])
            .expect_err("owned")
            .to_string();
        assert!(owned.contains("--bootstrap"), "{owned}");
    }
}
