//! Users (from client.yaml, managed with `ferry user add`) and API tokens (created here).

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use ferry_core::config::UserRole;
use ferry_store::ApiToken;
use maud::{Markup, html};
use serde::{Deserialize, Serialize};

use super::{Done, Page, json_done, record};
use crate::AppState;
use crate::auth::{Principal, digest, random_token};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Form, Json, Path};
use crate::layout::{maybe_when, when};

#[derive(Serialize)]
pub struct UserView {
    pub client: String,
    pub name: String,
    pub role: &'static str,
}

fn users(state: &AppState, principal: &Principal) -> Vec<UserView> {
    let project = state.engine.project();
    project
        .clients
        .values()
        .filter(|c| principal.sees(&c.name))
        .flat_map(|c| {
            c.users.values().map(|u| UserView {
                client: c.name.clone(),
                name: u.name.clone(),
                role: u.role.as_str(),
            })
        })
        .collect()
}

async fn tokens(state: &AppState, principal: &Principal) -> ApiResult<Vec<ApiToken>> {
    Ok(state.store.tokens(principal.scope()).await?)
}

pub async fn api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<Vec<UserView>> {
    Json(users(&state, &principal))
}

pub async fn tokens_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(tokens(&state, &principal).await?))
}

pub async fn page(State(state): State<AppState>, page: Page) -> ApiResult<Markup> {
    let users = users(&state, &page.principal);
    let tokens = tokens(&state, &page.principal).await?;
    Ok(page.render("Users and API tokens", render(&page, &users, &tokens, None)))
}

fn render(page: &Page, users: &[UserView], tokens: &[ApiToken], created: Option<&str>) -> Markup {
    html! {
        p.muted { "Users and their passwords live in clients/<client>/client.yaml. Add a user or set a password with "
            code { "ferry user add CLIENT USER --role operator|administrator" } "." }
        table {
            thead { tr { th { "Client" } th { "User" } th { "Role" } } }
            tbody {
                @for u in users { tr { td { (u.client) } td { (u.name) } td { (u.role) } } }
            }
        }
        h2 { "API tokens" }
        @if let Some(secret) = created {
            div.notice role="status" {
                "The new token, shown only this once — send it as "
                code { "Authorization: Bearer TOKEN" } ":" br;
                code #new-token { (secret) }
            }
        }
        table {
            thead { tr { th { "Client" } th { "Name" } th { "Role" } th { "Created by" } th { "Created" } th { "Last used" } th {} } }
            tbody {
                @for t in tokens {
                    tr {
                        td { (t.client) } td { (t.name) } td { (t.role) } td { (t.created_by) }
                        td { (when(t.created_at)) } td { (maybe_when(t.last_used_at)) }
                        td { (page.chrome.button(&format!("/tokens/{}/revoke", t.id), "Revoke", Some("Revoke this token? Programs using it lose access at once."))) }
                    }
                }
                @if tokens.is_empty() { tr { td colspan="7" .muted { "No tokens." } } }
            }
        }
        h2 { "New token" }
        form.filters method="post" action="/tokens" {
            (page.chrome.csrf())
            label { "Name" input name="name" required placeholder="e.g. monitoring"; }
            label { "Role" select name="role" {
                option value="operator" { "operator" }
                option value="administrator" { "administrator" }
            } }
            button type="submit" { "Create" }
        }
    }
}

#[derive(Deserialize)]
pub struct NewToken {
    name: String,
    role: String,
}

#[derive(Serialize)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub token: ApiToken,
    /// The secret, shown only in this answer.
    pub secret: String,
}

/// A token for the principal's own client, with a role no higher than the principal's.
async fn create(
    state: &AppState,
    principal: &Principal,
    new: &NewToken,
) -> ApiResult<CreatedToken> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::invalid(
            "name: give the token a name of 1 to 100 characters",
        ));
    }
    let role: UserRole = new.role.parse().map_err(ApiError::invalid)?;
    if role > principal.role {
        return Err(ApiError::forbidden(
            "a token cannot have a higher role than its creator",
        ));
    }
    let secret = format!("ferry_{}", random_token());
    let mut token = ApiToken {
        id: 0,
        client: principal.client.clone(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        created_by: principal.person(),
        created_at: chrono::Utc::now(),
        last_used_at: None,
    };
    token.id = state.store.create_token(&digest(&secret), &token).await?;
    record(
        state,
        principal,
        &token.client,
        "token.create",
        &format!("token:{}", token.id),
        name,
    )
    .await?;
    Ok(CreatedToken { token, secret })
}

pub async fn create_token_form(
    State(state): State<AppState>,
    page: Page,
    Form(new): Form<NewToken>,
) -> ApiResult<Response> {
    let created = create(&state, &page.principal, &new).await?;
    let users = users(&state, &page.principal);
    let tokens = tokens(&state, &page.principal).await?;
    let body = render(&page, &users, &tokens, Some(&created.secret));
    Ok(page.render("Users and API tokens", body).into_response())
}

pub async fn create_token_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Json(new): Json<NewToken>,
) -> ApiResult<Json<CreatedToken>> {
    Ok(Json(create(&state, &principal, &new).await?))
}

async fn revoke(state: &AppState, principal: &Principal, id: i64) -> ApiResult<String> {
    // Root revokes any client's token; everyone else only their own client's.
    let client = match principal.scope() {
        Some(own) => own.to_string(),
        None => state
            .store
            .tokens(None)
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .map(|t| t.client)
            .unwrap_or_default(),
    };
    if !state.store.revoke_token(&client, id).await? {
        return Err(ApiError::not_found(format!("no token {id}")));
    }
    record(
        state,
        principal,
        &client,
        "token.revoke",
        &format!("token:{id}"),
        "",
    )
    .await?;
    Ok(format!("token {id} revoked"))
}

pub async fn revoke_token_form(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> ApiResult<axum::response::Redirect> {
    revoke(&state, &principal, id).await?;
    Ok(super::done("/users", super::Notice::TokenRevoked, 1))
}

pub async fn revoke_token_api(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Done>> {
    Ok(json_done(revoke(&state, &principal, id).await?))
}
