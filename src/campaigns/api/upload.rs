//! Creating a campaign: the JSON body or the CSV upload with its settings as query
//! parameters, folded into one [`CampaignSpec`] and checked contact by contact before
//! anything is stored.

use super::*;

/// A campaign's settings as the flat query parameters of a CSV upload spell them (and the
/// JSON body is folded into).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    name: Option<String>,
    prompt: Option<String>,
    provider: Option<String>,
    from: Option<String>,
    max_concurrent: Option<u32>,
    calls_per_minute: Option<u32>,
    window_start: Option<String>,
    window_end: Option<String>,
    days: Option<String>,
    timezone: Option<String>,
    max_attempts: Option<u32>,
    retry_on: Option<String>,
    backoff_minutes: Option<f64>,
    start_at: Option<String>,
}

/// A list given as one comma-separated string or as a JSON array of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NameList {
    One(String),
    Many(Vec<String>),
}

impl NameList {
    fn joined(self) -> String {
        match self {
            NameList::One(text) => text,
            NameList::Many(names) => names.join(","),
        }
    }
}

/// `POST /campaigns` JSON body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCampaign {
    name: Option<String>,
    prompt: Option<String>,
    provider: Option<String>,
    from: Option<String>,
    contacts: Vec<JsonContact>,
    #[serde(default)]
    window: Option<JsonWindow>,
    #[serde(default)]
    pacing: Option<JsonPacing>,
    #[serde(default)]
    retry: Option<JsonRetry>,
    timezone: Option<String>,
    start_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonContact {
    to: String,
    #[serde(default)]
    vars: Map<String, Value>,
    timezone: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonWindow {
    start: Option<String>,
    end: Option<String>,
    days: Option<NameList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonPacing {
    max_concurrent: Option<u32>,
    calls_per_minute: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRetry {
    on: Option<NameList>,
    max_attempts: Option<u32>,
    backoff_minutes: Option<f64>,
}

impl CreateCampaign {
    /// The settings, flattened, and the contacts numbered from 1.
    fn split(self) -> (Settings, Vec<RawContact>) {
        let window = self.window.unwrap_or_default();
        let pacing = self.pacing.unwrap_or_default();
        let retry = self.retry.unwrap_or_default();
        let settings = Settings {
            name: self.name,
            prompt: self.prompt,
            provider: self.provider,
            from: self.from,
            max_concurrent: pacing.max_concurrent,
            calls_per_minute: pacing.calls_per_minute,
            window_start: window.start,
            window_end: window.end,
            days: window.days.map(NameList::joined),
            timezone: self.timezone,
            max_attempts: retry.max_attempts,
            retry_on: retry.on.map(NameList::joined),
            backoff_minutes: retry.backoff_minutes,
            start_at: self.start_at,
        };
        let contacts = self
            .contacts
            .into_iter()
            .zip(1..)
            .map(|(contact, line)| RawContact {
                line,
                to: contact.to,
                timezone: contact.timezone,
                vars: contact.vars,
            })
            .collect();
        (settings, contacts)
    }
}

/// `POST /campaigns`: validate everything, then store the campaign and its contacts at once.
pub async fn create(
    _: Authorized,
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, CampaignError> {
    let body = read_upload(body)?;
    let (settings, contacts) = if is_csv(&headers) {
        let settings: Settings = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| bad_request(format!("invalid query parameters: {e}")))?;
        let contacts =
            read_contacts(&body, MAX_CONTACTS).map_err(|e| CampaignError::BadContact {
                line: e.line,
                problem: e.problem,
            })?;
        (settings, contacts)
    } else {
        if query.as_deref().is_some_and(|q| !q.is_empty()) {
            return Err(bad_request(
                "with a JSON body the settings go in the body; query parameters are for text/csv uploads",
            ));
        }
        let request: CreateCampaign = serde_json::from_slice(&body)
            .map_err(|e| bad_request(format!("invalid request body: {e}")))?;
        if request.contacts.len() > MAX_CONTACTS {
            return Err(bad_request(format!(
                "a campaign takes at most {MAX_CONTACTS} contacts"
            )));
        }
        request.split()
    };
    let spec = campaign_spec(&app, settings)?;
    let contacts = validate_contacts(&app, &spec, contacts)?;
    let campaigns = &app.campaigns;
    let id = campaigns
        .store
        .create(&spec, &contacts, campaigns.now_ms())
        .await?;
    tracing::info!(campaign = %id, name = %spec.name, contacts = contacts.len(), "campaign created");
    campaigns.wake_dialer();
    let campaign = find(&app, &id).await?;
    Ok((StatusCode::CREATED, Json(campaign)).into_response())
}

fn is_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| v == "text/csv" || v == "application/csv")
}

fn read_upload(body: Result<Bytes, BytesRejection>) -> Result<Bytes, CampaignError> {
    body.map_err(|rejection| {
        if let Some(timed_out) = body_timeout_in(&rejection) {
            return CampaignError::Api(ApiError::BodyTimedOut(timed_out));
        }
        match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                CampaignError::TooLarge
            }
            other => bad_request(other.body_text()),
        }
    })
}

/// Checks the settings and fills in defaults.
fn campaign_spec(app: &App, settings: Settings) -> Result<CampaignSpec, CampaignError> {
    let name = settings
        .name
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| bad_request("`name` is required: a label for the campaign"))?;
    if name.chars().count() > 200 {
        return Err(bad_request("`name` is over 200 characters"));
    }
    let control = calls_api::provider_control(app, settings.provider.as_deref())?;
    let from = calls_api::caller_id(control.as_ref(), settings.from.as_deref())?;
    let max_concurrent = settings.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT);
    if max_concurrent == 0 {
        return Err(bad_request("max_concurrent must be at least 1"));
    }
    if settings.calls_per_minute == Some(0) {
        return Err(bad_request(
            "calls_per_minute must be at least 1 (leave it out for no rate limit)",
        ));
    }
    let window = CallingWindow::parse(
        settings.window_start.as_deref(),
        settings.window_end.as_deref(),
        settings.days.as_deref(),
    )
    .map_err(|e| bad_request(e.0))?;
    let timezone = settings.timezone.unwrap_or_else(|| "UTC".to_owned());
    time_zone(&timezone).map_err(|e| bad_request(format!("timezone: {}", e.0)))?;
    let mut retry = RetryPolicy::default();
    if let Some(on) = settings.retry_on.as_deref() {
        retry.on = RetryPolicy::parse_on(on).map_err(bad_request)?;
    }
    if let Some(max_attempts) = settings.max_attempts {
        if !(1..=MAX_ATTEMPTS).contains(&max_attempts) {
            return Err(bad_request(format!(
                "max_attempts must be 1 to {MAX_ATTEMPTS} (1: no retries)"
            )));
        }
        retry.max_attempts = max_attempts;
    }
    if let Some(minutes) = settings.backoff_minutes {
        if !minutes.is_finite() || !(0.0..=10_080.0).contains(&minutes) {
            return Err(bad_request("backoff_minutes must be 0 to 10080 (a week)"));
        }
        // At most a week in milliseconds: far inside i64.
        retry.backoff_ms = (minutes * 60_000.0).round() as i64;
    }
    let start_at_ms = match settings.start_at.as_deref() {
        None => app.campaigns.now_ms(),
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map(jiff::Timestamp::as_millisecond)
            .map_err(|_| {
                bad_request(format!(
                    "start_at: {text:?} is not an RFC 3339 time such as 2026-12-01T09:00:00Z or 2026-12-01T09:00:00-05:00"
                ))
            })?,
    };
    Ok(CampaignSpec {
        name,
        prompt: settings
            .prompt
            .unwrap_or_else(|| calls_api::DEFAULT_OUTBOUND_PROMPT.to_owned()),
        provider: control.provider().to_owned(),
        from,
        max_concurrent,
        calls_per_minute: settings.calls_per_minute,
        window,
        timezone,
        retry,
        start_at_ms,
    })
}

/// Checks every contact: an E.164 number, not twice in the list, a known time zone, and a
/// value for each of the prompt's placeholders. The first problem stops the upload.
fn validate_contacts(
    app: &App,
    spec: &CampaignSpec,
    contacts: Vec<RawContact>,
) -> Result<Vec<NewContact>, CampaignError> {
    if contacts.is_empty() {
        return Err(bad_request("no contacts: give at least one"));
    }
    // Placeholders are only checked for presence, so contacts with the same set of variable
    // names render alike: one render per set, not per contact.
    let mut rendered: HashMap<BTreeSet<String>, Result<(), PromptError>> = HashMap::new();
    let mut seen: HashMap<String, u64> = HashMap::with_capacity(contacts.len());
    let mut valid = Vec::with_capacity(contacts.len());
    for contact in contacts {
        let line = contact.line;
        let problem = |problem: String| CampaignError::BadContact { line, problem };
        let to = contact.to.trim().to_owned();
        if !e164::is_e164(&to) {
            return Err(problem(format!(
                "`to` must be an E.164 number like +15551234567, got {:?}",
                contact.to
            )));
        }
        if let Some(first) = seen.insert(to.clone(), line) {
            return Err(problem(format!(
                "{to} is already on line {first}; each number once per campaign"
            )));
        }
        if let Some(zone) = &contact.timezone {
            time_zone(zone).map_err(|e| problem(e.0))?;
        }
        let names: BTreeSet<String> = contact
            .vars
            .iter()
            .filter(|(_, value)| !value.is_null())
            .map(|(name, _)| name.clone())
            .collect();
        let outcome = rendered
            .entry(names)
            .or_insert_with(|| app.prompts.render(&spec.prompt, &contact.vars).map(|_| ()));
        match outcome {
            Ok(()) => {}
            Err(error @ PromptError::MissingVars { .. }) => {
                return Err(problem(error.to_string()));
            }
            // The template itself is wrong: not this contact's fault.
            Err(error) => return Err(bad_request(error.to_string())),
        }
        valid.push(NewContact {
            line,
            to,
            vars: contact.vars,
            timezone: contact.timezone,
        });
    }
    Ok(valid)
}
