//! Where Application Default Credentials are looked for, and in which order.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gcp_auth::{CustomServiceAccount, GCloudAuthorizedUser};

use super::metadata::{self, MetadataServer, Probe};
use super::user::RefreshTokenGrant;
use super::{AccessTokens, AuthError, TokenSource, with_causes};

/// How long one token or metadata request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the default metadata host before deciding this is not Google
/// Cloud; short, because on a laptop the name does not resolve and start-up should not
/// hang on it.
const METADATA_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The inputs of Application Default Credentials, read from the environment with the rest
/// of the configuration (so tests can hand them over without touching the process's
/// environment, and never read a developer's own gcloud files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialSources {
    /// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key or `authorized_user` file.
    pub key_file: Option<PathBuf>,
    /// gcloud's ADC file: `$CLOUDSDK_CONFIG/application_default_credentials.json`, else under
    /// `~/.config/gcloud` (`%APPDATA%\gcloud` on Windows); `None` with no home to look in.
    pub gcloud_adc_file: Option<PathBuf>,
    /// `GCE_METADATA_HOST` (`host[:port]`), when set: the metadata server is there and
    /// nowhere else. Unset: `metadata.google.internal`, tried briefly.
    pub metadata_host: Option<String>,
}

impl CredentialSources {
    /// Reads `GOOGLE_APPLICATION_CREDENTIALS`, `CLOUDSDK_CONFIG`, `HOME` (`APPDATA` on
    /// Windows) and `GCE_METADATA_HOST` through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let gcloud_config_dir = lookup("CLOUDSDK_CONFIG")
            .map(PathBuf::from)
            .or_else(|| default_gcloud_config_dir(&lookup));
        CredentialSources {
            key_file: lookup("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from),
            gcloud_adc_file: gcloud_config_dir
                .map(|dir| dir.join("application_default_credentials.json")),
            metadata_host: lookup("GCE_METADATA_HOST"),
        }
    }

    /// The first source that has credentials, in ADC order. A source that is present but
    /// broken is an error, not a reason to try the next one: falling through would hide
    /// the mistake behind some other identity.
    pub(super) async fn discover(&self) -> Result<AccessTokens, AuthError> {
        if let Some(path) = &self.key_file {
            return from_file(path, "GOOGLE_APPLICATION_CREDENTIALS");
        }
        let mut tried = vec!["GOOGLE_APPLICATION_CREDENTIALS is unset".to_owned()];
        match &self.gcloud_adc_file {
            Some(path) if path.exists() => return from_file(path, "gcloud's ADC file"),
            Some(path) => tried.push(format!("no gcloud ADC file at {}", path.display())),
            None => tried.push("no home directory to find gcloud's ADC file in".to_owned()),
        }
        match self.metadata_host.as_deref() {
            Some(host) => return from_metadata_server(host, REQUEST_TIMEOUT, true).await,
            None => {
                match from_metadata_server(metadata::DEFAULT_HOST, METADATA_PROBE_TIMEOUT, false)
                    .await
                {
                    Err(AuthError::Credentials(absent)) => tried.push(absent),
                    found => return found,
                }
            }
        }
        match GCloudAuthorizedUser::new().await {
            Ok(gcloud) => Ok(AccessTokens {
                source: TokenSource::GcloudCommand(gcloud),
                quota_project: None,
                origin: "the gcloud command's logged-in account".to_owned(),
            }),
            Err(e) => {
                tried.push(format!("no usable gcloud command ({})", with_causes(&e)));
                Err(AuthError::Credentials(tried.join("; ")))
            }
        }
    }
}

#[cfg(not(windows))]
fn default_gcloud_config_dir(lookup: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    lookup("HOME").map(|home| Path::new(&home).join(".config").join("gcloud"))
}

#[cfg(windows)]
fn default_gcloud_config_dir(lookup: &impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    lookup("APPDATA").map(|appdata| Path::new(&appdata).join("gcloud"))
}

/// A credentials file of either kind; `named_by` says where the path came from, for errors.
fn from_file(path: &Path, named_by: &str) -> Result<AccessTokens, AuthError> {
    let shown = path.display();
    let cannot_use = |why: String| AuthError::Credentials(format!("{named_by} {shown}: {why}"));
    let text =
        std::fs::read_to_string(path).map_err(|e| cannot_use(format!("cannot read it ({e})")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| cannot_use(format!("not JSON ({e})")))?;
    let quota_project = json
        .get("quota_project_id")
        .and_then(|q| q.as_str())
        .filter(|q| !q.is_empty())
        .map(str::to_owned);
    let source = match json.get("type").and_then(|t| t.as_str()) {
        Some("service_account") => {
            let account = CustomServiceAccount::from_json(&text)
                .map_err(|e| cannot_use(format!("not a usable service-account key ({e})")))?;
            TokenSource::ServiceAccount(Box::new(account))
        }
        Some("authorized_user") => TokenSource::User(
            RefreshTokenGrant::from_json(json, REQUEST_TIMEOUT).map_err(cannot_use)?,
        ),
        other => {
            return Err(cannot_use(format!(
                "credentials of type {other:?} are not supported; use a service-account key, or the file `gcloud auth application-default login` writes"
            )));
        }
    };
    let kind = match source {
        TokenSource::ServiceAccount(_) => "service-account key",
        _ => "user credentials (authorized_user)",
    };
    Ok(AccessTokens {
        source,
        quota_project,
        origin: format!("{kind} from {named_by} {shown}"),
    })
}

/// The metadata server at `host`. `explicit` (`GCE_METADATA_HOST`) makes its absence an
/// error; otherwise absence is `AuthError::Credentials` and discovery moves on.
async fn from_metadata_server(
    host: &str,
    timeout: Duration,
    explicit: bool,
) -> Result<AccessTokens, AuthError> {
    let server = MetadataServer::new(host, timeout)?;
    let project = match server.probe().await {
        Probe::Found { project } => project,
        Probe::Absent(why) if explicit => {
            return Err(AuthError::Token(format!(
                "GCE_METADATA_HOST={host}: {why}; check the address, or unset GCE_METADATA_HOST"
            )));
        }
        Probe::Absent(why) => {
            return Err(AuthError::Credentials(format!(
                "no metadata server at {host} ({why}), so not on Google Cloud"
            )));
        }
    };
    Ok(AccessTokens {
        source: TokenSource::Metadata(server),
        quota_project: None,
        origin: format!("the metadata server at {host} (the service account of project {project})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn gcloud_adc_file_is_under_cloudsdk_config_else_home() {
        let from_home = CredentialSources::from_lookup(lookup(&[("HOME", "/home/ann")]));
        assert_eq!(
            from_home.gcloud_adc_file.as_deref(),
            Some(Path::new(
                "/home/ann/.config/gcloud/application_default_credentials.json"
            ))
        );
        let overridden = CredentialSources::from_lookup(lookup(&[
            ("HOME", "/home/ann"),
            ("CLOUDSDK_CONFIG", "/etc/gcloud-ann"),
            ("GCE_METADATA_HOST", "127.0.0.1:8080"),
        ]));
        assert_eq!(
            overridden.gcloud_adc_file.as_deref(),
            Some(Path::new(
                "/etc/gcloud-ann/application_default_credentials.json"
            ))
        );
        assert_eq!(overridden.metadata_host.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            CredentialSources::from_lookup(lookup(&[])).gcloud_adc_file,
            None
        );
    }

    #[test]
    fn unusable_files_name_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let external = dir.path().join("wif.json");
        std::fs::write(&external, r#"{"type":"external_account"}"#).unwrap();
        let err = from_file(&external, "GOOGLE_APPLICATION_CREDENTIALS")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("wif.json"), "{err}");
        assert!(
            err.contains(r#"type Some("external_account") are not supported"#),
            "{err}"
        );

        let missing = from_file(
            &dir.path().join("none.json"),
            "GOOGLE_APPLICATION_CREDENTIALS",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(missing.contains("cannot read it"), "{missing}");

        let incomplete = dir.path().join("user.json");
        std::fs::write(&incomplete, r#"{"type":"authorized_user","client_id":"c"}"#).unwrap();
        let err = from_file(&incomplete, "gcloud's ADC file")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("client_secret"), "{err}");
        assert!(
            err.contains("gcloud auth application-default login"),
            "{err}"
        );
    }
}
