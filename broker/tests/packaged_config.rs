//! The config file the Debian package installs
//! (`packaging/debian/sluice.toml`) lists every key `sluice serve` accepts,
//! and its commented lines show the true built-in defaults: a new `Config`
//! field or a changed default fails here until the file says so too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use broker::config::Config;

fn packaged_text() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/debian/sluice.toml"
    );
    std::fs::read_to_string(path).expect("packaging/debian/sluice.toml is readable")
}

/// The file with every `# key = value` line uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_setting(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_setting(line: &str) -> bool {
    line.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The top-level field names of `Config`, read from its `Debug` output so
/// that the list cannot fall behind the struct.
fn config_fields() -> BTreeSet<String> {
    let debug = format!("{:?}", Config::default());
    let body = debug
        .strip_prefix("Config { ")
        .and_then(|b| b.strip_suffix(" }"))
        .expect("Config's Debug output is derived");
    let mut fields = BTreeSet::new();
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut start = 0;
    for (i, c) in body.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth -= 1,
            ':' if depth == 0 && start <= i => {
                fields.insert(body[start..i].trim().to_string());
                start = usize::MAX;
            }
            ',' if depth == 0 => start = i + 1,
            _ => {}
        }
    }
    fields
}

#[test]
fn packaged_config_lists_every_key() {
    let text = uncommented(&packaged_text());
    let table: toml::Table = toml::from_str(&text).expect("the uncommented file is TOML");
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    let fields = config_fields();
    assert!(fields.len() > 20, "field parsing went wrong: {fields:?}");
    let missing: Vec<_> = fields.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&fields).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "packaging/debian/sluice.toml: missing keys {missing:?}, unknown keys {unknown:?}"
    );
}

#[test]
fn packaged_config_comments_show_the_defaults() {
    // As installed: only data_dir is set.
    let installed = Config::from_toml(&packaged_text()).expect("the packaged file parses");
    let want = Config {
        data_dir: PathBuf::from("/var/lib/sluice"),
        ..Config::default()
    };
    assert_eq!(installed, want);
    installed
        .validate()
        .expect("the packaged settings are valid");

    // Every line uncommented: the same, but for the keys without a default,
    // whose lines are examples.
    let mut all = Config::from_toml(&uncommented(&packaged_text()))
        .expect("the uncommented file parses: every key exists");
    assert!(all.advertise.take().is_some());
    assert!(all.tls_cert.take().is_some());
    assert!(all.tls_key.take().is_some());
    assert!(all.tls_client_ca.take().is_some());
    assert!(all.scram_bootstrap_file.take().is_some());
    assert!(all.oauth_jwks.take().is_some());
    assert!(all.oauth_expected_issuer.take().is_some());
    assert!(all.oauth_expected_audience.take().is_some());
    assert!(all.cluster_tls_cert.take().is_some());
    assert!(all.cluster_tls_key.take().is_some());
    assert!(all.cluster_tls_ca.take().is_some());
    assert!(all.cores.take().is_some());
    assert!(all.cpus.take().is_some());
    assert!(all.fsync.take().is_some());
    assert_eq!(
        all, want,
        "a commented value differs from the built-in default"
    );
}
