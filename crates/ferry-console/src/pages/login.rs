//! Logging in and out. Wrong passwords are slowed down per account and per address.

use std::net::SocketAddr;
use std::sync::LazyLock;

use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use ferry_store::Session;
use maud::html;
use serde::Deserialize;

use crate::AppState;
use crate::auth::{
    self, LOGIN_CSRF_COOKIE, Limiter, Principal, SESSION_COOKIE, SESSION_LIFETIME, cookie, digest,
    random_token, set_cookie, verify_password,
};
use crate::error::{ApiError, ApiResult};
use crate::extract::Form;
use crate::layout::{Chrome, page};

fn login_page(state: &AppState, csrf: &str, error: Option<&str>) -> maud::Markup {
    let chrome = Chrome::of(state, None);
    let body = html! {
        form.login method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            @if let Some(error) = error { p.error role="alert" { (error) } }
            label { "Client" input name="client" required autocomplete="organization"; }
            label { "User" input name="user" required autocomplete="username"; }
            label { "Password" input name="password" type="password" required autocomplete="current-password"; }
            button type="submit" { "Log in" }
        }
    };
    page(&chrome, "Log in", body)
}

/// The login form, with a fresh CSRF cookie (double submit: there is no session yet).
pub async fn form(State(state): State<AppState>) -> Response {
    let csrf = random_token();
    let mut response = login_page(&state, &csrf, None).into_response();
    set(
        &mut response,
        &set_cookie(
            LOGIN_CSRF_COOKIE,
            &csrf,
            std::time::Duration::from_secs(3600),
        ),
    );
    response
}

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    csrf: String,
    client: String,
    user: String,
    password: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> ApiResult<Response> {
    let expected = cookie(&headers, LOGIN_CSRF_COOKIE).unwrap_or("");
    if expected.is_empty() || digest(expected) != digest(&form.csrf) {
        return Err(auth::csrf_refused());
    }
    let keys = Limiter::keys(&form.client, &form.user, Some(peer.ip()));
    if let Some(wait) = state.limiter.wait(&keys) {
        let seconds = wait.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many failed logins; try again in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    }
    let project = state.engine.project();
    let user = project
        .clients
        .get(&form.client)
        .and_then(|client| client.users.get(&form.user));
    // Verify against some hash even for unknown users, so timing does not tell which exist.
    let hash = user.map_or(UNKNOWN_USER_HASH.as_str(), |user| {
        user.password_hash.as_str()
    });
    let password = form.password.clone();
    let hash_owned = hash.to_string();
    let matches = tokio::task::spawn_blocking(move || verify_password(&hash_owned, &password))
        .await
        .unwrap_or(false);
    if user.is_none() || !matches {
        state.limiter.failed(&keys);
        tracing::warn!(client = %form.client, user = %form.user, peer = %peer.ip(), "failed login");
        let csrf = random_token();
        let mut response = (
            StatusCode::UNAUTHORIZED,
            login_page(&state, &csrf, Some("Wrong client, user or password.")),
        )
            .into_response();
        set(
            &mut response,
            &set_cookie(
                LOGIN_CSRF_COOKIE,
                &csrf,
                std::time::Duration::from_secs(3600),
            ),
        );
        return Ok(response);
    }
    state.limiter.succeeded(&keys);
    let id = random_token();
    let session = Session {
        client: form.client.clone(),
        user: form.user.clone(),
        csrf: random_token(),
        expires_at: chrono::Utc::now() + SESSION_LIFETIME,
    };
    state.store.purge_sessions(chrono::Utc::now()).await?;
    state.store.create_session(&digest(&id), &session).await?;
    tracing::info!(client = %form.client, user = %form.user, "logged in");
    let mut response = Redirect::to("/").into_response();
    set(
        &mut response,
        &set_cookie(SESSION_COOKIE, &id, SESSION_LIFETIME),
    );
    set(
        &mut response,
        &set_cookie(LOGIN_CSRF_COOKIE, "", std::time::Duration::ZERO),
    );
    Ok(response)
}

/// The hash of a random password, verified for unknown users.
static UNKNOWN_USER_HASH: LazyLock<String> = LazyLock::new(|| auth::hash_password(&random_token()));

/// Ends the session on the server and in the browser.
pub async fn logout(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.store.delete_session(&digest(id)).await?;
    }
    tracing::info!(client = %principal.client, user = %principal.name, "logged out");
    let mut response = Redirect::to("/login").into_response();
    set(
        &mut response,
        &set_cookie(SESSION_COOKIE, "", std::time::Duration::ZERO),
    );
    Ok(response)
}

fn set(response: &mut Response, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}
