//! The `request_headers` target: the gateway's header parsers. It needs the gateway crate, whose
//! build (database, broker and HTTP stacks under instrumentation) takes minutes, so it sits
//! behind the `gateway` feature and out of the CI run; the other targets build in seconds.

use std::net::IpAddr;
use std::sync::OnceLock;

use gateway::auth::{basic_credentials, bearer, Tokens};
use gateway::client_ip::{client_ip, TrustedNet};
use ingest_runtime::settings::Secret;

use crate::config;

fn tokens() -> &'static (Tokens, String) {
    static TOKENS: OnceLock<(Tokens, String)> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let clock: gateway::auth::Clock = std::sync::Arc::new(|| 2_000_000_000);
        let tokens = Tokens::new(
            &Secret::new("fuzz-signing-key-0123456789"),
            None,
            3600,
            clock,
        );
        let issued = tokens
            .issue("fuzz-client", &[gateway::clients::Scope::Upload])
            .token;
        (tokens, issued)
    })
}

/// The gateway's header parsers on arbitrary values. The input is split at its first two NUL
/// bytes into an Authorization value, an X-Forwarded-For value and an X-Real-IP value; the
/// config byte picks the peer and the trusted proxies.
pub fn request_headers(data: &[u8]) {
    let (cfg, rest) = config(data);
    let mut values = rest.splitn(3, |&b| b == 0);
    let (auth, forwarded, real_ip) = (
        values.next().unwrap_or_default(),
        values.next().unwrap_or_default(),
        values.next().unwrap_or_default(),
    );
    let mut headers = http::HeaderMap::new();
    for (name, value) in [
        ("authorization", auth),
        ("x-forwarded-for", forwarded),
        ("x-real-ip", real_ip),
    ] {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            headers.insert(name, value);
        }
    }
    if let Some((id, _secret)) = basic_credentials(&headers) {
        assert!(!id.contains(':'), "the id ends at the first colon");
    }
    let (tokens, issued) = tokens();
    for token in [bearer(&headers).ok(), std::str::from_utf8(auth).ok()]
        .into_iter()
        .flatten()
    {
        // Only a token this key signed verifies: a mutated one never names another client.
        if let Ok(claims) = tokens.verify(token) {
            assert_eq!(
                claims.sub, "fuzz-client",
                "a forged subject verified: {token:?}"
            );
            assert!(token.split('.').count() == 3 && issued.split('.').count() == 3);
        }
    }

    let peers: [IpAddr; 4] = [
        [127, 0, 0, 1].into(),
        [10, 1, 2, 3].into(),
        [203, 0, 113, 9].into(),
        "::ffff:10.1.2.3".parse().expect("an IPv6 literal"),
    ];
    let peer = peers[usize::from(cfg & 3)];
    let trusted = match cfg >> 2 & 3 {
        0 => Vec::new(),
        1 => TrustedNet::parse_list("10.0.0.0/8").expect("a valid list"),
        2 => TrustedNet::parse_list("127.0.0.1, 10.0.0.0/8, ::1").expect("a valid list"),
        _ => TrustedNet::parse_list("0.0.0.0/0").expect("a valid list"),
    };
    let ip = client_ip(peer, &headers, &trusted);
    if !trusted.iter().any(|net| net.contains(peer)) {
        assert_eq!(
            ip,
            peer.to_canonical(),
            "an untrusted peer chose its own address"
        );
    }
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = TrustedNet::parse_list(text);
    }
}
