//! Digest authentication (RFC 3261 §22, RFC 8760): MD5 and SHA-256, `qop=auth`.
//!
//! Nonces are stateless and self-checking: `<unix seconds>.<random>.<mac>` where the MAC
//! (SHA-256 over a per-process secret) proves the host issued it. A nonce expires after
//! [`NONCE_TTL_SECS`] (the client gets `stale=true` and retries without bothering the
//! user); a nonce-count must grow for each nonce, so a captured request cannot be
//! replayed. The signalling shards of one host share the counts seen ([`NonceCounts`]):
//! a replay landing on another shard is one too.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use hmac::{Hmac, Mac as _};
use md5::Md5;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// How long a nonce is good for.
pub const NONCE_TTL_SECS: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Algorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, text: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(text.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(text.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What the host knows of a user's secret.
#[derive(Debug, Clone)]
pub enum Secret {
    Password(String),
    /// MD5(user:realm:password): only MD5 answers can be checked.
    Md5Ha1(String),
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no credentials")]
    Missing,
    #[error("malformed credentials: {0}")]
    Malformed(String),
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    #[error("wrong password for {0:?}")]
    WrongPassword(String),
    #[error("nonce expired")]
    Stale,
    #[error("nonce not issued by this host")]
    ForeignNonce,
    #[error("nonce count replayed")]
    Replay,
    #[error("the answer is for {0:?}, not this request's Request-URI")]
    OtherRequestUri(String),
}

impl AuthFailure {
    /// Whether the failure came from trying a password (a wrong one, an unknown user's,
    /// or a right answer replayed): what the throttle counts.
    pub fn tried_a_password(&self) -> bool {
        matches!(
            self,
            AuthFailure::UnknownUser(_) | AuthFailure::WrongPassword(_) | AuthFailure::Replay
        )
    }
}

/// Parsed `Digest` credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

impl Credentials {
    /// Parse the value of an Authorization / Proxy-Authorization header.
    pub fn parse(value: &str) -> Result<Self, AuthFailure> {
        let rest = value.trim();
        let rest = rest
            .strip_prefix("Digest")
            .or_else(|| rest.strip_prefix("digest"))
            .ok_or_else(|| AuthFailure::Malformed("not a Digest scheme".into()))?;
        let mut creds = Credentials::default();
        for (key, val) in params(rest) {
            match key.to_ascii_lowercase().as_str() {
                "username" => creds.username = val,
                "realm" => creds.realm = val,
                "nonce" => creds.nonce = val,
                "uri" => creds.uri = val,
                "response" => creds.response = val.to_ascii_lowercase(),
                "algorithm" => creds.algorithm = Some(val),
                "qop" => creds.qop = Some(val),
                "nc" => creds.nc = Some(val),
                "cnonce" => creds.cnonce = Some(val),
                _ => {}
            }
        }
        if creds.username.is_empty()
            || creds.nonce.is_empty()
            || creds.response.is_empty()
            || creds.uri.is_empty()
        {
            return Err(AuthFailure::Malformed(
                "username, nonce, uri and response are required".into(),
            ));
        }
        Ok(creds)
    }

    /// The answer's `uri` must name the resource the request's Request-URI does (RFC 2617
    /// §3.2.2.5, RFC 3261 §22.4): else an answer captured on the way could carry a request
    /// to another destination (its Request-URI changed, its credentials kept). Compared
    /// as the resource goes (RFC 3261 §19.1.4): scheme, host (any case), port (the
    /// scheme's default when absent), and the user when the answer's uri has one (SIPp
    /// answers for `sip:host:port` alone); parameters aside.
    pub fn check_request_uri(&self, request_uri: &rsip::Uri) -> Result<(), AuthFailure> {
        let other = || AuthFailure::OtherRequestUri(self.uri.clone());
        let answered = rsip::Uri::try_from(self.uri.as_str()).map_err(|_| other())?;
        let place = |uri: &rsip::Uri| {
            let scheme = uri.scheme.clone().unwrap_or(rsip::Scheme::Sip);
            let default_port = match scheme {
                rsip::Scheme::Sips => 5061,
                _ => 5060,
            };
            let port = uri.host_with_port.port.map_or(default_port, u16::from);
            let host = uri.host_with_port.host.to_string().to_ascii_lowercase();
            (scheme, host, port)
        };
        let same_user = answered
            .user()
            .is_none_or(|user| request_uri.user() == Some(user));
        match same_user && place(&answered) == place(request_uri) {
            true => Ok(()),
            false => Err(other()),
        }
    }

    fn algorithm(&self) -> Result<Algorithm, AuthFailure> {
        match self
            .algorithm
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("MD5") => Ok(Algorithm::Md5),
            Some("SHA-256") => Ok(Algorithm::Sha256),
            Some(other) => Err(AuthFailure::Malformed(format!(
                "unsupported algorithm {other}"
            ))),
        }
    }
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_owned();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.push((key, value));
    }
}

/// The highest nonce-count seen per nonce, with when the nonce was issued (pruned when
/// nonces expire); shared by the host's shards.
#[derive(Clone, Default)]
pub struct NonceCounts(Arc<Mutex<HashMap<String, (i64, u32)>>>);

impl NonceCounts {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, (i64, u32)>> {
        // Counts left by a panicking holder are still counts.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Issues challenges and checks answers for one realm.
pub struct DigestAuth {
    realm: String,
    secret: [u8; 32],
    seen: NonceCounts,
}

impl DigestAuth {
    /// Whether `password`, given in the clear, is `username`'s `secret` (compared as
    /// MD5 HA1 digests, the form both kinds of secret share).
    pub fn password_matches(&self, username: &str, password: &str, secret: &Secret) -> bool {
        let given = md5_ha1(username, &self.realm, password);
        let known = match secret {
            Secret::Password(p) => md5_ha1(username, &self.realm, p),
            Secret::Md5Ha1(h) => h.to_ascii_lowercase(),
        };
        same_secret(&given, &known)
    }

    pub fn new(realm: &str, secret: [u8; 32]) -> Self {
        Self::sharing(realm, secret, NonceCounts::default())
    }

    /// One of several (the shards') checking answers to the same nonces.
    pub fn sharing(realm: &str, secret: [u8; 32], seen: NonceCounts) -> Self {
        Self {
            realm: realm.to_owned(),
            secret,
            seen,
        }
    }

    /// Count nonces with other checkers of them (the other shards').
    pub fn share_counts(&mut self, seen: NonceCounts) {
        self.seen = seen;
    }

    /// Forget that an accepted answer's nonce-count was seen: the request goes to another
    /// shard, which checks it again (once).
    pub fn give_back(&self, credentials: &Credentials) {
        // An accepted answer has a nonce-count (`verify` refuses one without).
        let Some(Ok(nc)) = credentials
            .nc
            .as_deref()
            .map(|nc| u32::from_str_radix(nc, 16))
        else {
            return;
        };
        let mut seen = self.seen.lock();
        if let Some((_, last)) = seen.get_mut(&credentials.nonce)
            && *last == nc
        {
            match nc.checked_sub(1) {
                Some(before) if before > 0 => *last = before,
                _ => {
                    seen.remove(&credentials.nonce);
                }
            }
        }
    }

    /// HMAC-SHA-256 of a nonce's stamp under the host's secret (96 bits of it).
    fn mac(&self, stamp: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(stamp.as_bytes());
        hex(&mac.finalize().into_bytes()[..12])
    }

    /// A fresh nonce.
    pub fn nonce(&self, now_secs: i64, random: u64) -> String {
        let stamp = format!("{now_secs:x}.{random:016x}");
        let mac = self.mac(&stamp);
        format!("{stamp}.{mac}")
    }

    /// The challenge header values, one per algorithm in the order given (the
    /// `sip.digest_algorithms` setting). Answers with either algorithm are checked
    /// whatever was offered.
    pub fn challenges(&self, algorithms: &[Algorithm], nonce: &str, stale: bool) -> Vec<String> {
        algorithms
            .iter()
            .map(|a| {
                let mut v = format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    self.realm,
                    a.name()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect()
    }

    /// Check `credentials` for a request with `method`; the user's secret comes from
    /// `secret_of(username)`. Returns the username on success.
    pub fn verify(
        &mut self,
        now_secs: i64,
        method: &str,
        credentials: &Credentials,
        secret_of: impl Fn(&str) -> Option<Secret>,
    ) -> Result<String, AuthFailure> {
        let issued = self.check_nonce(now_secs, &credentials.nonce)?;
        let algorithm = credentials.algorithm()?;
        let username = credentials.username.clone();
        let Some(secret) = secret_of(&username) else {
            return Err(AuthFailure::UnknownUser(username));
        };
        let ha1 = match (&secret, algorithm) {
            (Secret::Password(p), a) => a.hash(&format!("{username}:{}:{p}", self.realm)),
            (Secret::Md5Ha1(h), Algorithm::Md5) => h.to_ascii_lowercase(),
            (Secret::Md5Ha1(_), Algorithm::Sha256) => {
                return Err(AuthFailure::WrongPassword(username));
            }
        };
        // The host's challenges always offer qop=auth, which a client must then use
        // (RFC 2617 §3.2.2): an answer without it (RFC 2069's) covers no nonce-count, so
        // a replay of it could not be told from a new one.
        let (Some(qop), Some(nc), Some(cnonce)) =
            (&credentials.qop, &credentials.nc, &credentials.cnonce)
        else {
            return Err(AuthFailure::Malformed(
                "an answer needs qop=auth, nc and cnonce".into(),
            ));
        };
        if !qop.eq_ignore_ascii_case("auth") {
            return Err(AuthFailure::Malformed(format!("qop {qop:?}")));
        }
        let ha2 = algorithm.hash(&format!("{method}:{}", credentials.uri));
        let expected = algorithm.hash(&format!(
            "{ha1}:{}:{nc}:{cnonce}:auth:{ha2}",
            credentials.nonce
        ));
        if !same_secret(&expected, &credentials.response) {
            return Err(AuthFailure::WrongPassword(username));
        }
        // A correct answer: the nonce-count must move forward (no replays).
        let nc =
            u32::from_str_radix(nc, 16).map_err(|_| AuthFailure::Malformed("bad nc".into()))?;
        let mut seen = self.seen.lock();
        seen.retain(|_, (issued, _)| now_secs - *issued <= NONCE_TTL_SECS);
        match seen.get_mut(&credentials.nonce) {
            Some((_, last)) if nc <= *last => return Err(AuthFailure::Replay),
            Some((_, last)) => *last = nc,
            None => {
                seen.insert(credentials.nonce.clone(), (issued, nc));
            }
        }
        Ok(username)
    }

    /// The nonce's issue time, if this host issued it and it has not expired.
    fn check_nonce(&self, now_secs: i64, nonce: &str) -> Result<i64, AuthFailure> {
        let (stamp, mac) = nonce.rsplit_once('.').ok_or(AuthFailure::ForeignNonce)?;
        if !same_secret(&self.mac(stamp), mac) {
            return Err(AuthFailure::ForeignNonce);
        }
        let issued = stamp
            .split_once('.')
            .and_then(|(t, _)| i64::from_str_radix(t, 16).ok())
            .ok_or(AuthFailure::ForeignNonce)?;
        if now_secs - issued > NONCE_TTL_SECS || issued > now_secs + 5 {
            return Err(AuthFailure::Stale);
        }
        Ok(issued)
    }
}

/// The answer a client computes with qop=auth (the RFC's formula, argument by
/// argument): what tests and a client of the host's challenges send.
#[allow(clippy::too_many_arguments)]
pub fn client_response(
    algorithm: Algorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let ha1 = algorithm.hash(&format!("{user}:{realm}:{password}"));
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// Whether two secrets (digests, MACs, tokens) are equal, in time that does not depend on
/// where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// A server's challenge (`WWW-Authenticate` in a 401, `Proxy-Authenticate` in a 407),
/// as the host answers it when it is the client (towards a carrier).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// The server asked for `qop=auth` (else the RFC 2069 form is answered).
    pub qop_auth: bool,
    /// The previous answer was right but its nonce had expired: answer again.
    pub stale: bool,
}

/// Why a challenge cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("malformed challenge: {0}")]
    Malformed(&'static str),
    #[error("challenge with an unsupported algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    #[error("challenge with an unsupported qop {0:?}")]
    UnsupportedQop(String),
}

impl Challenge {
    /// Parse a `WWW-Authenticate` / `Proxy-Authenticate` value.
    pub fn parse(value: &str) -> Result<Self, ChallengeError> {
        let rest = value.trim();
        let scheme_len = rest.find(char::is_whitespace).unwrap_or(rest.len());
        if !rest[..scheme_len].eq_ignore_ascii_case("digest") {
            return Err(ChallengeError::Malformed("not a Digest challenge"));
        }
        let (mut realm, mut nonce, mut opaque) = (None, None, None);
        let (mut algorithm, mut qop, mut stale) = (Algorithm::Md5, None, false);
        for (key, val) in params(&rest[scheme_len..]) {
            match key.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(val),
                "nonce" => nonce = Some(val),
                "opaque" => opaque = Some(val),
                "stale" => stale = val.eq_ignore_ascii_case("true"),
                "qop" => qop = Some(val),
                "algorithm" => {
                    algorithm = match val.to_ascii_uppercase().as_str() {
                        "MD5" => Algorithm::Md5,
                        "SHA-256" => Algorithm::Sha256,
                        _ => return Err(ChallengeError::UnsupportedAlgorithm(val)),
                    }
                }
                _ => {}
            }
        }
        let qop_auth = match qop {
            None => false,
            Some(qop)
                if qop
                    .split(',')
                    .any(|q| q.trim().eq_ignore_ascii_case("auth")) =>
            {
                true
            }
            Some(qop) => return Err(ChallengeError::UnsupportedQop(qop)),
        };
        Ok(Self {
            realm: realm.ok_or(ChallengeError::Malformed("no realm"))?,
            nonce: nonce.ok_or(ChallengeError::Malformed("no nonce"))?,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// The `Authorization` / `Proxy-Authorization` value answering this challenge for
    /// `method uri`; `nc` counts the answers given with this nonce, from 1.
    pub fn answer(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
        nc: u32,
    ) -> String {
        let algorithm = self.algorithm;
        let ha1 = algorithm.hash(&format!("{user}:{}:{password}", self.realm));
        let ha2 = algorithm.hash(&format!("{method}:{uri}"));
        let mut value = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
            self.realm,
            self.nonce,
            algorithm.name()
        );
        let response = if self.qop_auth {
            let nc = format!("{nc:08x}");
            let _ = write!(value, ", qop=auth, nc={nc}, cnonce=\"{cnonce}\"");
            algorithm.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            algorithm.hash(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        let _ = write!(value, ", response=\"{response}\"");
        if let Some(opaque) = &self.opaque {
            let _ = write!(value, ", opaque=\"{opaque}\"");
        }
        value
    }
}

/// MD5(user:realm:password), the `ha1` config form.
pub fn md5_ha1(user: &str, realm: &str, password: &str) -> String {
    Algorithm::Md5.hash(&format!("{user}:{realm}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn the_hosts_own_challenges_are_answered_as_it_checks_them() {
        let mut auth = auth();
        for (random, algorithm) in [(1, Algorithm::Md5), (2, Algorithm::Sha256)] {
            let nonce = auth.nonce(NOW, random);
            let challenge = &auth.challenges(&[algorithm], &nonce, false)[0];
            let parsed = Challenge::parse(challenge).unwrap();
            assert_eq!(parsed.algorithm, algorithm);
            assert!(parsed.qop_auth);
            let answer = parsed.answer(
                "alice",
                "secret",
                "INVITE",
                "sip:2002@pbx.test",
                "c0ffee",
                1,
            );
            let credentials = Credentials::parse(&answer).unwrap();
            assert_eq!(credentials.nc.as_deref(), Some("00000001"));
            let verified = auth.verify(NOW, "INVITE", &credentials, |_| {
                Some(Secret::Password("secret".into()))
            });
            assert_eq!(verified, Ok("alice".into()));
        }
    }

    #[test]
    fn challenges_without_qop_get_the_rfc_2069_answer() {
        // RFC 2617 §3.5's example values without qop; the response as computed by
        // Python's hashlib: md5(md5(user:realm:pw):nonce:md5(method:uri)).
        let challenge = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        assert!(!challenge.qop_auth);
        let answer = challenge.answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", "x", 1);
        assert!(
            answer.contains("response=\"670fd8c2df070c60b045671b8b24ff02\""),
            "{answer}"
        );
        assert!(answer.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(!answer.contains("qop"));
    }

    #[test]
    fn unanswerable_challenges_say_why() {
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"),
            Err(ChallengeError::UnsupportedAlgorithm("SHA-512-256".into()))
        );
        assert_eq!(
            Challenge::parse("Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\""),
            Err(ChallengeError::UnsupportedQop("auth-int".into()))
        );
        assert!(matches!(
            Challenge::parse("Basic realm=\"r\""),
            Err(ChallengeError::Malformed(_))
        ));
        assert!(matches!(
            Challenge::parse("Digest nonce=\"n\""),
            Err(ChallengeError::Malformed(_))
        ));
        let stale =
            Challenge::parse("digest realm=\"r\", nonce=\"n\", stale=TRUE, qop=\"auth,auth-int\"")
                .unwrap();
        assert!(stale.stale && stale.qop_auth);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("6f8a", "6f8a"));
        assert!(!same_secret("6f8a", "6f8b"));
        assert!(!same_secret("6f8a", "6f8"), "a prefix is not the secret");
        assert!(!same_secret("", "x"));
    }

    #[test]
    fn a_nonce_with_its_mac_changed_is_foreign() {
        let auth = auth();
        let nonce = auth.nonce(NOW, 9);
        assert!(auth.check_nonce(NOW, &nonce).is_ok());
        let mut forged = nonce.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            auth.check_nonce(NOW, &forged),
            Err(AuthFailure::ForeignNonce)
        );
    }

    fn auth() -> DigestAuth {
        DigestAuth::new("pbx.test", [7; 32])
    }

    fn answer(algorithm: Algorithm, password: &str, nonce: &str, nc: &str) -> Credentials {
        let response = client_response(
            algorithm,
            "2001",
            "pbx.test",
            password,
            "REGISTER",
            "sip:pbx.test",
            nonce,
            nc,
            "c0ffee",
        );
        let header = format!(
            "Digest username=\"2001\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:pbx.test\", response=\"{response}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"c0ffee\"",
            algorithm.name()
        );
        Credentials::parse(&header).unwrap()
    }

    fn secrets(user: &str) -> Option<Secret> {
        (user == "2001").then(|| Secret::Password("s3cret".into()))
    }

    #[test]
    fn shards_sharing_counts_refuse_a_replay_on_either_and_a_given_back_answer_counts_once() {
        let counts = NonceCounts::default();
        let (mut one, mut two) = (
            DigestAuth::sharing("pbx.test", [7; 32], counts.clone()),
            DigestAuth::sharing("pbx.test", [7; 32], counts),
        );
        let nonce = one.nonce(NOW, 5);
        let creds = answer(Algorithm::Md5, "s3cret", &nonce, "00000001");
        assert!(one.verify(NOW, "REGISTER", &creds, secrets).is_ok());
        assert_eq!(
            two.verify(NOW, "REGISTER", &creds, secrets),
            Err(AuthFailure::Replay),
            "the same answer on the other shard is a replay"
        );
        // Handed to the other shard: it checks the answer once, and only once.
        one.give_back(&creds);
        assert!(two.verify(NOW, "REGISTER", &creds, secrets).is_ok());
        assert_eq!(
            one.verify(NOW, "REGISTER", &creds, secrets),
            Err(AuthFailure::Replay)
        );
        let next = answer(Algorithm::Md5, "s3cret", &nonce, "00000002");
        assert!(one.verify(NOW, "REGISTER", &next, secrets).is_ok());
    }

    #[test]
    fn an_answer_without_qop_is_refused_for_it_could_be_replayed_unnoticed() {
        let mut auth = auth();
        let nonce = auth.nonce(NOW, 6);
        let ha1 = md5_ha1("2001", "pbx.test", "s3cret");
        let ha2 = Algorithm::Md5.hash("REGISTER:sip:pbx.test");
        let response = Algorithm::Md5.hash(&format!("{ha1}:{nonce}:{ha2}"));
        // RFC 2069's answer, right password; then the same with a nonce-count tacked on,
        // which the answer does not cover.
        for extra in ["", ", nc=00000001", ", nc=00000002"] {
            let plain = Credentials::parse(&format!(
                "Digest username=\"2001\", realm=\"pbx.test\", nonce=\"{nonce}\", uri=\"sip:pbx.test\", response=\"{response}\"{extra}"
            ))
            .unwrap();
            let refused = auth.verify(NOW, "REGISTER", &plain, secrets).unwrap_err();
            assert!(matches!(refused, AuthFailure::Malformed(_)), "{refused:?}");
            assert!(
                !refused.tried_a_password(),
                "not a guess the throttle counts"
            );
        }
    }

    #[test]
    fn md5_and_sha256_answers_are_accepted() {
        let mut auth = auth();
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let nonce = auth.nonce(NOW, 42 + algorithm as u64);
            let creds = answer(algorithm, "s3cret", &nonce, "00000001");
            assert_eq!(
                auth.verify(NOW + 1, "REGISTER", &creds, secrets),
                Ok("2001".into())
            );
        }
    }

    #[test]
    fn md5_ha1_from_config_works_for_md5_only() {
        let mut auth = auth();
        let ha1 = md5_ha1("2001", "pbx.test", "s3cret");
        let by_ha1 = |u: &str| (u == "2001").then(|| Secret::Md5Ha1(ha1.clone()));
        let nonce = auth.nonce(NOW, 1);
        assert!(
            auth.verify(
                NOW,
                "REGISTER",
                &answer(Algorithm::Md5, "s3cret", &nonce, "00000001"),
                by_ha1
            )
            .is_ok()
        );
        let nonce = auth.nonce(NOW, 2);
        assert!(
            auth.verify(
                NOW,
                "REGISTER",
                &answer(Algorithm::Sha256, "s3cret", &nonce, "00000001"),
                by_ha1
            )
            .is_err()
        );
    }

    #[test]
    fn wrong_passwords_unknown_users_replays_and_old_nonces_fail() {
        let mut auth = auth();
        let nonce = auth.nonce(NOW, 9);
        assert_eq!(
            auth.verify(
                NOW,
                "REGISTER",
                &answer(Algorithm::Md5, "guess", &nonce, "00000001"),
                secrets
            ),
            Err(AuthFailure::WrongPassword("2001".into()))
        );
        assert_eq!(
            auth.verify(
                NOW,
                "REGISTER",
                &answer(Algorithm::Md5, "s3cret", &nonce, "00000001"),
                |_| None
            ),
            Err(AuthFailure::UnknownUser("2001".into()))
        );
        let good = answer(Algorithm::Md5, "s3cret", &nonce, "00000001");
        assert!(auth.verify(NOW, "REGISTER", &good, secrets).is_ok());
        assert_eq!(
            auth.verify(NOW, "REGISTER", &good, secrets),
            Err(AuthFailure::Replay)
        );
        let next = answer(Algorithm::Md5, "s3cret", &nonce, "00000002");
        assert!(auth.verify(NOW, "REGISTER", &next, secrets).is_ok());
        assert_eq!(
            auth.verify(
                NOW + NONCE_TTL_SECS + 1,
                "REGISTER",
                &answer(Algorithm::Md5, "s3cret", &nonce, "00000003"),
                secrets
            ),
            Err(AuthFailure::Stale)
        );
        let forged = format!("{}0", &nonce[..nonce.len() - 1]);
        assert_eq!(
            auth.verify(
                NOW,
                "REGISTER",
                &answer(Algorithm::Md5, "s3cret", &forged, "00000001"),
                secrets
            ),
            Err(AuthFailure::ForeignNonce)
        );
    }

    #[test]
    fn credentials_parse_quoted_and_bare_values() {
        let c = Credentials::parse(
            "Digest username=\"a,b\", realm=r, nonce=\"n\", uri=\"sip:x\", response=\"ABC\"",
        )
        .unwrap();
        assert_eq!(
            (c.username.as_str(), c.realm.as_str(), c.response.as_str()),
            ("a,b", "r", "abc")
        );
        assert!(Credentials::parse("Basic dXNlcjpwYXNz").is_err());
        assert!(Credentials::parse("Digest realm=r").is_err());
        assert!(Credentials::parse("Digest ").is_err());
    }

    #[test]
    fn an_answer_counts_only_for_the_request_uri_it_was_computed_for() {
        let answer_for = |uri: &str| Credentials {
            uri: uri.into(),
            ..Credentials::default()
        };
        let request_uri = |uri: &str| rsip::Uri::try_from(uri).unwrap();
        let same = [
            ("sip:pbx.test", "sip:pbx.test"),
            ("sip:PBX.test", "sip:pbx.test:5060"),
            ("sip:2002@pbx.test;user=phone", "sip:2002@pbx.test"),
            ("sips:pbx.test:5061", "sips:pbx.test"),
            ("sip:127.0.0.1:5070", "sip:2001@127.0.0.1:5070"),
        ];
        for (answered, request) in same {
            assert_eq!(
                answer_for(answered).check_request_uri(&request_uri(request)),
                Ok(()),
                "{answered} for {request}"
            );
        }
        let other = [
            ("sip:2002@pbx.test", "sip:0900123456@pbx.test"),
            ("sip:pbx.test", "sip:other.test"),
            ("sip:pbx.test", "sip:pbx.test:5070"),
            ("sip:pbx.test", "sips:pbx.test"),
            ("not a uri", "sip:pbx.test"),
        ];
        for (answered, request) in other {
            assert!(
                answer_for(answered)
                    .check_request_uri(&request_uri(request))
                    .is_err(),
                "{answered} for {request}"
            );
        }
    }
}
