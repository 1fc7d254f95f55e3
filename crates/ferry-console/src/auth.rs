//! Who is asking and what they may do: password hashes, sessions, API tokens, the login
//! limiter, CSRF tokens and the guard every route passes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_core::config::UserRole;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::{ApiError, ApiResult};

/// The session cookie. HttpOnly and SameSite=Strict; its value is only known to the browser,
/// the store keeps its SHA-256.
pub const SESSION_COOKIE: &str = "ferry_session";
/// The login form's CSRF cookie (double submit: there is no session yet).
pub const LOGIN_CSRF_COOKIE: &str = "ferry_login";
/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The client whose administrators see and act on every client.
pub const ROOT_CLIENT: &str = "root";
/// The password of the demo project's accounts; the console warns while one still has it.
pub const DEMO_PASSWORD: &str = "demo";

/// The argon2id hash of `password`, as a PHC string.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).expect("16 bytes make a salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// 32 random bytes, URL-safe: session ids, CSRF tokens, API tokens.
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// SHA-256 of a high-entropy secret, hex: what the store keeps of sessions and tokens.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares two secrets without revealing through timing where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    Sha256::digest(a.as_bytes()) == Sha256::digest(b.as_bytes())
}

/// How a request proved who it is.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A console login; state changes must carry this CSRF token.
    Session { csrf: String },
    /// An API token (no cookies, so no CSRF), with the person who made it (`client/user`).
    Token { owner: String },
}

/// The person or program behind a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub client: String,
    /// The user, or the token's name.
    pub name: String,
    pub role: UserRole,
    pub credential: Credential,
}

impl Principal {
    /// Who, for the audit log: `client/user` or `token:client/name`.
    pub fn actor(&self) -> String {
        match self.credential {
            Credential::Session { .. } => format!("{}/{}", self.client, self.name),
            Credential::Token { .. } => format!("token:{}/{}", self.client, self.name),
        }
    }

    /// The person behind the request (`client/user`): the user of a session, the maker of a
    /// token. Tokens are made in a person's name, also when a token asks, so that
    /// `from_token`'s check always finds a person.
    pub fn person(&self) -> String {
        match &self.credential {
            Credential::Session { .. } => format!("{}/{}", self.client, self.name),
            Credential::Token { owner } => owner.clone(),
        }
    }

    pub fn is_administrator(&self) -> bool {
        self.role == UserRole::Administrator
    }

    /// An administrator of the `root` client: sees and acts on every client.
    pub fn is_root(&self) -> bool {
        self.is_administrator() && self.client == ROOT_CLIENT
    }

    /// The client every query of this principal is limited to; `None` for root.
    pub fn scope(&self) -> Option<&str> {
        (!self.is_root()).then_some(self.client.as_str())
    }

    /// May this principal see the client's things?
    pub fn sees(&self, client: &str) -> bool {
        self.is_root() || self.client == client
    }

    /// Refuses things of other clients as if they did not exist.
    pub fn require_client(&self, client: &str, what: impl FnOnce() -> String) -> ApiResult<()> {
        if self.sees(client) {
            Ok(())
        } else {
            Err(ApiError::not_found(format!("no {}", what())))
        }
    }

    /// The CSRF token forms of this session carry, if it is a session.
    pub fn csrf(&self) -> &str {
        match &self.credential {
            Credential::Session { csrf } => csrf,
            Credential::Token { .. } => "",
        }
    }

    fn allows(&self, access: Access) -> bool {
        match access {
            Access::Public | Access::Operator => true,
            // The guard lets webhook deliveries through before looking for a principal.
            Access::Webhook => false,
            Access::Administrator => self.is_administrator(),
            Access::Root => self.is_root(),
        }
    }
}

/// Who may use a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, logged in or not (login, health, static files).
    Public,
    /// Any user of a client: browse, retry, replay, discard, skip, run now, pause, resume.
    Operator,
    /// Administrators: tokens, definitions, export.
    Administrator,
    /// Administrators of the `root` client: pause all, resume all, shut down.
    Root,
    /// Senders of webhook deliveries: no session, CSRF token or API token is looked at; the
    /// webhook puller authenticates each delivery itself (signature, bearer token or basic
    /// credentials of its definition).
    Webhook,
}

/// Slows down password guessing without letting an outsider lock a person out.
///
/// Failures count under three keys, each with its own [`Rule`]: one account from one address
/// (a guesser, slowed soon and for long), one address whatever the account (a guesser trying
/// many accounts), and one account from every address (many guessers at once; a high bound and
/// a short delay, so someone who knows a user name can delay its owner's login by at most a
/// minute, never lock it).
#[derive(Default)]
pub struct Limiter {
    failures: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    last: Instant,
}

/// When failures under a key start to delay attempts, and how long the delay may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Failures allowed before attempts wait.
    free: u32,
    /// The longest wait; the wait doubles with each failure after the free ones.
    max_delay: Duration,
}

/// One account from one address.
const PAIR: Rule = Rule {
    free: 3,
    max_delay: Duration::from_secs(15 * 60),
};
/// One address, any account.
const ADDRESS: Rule = Rule {
    free: 10,
    max_delay: Duration::from_secs(15 * 60),
};
/// One account, any address.
const ACCOUNT: Rule = Rule {
    free: 50,
    max_delay: Duration::from_secs(60),
};

/// A key failures count under, with its rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    name: String,
    rule: Rule,
}

impl Limiter {
    /// Keys of one login attempt: the account from its address, the address, the account.
    pub fn keys(client: &str, user: &str, ip: Option<IpAddr>) -> Vec<Key> {
        let account = format!("{client}/{user}");
        let mut keys = vec![Key {
            name: format!("account:{account}"),
            rule: ACCOUNT,
        }];
        if let Some(ip) = ip {
            keys.push(Key {
                name: format!("pair:{account}@{ip}"),
                rule: PAIR,
            });
            keys.push(Key {
                name: format!("address:{ip}"),
                rule: ADDRESS,
            });
        }
        keys
    }

    /// How long the caller must wait before trying again, if at all.
    pub fn wait(&self, keys: &[Key]) -> Option<Duration> {
        let failures = self.failures.lock().expect("limiter lock");
        keys.iter()
            .filter_map(|key| {
                let failure = failures.get(&key.name)?;
                delay(key.rule, failure.count).checked_sub(failure.last.elapsed())
            })
            .filter(|left| !left.is_zero())
            .max()
    }

    pub fn failed(&self, keys: &[Key]) {
        let mut failures = self.failures.lock().expect("limiter lock");
        // Forget old failures now and then, so the map stays small.
        if failures.len() > 10_000 {
            failures.retain(|_, f| f.last.elapsed() < PAIR.max_delay);
        }
        for key in keys {
            let entry = failures.entry(key.name.clone()).or_insert(Failures {
                count: 0,
                last: Instant::now(),
            });
            entry.count += 1;
            entry.last = Instant::now();
        }
    }

    /// Forgets the failures of the account (from everywhere and from this address); the
    /// address keeps its own, so logging in to one account does not clear guesses at others.
    pub fn succeeded(&self, keys: &[Key]) {
        let mut failures = self.failures.lock().expect("limiter lock");
        for key in keys.iter().filter(|key| key.rule != ADDRESS) {
            failures.remove(&key.name);
        }
    }
}

/// The wait after `count` failures under `rule`.
fn delay(rule: Rule, count: u32) -> Duration {
    if count < rule.free {
        return Duration::ZERO;
    }
    let doubling = (count - rule.free).min(16);
    Duration::from_secs(1u64 << doubling).min(rule.max_delay)
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for the whole console.
pub fn set_cookie(name: &str, value: &str, max_age: Duration) -> String {
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        max_age.as_secs()
    )
}

/// The principal of a console request, from its session cookie.
async fn from_session(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Principal>> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let Some(session) = state.store.session(&digest(id), chrono::Utc::now()).await? else {
        return Ok(None);
    };
    // The role is read from the definitions each time: a changed role or a removed user
    // takes effect at once.
    let project = state.engine.project();
    let Some(user) = project
        .clients
        .get(&session.client)
        .and_then(|client| client.users.get(&session.user))
    else {
        return Ok(None);
    };
    Ok(Some(Principal {
        client: session.client,
        name: session.user,
        role: user.role,
        credential: Credential::Session { csrf: session.csrf },
    }))
}

/// The principal of a request with a bearer token.
async fn from_token(state: &AppState, headers: &HeaderMap) -> ApiResult<Option<Principal>> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(secret) = value.strip_prefix("Bearer ") else {
        return Ok(None);
    };
    let Some(token) = state
        .store
        .use_token(&digest(secret.trim()), chrono::Utc::now())
        .await?
    else {
        return Ok(None);
    };
    // A token acts with at most its maker's role of now, read from the definitions each time
    // like a session's: demoting or removing a person takes their tokens' power too. A token
    // whose maker is no longer a user of its client is refused.
    let project = state.engine.project();
    let maker = token
        .created_by
        .split_once('/')
        .filter(|(client, _)| *client == token.client)
        .and_then(|(client, user)| project.clients.get(client)?.users.get(user));
    let Some(maker) = maker else {
        return Ok(None);
    };
    let role = token
        .role
        .parse()
        .unwrap_or(UserRole::Operator)
        .min(maker.role);
    Ok(Some(Principal {
        client: token.client,
        name: token.name,
        role,
        credential: Credential::Token {
            owner: token.created_by,
        },
    }))
}

/// Is this an API route (JSON, bearer tokens) rather than a console page?
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// Largest form a console page accepts (definition files included).
const MAX_FORM: usize = 2 * 1024 * 1024;

/// Lets a request through to a route of the given access, with its [`Principal`] among the
/// request's extensions; refuses it otherwise. Console state changes must carry the session's
/// CSRF token in the form field `csrf`.
pub async fn guard(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    match admit(&state, access, request).await {
        Ok(request) => next.run(request).await,
        Err(refusal) => refusal,
    }
}

async fn admit(
    state: &AppState,
    access: Access,
    mut request: Request,
) -> Result<Request, Response> {
    if access == Access::Webhook {
        return Ok(request);
    }
    let api = is_api(request.uri().path());
    // A bearer token works everywhere (e.g. a Prometheus scraper on /metrics); the session
    // cookie only on console pages, so the JSON API never acts on a cookie alone.
    let bearer = request.headers().contains_key(header::AUTHORIZATION);
    let found = if bearer {
        from_token(state, request.headers()).await
    } else if api {
        Ok(None)
    } else {
        from_session(state, request.headers()).await
    };
    let principal = found.map_err(IntoResponse::into_response)?;
    if access == Access::Public {
        if let Some(principal) = principal {
            request.extensions_mut().insert(principal);
        }
        return Ok(request);
    }
    let Some(principal) = principal else {
        if api || bearer {
            return Err(ApiError::unauthorized().into_response());
        }
        return Err(Redirect::to("/login").into_response());
    };
    if !principal.allows(access) {
        let needed = match access {
            Access::Root => "an administrator of the root client",
            _ => "an administrator",
        };
        return Err(ApiError::forbidden(format!("only {needed} may do this")).into_response());
    }
    let session = matches!(principal.credential, Credential::Session { .. });
    if session && request.method() != Method::GET && request.method() != Method::HEAD {
        request = check_csrf(request, principal.csrf()).await?;
    }
    request.extensions_mut().insert(principal);
    Ok(request)
}

/// Reads the form body, compares its `csrf` field with `expected` and puts the body back.
async fn check_csrf(request: Request, expected: &str) -> Result<Request, Response> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid",
            "the form is too large",
        )
        .into_response()
    })?;
    let sent = form_field(&bytes, "csrf");
    if !sent.is_some_and(|sent| same_secret(&sent, expected)) {
        return Err(csrf_refused().into_response());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

pub fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf",
        "the form is stale or did not come from this console; reload the page and try again",
    )
}

/// The first value of `name` in an `application/x-www-form-urlencoded` body.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse"));
        assert!(!verify_password(&hash, "correct horse "));
        assert!(!verify_password("not a hash", "correct horse"));
        assert_ne!(hash, hash_password("correct horse"), "salted");
    }

    #[test]
    fn limiter_delays_after_free_failures_and_forgets_on_success() {
        let limiter = Limiter::default();
        let ip = Some(IpAddr::from([203, 0, 113, 9]));
        let keys = Limiter::keys("acme", "ada", ip);
        for _ in 0..PAIR.free {
            assert_eq!(limiter.wait(&keys), None);
            limiter.failed(&keys);
        }
        let wait = limiter
            .wait(&keys)
            .expect("delayed after the free failures");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
        limiter.failed(&keys);
        assert!(
            limiter.wait(&keys).unwrap() > Duration::from_secs(1),
            "doubles"
        );
        limiter.succeeded(&keys);
        assert_eq!(limiter.wait(&keys), None);
    }

    /// Issue 12: an outsider who knows a user name cannot lock its owner out.
    #[test]
    fn guessing_from_elsewhere_never_locks_the_owner_out() {
        let limiter = Limiter::default();
        let attacker = Limiter::keys("acme", "ada", Some(IpAddr::from([203, 0, 113, 9])));
        for _ in 0..1000 {
            limiter.failed(&attacker);
        }
        let left = limiter.wait(&attacker).unwrap();
        assert!(
            left > PAIR.max_delay - Duration::from_secs(5),
            "the attacker waits the longest: {left:?}"
        );
        // The owner, from another address, waits at most the account's short delay.
        let owner = Limiter::keys("acme", "ada", Some(IpAddr::from([198, 51, 100, 7])));
        let wait = limiter.wait(&owner).expect("the account bound holds");
        assert!(wait <= ACCOUNT.max_delay, "{wait:?}");
        // Another user behind the attacker's address is slowed too, the attacker's address
        // having failed far too often.
        let neighbour = Limiter::keys("acme", "otto", Some(IpAddr::from([203, 0, 113, 9])));
        assert!(limiter.wait(&neighbour).is_some());
        // A success clears the account for everyone but keeps the attacker's address slowed.
        limiter.succeeded(&owner);
        assert_eq!(limiter.wait(&owner), None);
        assert!(limiter.wait(&neighbour).is_some());
    }

    #[test]
    fn form_fields_are_decoded() {
        assert_eq!(
            form_field(b"a=1&csrf=x%2By+z&csrf=2", "csrf").as_deref(),
            Some("x+y z")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
    }

    #[test]
    fn cookies_are_found_among_several() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; ferry_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
