//! The do-not-call list's routes: `POST`, `DELETE` and `GET /dnc/{number}` (bearer token, like
//! every campaign route). The list itself is a table of the campaign store, checked before every
//! dial (see `calls::dial`).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::api::{CampaignError, bad_request};
use crate::app::App;
use crate::calls::api::Authorized;
use crate::calls::store::model::rfc3339_ms;
use crate::e164;

fn listed_number(number: &str) -> Result<String, CampaignError> {
    e164::normalize(number).ok_or_else(|| {
        bad_request(format!(
            "{number:?} is not an E.164 number like +15551234567"
        ))
    })
}

/// `POST /dnc/{number}`: never dial this number again, from a campaign or `POST /calls`.
/// 201 when added, 200 when it was listed already.
pub async fn add(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(number): Path<String>,
) -> Result<Response, CampaignError> {
    let number = listed_number(&number)?;
    let campaigns = &app.campaigns;
    let added = campaigns
        .store
        .add_do_not_call(&number, campaigns.now_ms())
        .await?;
    let since = campaigns.store.do_not_call_since(&number).await?;
    let status = if added {
        tracing::info!(%number, "number added to the do-not-call list");
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({"number": number, "added_at": since.map(rfc3339_ms)});
    Ok((status, Json(body)).into_response())
}

/// `DELETE /dnc/{number}`: dial this number again. 204, or 404 when it was not listed.
pub async fn remove(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(number): Path<String>,
) -> Result<Response, CampaignError> {
    let number = listed_number(&number)?;
    if !app.campaigns.store.remove_do_not_call(&number).await? {
        return Err(CampaignError::NotListed(number));
    }
    tracing::info!(%number, "number removed from the do-not-call list");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /dnc/{number}`: 200 with when it was listed, or 404.
pub async fn show(
    _: Authorized,
    State(app): State<Arc<App>>,
    Path(number): Path<String>,
) -> Result<Response, CampaignError> {
    let number = listed_number(&number)?;
    match app.campaigns.store.do_not_call_since(&number).await? {
        Some(since) => {
            Ok(Json(json!({"number": number, "added_at": rfc3339_ms(since)})).into_response())
        }
        None => Err(CampaignError::NotListed(number)),
    }
}
