//! How a delivery proves where it comes from: an HMAC-SHA256 signature of its raw body (GitHub's
//! or Stripe's header), a bearer token, or basic credentials. Every comparison of something a
//! sender sent with a secret goes through `hmac`'s constant-time `verify_slice`; a reason for a
//! refusal names what was wrong, never a secret.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use ferry_core::BuildError;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::config::{AuthConfig, OneOrMany};

type HmacSha256 = Hmac<Sha256>;

/// GitHub's signature header.
pub const GITHUB_HEADER: &str = "x-hub-signature-256";
/// Stripe's signature header.
pub const STRIPE_HEADER: &str = "stripe-signature";
/// Stripe's default tolerance for the signed timestamp.
pub const STRIPE_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Keys the tags of bearer tokens and basic credentials: comparing tags instead of the
/// credentials makes every comparison the same length and constant in time.
const CREDENTIAL_KEY: &[u8] = b"ferry webhook credential";

/// A checked `auth:`, ready to verify deliveries.
pub enum Verifier {
    Github {
        secrets: Vec<Vec<u8>>,
    },
    Stripe {
        secrets: Vec<Vec<u8>>,
        tolerance: Duration,
    },
    /// Tags of the accepted tokens.
    Bearer {
        tags: Vec<Vec<u8>>,
    },
    /// Tags of the accepted `user:password` pairs, base64-encoded as senders send them.
    Basic {
        tags: Vec<Vec<u8>>,
    },
}

// Never print a secret, not even in debug output.
impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The header `name` (lower case) among `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

impl Verifier {
    /// Checks `auth:` as written; errors name the key under `auth`.
    pub fn new(config: &AuthConfig) -> Result<Verifier, BuildError> {
        let at = |inner: &str, message: String| BuildError {
            path: vec!["auth".into(), inner.into()],
            message,
            within: None,
        };
        let secrets = |inner: &str, list: &OneOrMany<String>| {
            if list.is_empty() {
                return Err(at(inner, "list at least one secret".into()));
            }
            let mut secrets = Vec::new();
            for secret in list.values() {
                if secret.trim().is_empty() {
                    return Err(at(
                        inner,
                        "an empty secret (is its environment variable set?)".into(),
                    ));
                }
                secrets.push(secret.as_bytes().to_vec());
            }
            Ok(secrets)
        };
        Ok(match config {
            AuthConfig::Github(list) => Verifier::Github {
                secrets: secrets("github", list)?,
            },
            AuthConfig::Stripe(stripe) => {
                let tolerance = match &stripe.tolerance {
                    None => STRIPE_TOLERANCE,
                    Some(text) => {
                        let nested = |message: String| BuildError {
                            path: vec!["auth".into(), "stripe".into(), "tolerance".into()],
                            message,
                            within: None,
                        };
                        let tolerance = ferry_core::duration::parse(text).map_err(nested)?;
                        if tolerance.is_zero() {
                            return Err(nested(
                                "must be longer than zero; Stripe suggests `5m`".into(),
                            ));
                        }
                        tolerance
                    }
                };
                let secrets = secrets("stripe", &stripe.secrets).map_err(|mut error| {
                    error.path.push("secrets".into());
                    error
                })?;
                Verifier::Stripe { secrets, tolerance }
            }
            AuthConfig::Bearer(list) => {
                let tokens = secrets("bearer", list)?;
                Verifier::Bearer {
                    tags: tokens.iter().map(|token| tag(token)).collect(),
                }
            }
            AuthConfig::Basic(users) => {
                if users.is_empty() {
                    return Err(at("basic", "list at least one user".into()));
                }
                let mut tags = Vec::new();
                for basic in users.values() {
                    if basic.user.is_empty() || basic.user.contains(':') {
                        return Err(at(
                            "basic",
                            "a user name must not be empty nor hold `:`".into(),
                        ));
                    }
                    if basic.password.is_empty() {
                        return Err(at(
                            "basic",
                            format!(
                                "user `{}` has an empty password (is its environment variable \
                                 set?)",
                                basic.user
                            ),
                        ));
                    }
                    let pair = format!("{}:{}", basic.user, basic.password);
                    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                    tags.push(tag(encoded.as_bytes()));
                }
                Verifier::Basic { tags }
            }
        })
    }

    /// The scheme's name, for logs and messages.
    pub fn scheme(&self) -> &'static str {
        match self {
            Verifier::Github { .. } => "github",
            Verifier::Stripe { .. } => "stripe",
            Verifier::Bearer { .. } => "bearer",
            Verifier::Basic { .. } => "basic",
        }
    }

    /// Whether the scheme signs the body: then [`Verifier::verify`] needs it, and credentials
    /// cannot be checked before it is read.
    pub fn signs_body(&self) -> bool {
        matches!(self, Verifier::Github { .. } | Verifier::Stripe { .. })
    }

    /// Checks the delivery's credentials; `now` is the Unix time in seconds (for Stripe's
    /// timestamp). The error is the reason, for the sender; it never holds a secret.
    pub fn verify(
        &self,
        headers: &[(String, String)],
        body: &[u8],
        now: i64,
    ) -> Result<(), String> {
        match self {
            Verifier::Github { secrets } => verify_github(secrets, headers, body),
            Verifier::Stripe { secrets, tolerance } => {
                verify_stripe(secrets, *tolerance, headers, body, now)
            }
            Verifier::Bearer { tags } => {
                let token = authorization(headers, "Bearer")?;
                match tags
                    .iter()
                    .any(|expected| same_tag(token.as_bytes(), expected))
                {
                    true => Ok(()),
                    false => Err("the bearer token is not one of the webhook's tokens".into()),
                }
            }
            Verifier::Basic { tags } => {
                let credentials = authorization(headers, "Basic")?;
                match tags
                    .iter()
                    .any(|expected| same_tag(credentials.as_bytes(), expected))
                {
                    true => Ok(()),
                    false => Err("the user or password is wrong".into()),
                }
            }
        }
    }
}

/// The credentials after `scheme` in the `Authorization` header.
fn authorization<'a>(headers: &'a [(String, String)], scheme: &str) -> Result<&'a str, String> {
    let missing = || format!("send `Authorization: {scheme} …`");
    let value = header(headers, "authorization").ok_or_else(missing)?;
    let (given, credentials) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !given.eq_ignore_ascii_case(scheme) {
        return Err(missing());
    }
    Ok(credentials.trim())
}

/// The HMAC-SHA256 tag of a credential under [`CREDENTIAL_KEY`].
fn tag(credential: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(CREDENTIAL_KEY).expect("HMAC takes any key length");
    mac.update(credential);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `presented` has the tag `expected`, compared in constant time.
fn same_tag(presented: &[u8], expected: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(CREDENTIAL_KEY).expect("HMAC takes any key length");
    mac.update(presented);
    mac.verify_slice(expected).is_ok()
}

/// Whether one of `secrets` signed `parts` (concatenated) as `signature`.
fn signed_by_one_of(secrets: &[Vec<u8>], parts: &[&[u8]], signature: &[u8]) -> bool {
    secrets.iter().any(|secret| {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
        for part in parts {
            mac.update(part);
        }
        mac.verify_slice(signature).is_ok()
    })
}

fn verify_github(
    secrets: &[Vec<u8>],
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let value = header(headers, GITHUB_HEADER).ok_or(
        "missing the X-Hub-Signature-256 header (`sha256=` and the HMAC-SHA256 of the body in \
         hex)",
    )?;
    let signature = value
        .trim()
        .strip_prefix("sha256=")
        .and_then(decode_hex)
        .filter(|signature| signature.len() == 32)
        .ok_or("X-Hub-Signature-256 must be `sha256=` and 64 hex digits")?;
    match signed_by_one_of(secrets, &[body], &signature) {
        true => Ok(()),
        false => {
            Err("the X-Hub-Signature-256 signature matches none of the webhook's secrets".into())
        }
    }
}

fn verify_stripe(
    secrets: &[Vec<u8>],
    tolerance: Duration,
    headers: &[(String, String)],
    body: &[u8],
    now: i64,
) -> Result<(), String> {
    let value = header(headers, STRIPE_HEADER)
        .ok_or("missing the Stripe-Signature header (`t=TIMESTAMP,v1=HEX`)")?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) if timestamp.is_none() => timestamp = Some(t),
            Some(("v1", hex)) => signatures.extend(decode_hex(hex).filter(|s| s.len() == 32)),
            _ => {}
        }
    }
    let malformed =
        "Stripe-Signature must hold `t=TIMESTAMP` and at least one `v1=` with 64 hex digits";
    let Some(timestamp) = timestamp else {
        return Err(malformed.into());
    };
    let Ok(seconds) = timestamp.parse::<i64>() else {
        return Err(malformed.into());
    };
    if signatures.is_empty() {
        return Err(malformed.into());
    }
    let off = now.saturating_sub(seconds).unsigned_abs();
    if off > tolerance.as_secs() {
        return Err(format!(
            "the Stripe-Signature timestamp is {off} s away from now, more than the tolerance \
             of {} s (a replayed delivery, or a clock that is off)",
            tolerance.as_secs()
        ));
    }
    let parts: [&[u8]; 3] = [timestamp.as_bytes(), b".", body];
    match signatures
        .iter()
        .any(|signature| signed_by_one_of(secrets, &parts, signature))
    {
        true => Ok(()),
        false => Err("no v1 signature of Stripe-Signature matches the webhook's secrets".into()),
    }
}

/// Bytes from hex digits (either case), or `None`.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    text.chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4) | digit(pair[1])?))
        .collect()
}

/// Lower-case hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `X-Hub-Signature-256` for `body` signed with `secret`, as GitHub sends it.
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", encode_hex(&mac.finalize().into_bytes()))
}

/// `Stripe-Signature` for `body` signed with `secret` at Unix time `timestamp`, as Stripe
/// sends it.
pub fn stripe_signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "t={timestamp},v1={}",
        encode_hex(&mac.finalize().into_bytes())
    )
}
