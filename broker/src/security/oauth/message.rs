//! The OAUTHBEARER client's first message (RFC 7628 3.1), read as Kafka's
//! `OAuthBearerClientInitialResponse` reads it:
//! `n,[a=authzid],^Aauth=Bearer <token>^A[key=value^A...]^A`.

/// The separator of RFC 7628, Control-A.
pub const SEPARATOR: u8 = 0x01;

#[derive(Debug, PartialEq, Eq)]
pub struct ClientResponse<'a> {
    /// The authorization id asked for; empty when none.
    pub authzid: String,
    pub token: &'a str,
    /// SASL extensions (`key=value`), as sent; Kafka ignores those its
    /// validator does not know, and so does Sluice.
    pub extensions: Vec<(&'a str, &'a str)>,
}

const INVALID: &str = "Invalid OAUTHBEARER client first message";

/// Parses the client's first message; the error says what is wrong.
pub fn parse(message: &[u8]) -> Result<ClientResponse<'_>, String> {
    let text = std::str::from_utf8(message).map_err(|_| format!("{INVALID}: not UTF-8"))?;
    let rest = text
        .strip_prefix("n,")
        .ok_or_else(|| format!("{INVALID}: it does not start with the GS2 header \"n,\""))?;
    let (authzid, rest) = match rest.strip_prefix("a=") {
        Some(after) => {
            let end = after
                .find(',')
                .ok_or_else(|| format!("{INVALID}: the GS2 header does not end"))?;
            (saslname(&after[..end])?, &after[end..])
        }
        None => (String::new(), rest),
    };
    let rest = rest
        .strip_prefix(",\u{1}")
        .ok_or_else(|| format!("{INVALID}: the GS2 header is not followed by ^A"))?;
    // Every pair ends with ^A, and the message with one more.
    let body = rest
        .strip_suffix('\u{1}')
        .ok_or_else(|| format!("{INVALID}: it does not end with ^A^A"))?;
    let pairs = match body {
        "" => None,
        body => Some(
            body.strip_suffix('\u{1}')
                .ok_or_else(|| format!("{INVALID}: it does not end with ^A^A"))?,
        ),
    };
    let mut auth = None;
    let mut extensions = Vec::new();
    for pair in pairs.into_iter().flat_map(|p| p.split('\u{1}')) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{INVALID}: a key-value pair without '='"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(format!("{INVALID}: a key that is not letters only"));
        }
        let printable =
            |b: u8| (0x21..=0x7e).contains(&b) || matches!(b, b' ' | b'\t' | b'\r' | b'\n');
        if value.is_empty() || !value.bytes().all(printable) {
            return Err(format!(
                "{INVALID}: the value of {key:?} is empty or not printable"
            ));
        }
        if key == "auth" {
            if auth.replace(value).is_some() {
                return Err(format!("{INVALID}: 'auth' given twice"));
            }
        } else {
            extensions.push((key, value));
        }
    }
    let auth = auth.ok_or_else(|| format!("{INVALID}: 'auth' not specified"))?;
    let (scheme, token) = auth
        .split_once(' ')
        .ok_or_else(|| format!("{INVALID}: invalid 'auth' format"))?;
    let token = token.trim_start_matches(' ');
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let token_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if scheme.is_empty()
        || !scheme.bytes().all(word)
        || token.is_empty()
        || !token.bytes().all(token_char)
    {
        return Err(format!("{INVALID}: invalid 'auth' format"));
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!(
            "Invalid scheme in OAUTHBEARER client first message: {}",
            super::jws::clip(scheme)
        ));
    }
    Ok(ClientResponse {
        authzid,
        token,
        extensions,
    })
}

/// A SASL name (RFC 5801): `=2C` and `=3D` stand for ',' and '='; other
/// characters are 7-bit, without ',' and '='.
fn saslname(text: &str) -> Result<String, String> {
    let bad = || format!("{INVALID}: the authorization id is not a SASL name");
    if text.is_empty() {
        return Err(bad());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '=' {
            match rest.get(..3) {
                Some("=2C") => out.push(','),
                Some("=3D") => out.push('='),
                _ => return Err(bad()),
            }
            rest = &rest[3..];
            continue;
        }
        if !('\u{1}'..='\u{7f}').contains(&c) || c == ',' {
            return Err(bad());
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_first_message_gives_its_token_authzid_and_extensions() {
        let m = parse(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").expect("valid");
        assert_eq!(
            m,
            ClientResponse {
                authzid: String::new(),
                token: "abc.def.ghi",
                extensions: vec![],
            }
        );
        let m = parse(b"n,a=al=2Cice=3D,\x01host=h\x01auth=bearer   x-y_z.\x01port=9\x01\x01")
            .expect("valid");
        assert_eq!(m.authzid, "al,ice=");
        assert_eq!(m.token, "x-y_z.", "an unsecured JWT ends with a dot");
        assert_eq!(m.extensions, vec![("host", "h"), ("port", "9")]);
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        for (message, said) in [
            (&b""[..], "GS2 header"),
            (b"y,,\x01auth=Bearer t\x01\x01", "GS2 header"),
            (b"n,a=,\x01auth=Bearer t\x01\x01", "SASL name"),
            (b"n,a=x=2,\x01auth=Bearer t\x01\x01", "SASL name"),
            (b"n,a=x", "does not end"),
            (b"n,,auth=Bearer t\x01\x01", "^A"),
            (b"n,,\x01auth=Bearer t\x01", "^A^A"),
            (b"n,,\x01auth=Bearer t", "^A^A"),
            (b"n,,\x01\x01", "'auth' not specified"),
            (b"n,,\x01\x01\x01", "without '='"),
            (b"n,,\x01k=v\x01\x01", "'auth' not specified"),
            (b"n,,\x01auth=Bearer t\x01auth=Bearer u\x01\x01", "twice"),
            (b"n,,\x01auth=Bearer\x01\x01", "invalid 'auth' format"),
            (b"n,,\x01auth=Bearer t t\x01\x01", "invalid 'auth' format"),
            (b"n,,\x01auth=Bearer t+/\x01\x01", "invalid 'auth' format"),
            (b"n,,\x01auth=Basic dXNlcg\x01\x01", "Invalid scheme"),
            (b"n,,\x01a-b=c\x01auth=Bearer t\x01\x01", "letters only"),
            (b"n,,\x01k=\x01auth=Bearer t\x01\x01", "not printable"),
            (b"n,,\x01auth=Bearer t\x01\xff\x01\x01", "UTF-8"),
        ] {
            let e = parse(message).expect_err(&String::from_utf8_lossy(message));
            assert!(e.contains(said), "{message:?}: {e}");
        }
    }

    #[test]
    fn no_input_panics() {
        // Every prefix of a valid message, and bytes flipped in it.
        let valid = b"n,a=bob,\x01auth=Bearer a.b.c\x01x=y\x01\x01".to_vec();
        for end in 0..valid.len() {
            let _ = parse(&valid[..end]);
        }
        for i in 0..valid.len() {
            for b in [0u8, 1, b',', b'=', 0x7f, 0xc3] {
                let mut m = valid.clone();
                m[i] = b;
                let _ = parse(&m);
            }
        }
    }
}
