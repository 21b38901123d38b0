//! The provider accounts this server holds: for each configured provider, its REST control
//! and the secret its webhooks are signed with. Routes and calls look providers up here by
//! name instead of matching on provider names themselves.

use std::sync::Arc;

use super::Provider;
use super::plivo::{Plivo, PlivoClient};
use super::rest::CallControl;
use super::twilio::{Twilio, TwilioClient};
use crate::config::{Config, Secret};

/// One configured provider account.
struct Account {
    provider: &'static dyn Provider,
    control: Arc<dyn CallControl>,
    webhook_secret: Secret,
}

/// The configured provider accounts.
pub struct Registry {
    accounts: Vec<Account>,
    verify_webhooks: bool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("providers", &self.names())
            .field("verify_webhooks", &self.verify_webhooks)
            .finish()
    }
}

impl Registry {
    /// An account for every provider whose credentials `config` holds, sharing `http`.
    pub fn from_config(config: &Config, http: &reqwest::Client) -> Self {
        let mut accounts = Vec::new();
        if let Some(twilio) = &config.twilio {
            accounts.push(Account {
                provider: &Twilio,
                control: Arc::new(TwilioClient::new(twilio.clone(), http.clone())),
                webhook_secret: twilio.auth_token.clone(),
            });
        }
        if let Some(plivo) = &config.plivo {
            accounts.push(Account {
                provider: &Plivo,
                control: Arc::new(PlivoClient::new(plivo.clone(), http.clone())),
                webhook_secret: plivo.auth_token.clone(),
            });
        }
        Self {
            accounts,
            verify_webhooks: config.verify_webhooks,
        }
    }

    fn account(&self, provider: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.provider.name() == provider)
    }

    /// REST control of the named provider, if configured.
    pub fn control(&self, provider: &str) -> Option<Arc<dyn CallControl>> {
        self.account(provider).map(|a| Arc::clone(&a.control))
    }

    /// The provider to use when a request names none: the only configured one.
    pub fn only_control(&self) -> Option<Arc<dyn CallControl>> {
        match self.accounts.as_slice() {
            [only] => Some(Arc::clone(&only.control)),
            _ => None,
        }
    }

    /// The auth token webhooks from `provider` must be signed with, when they are checked.
    pub fn webhook_secret(&self, provider: &str) -> Option<&Secret> {
        if !self.verify_webhooks {
            return None;
        }
        self.account(provider).map(|a| &a.webhook_secret)
    }

    /// Names of the configured providers, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> =
            self.accounts.iter().map(|a| a.provider.name()).collect();
        names.sort_unstable();
        names
    }

    /// True when no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }

    /// Providers whose webhooks are served without a signature check.
    pub fn unverified(&self) -> Vec<&'static str> {
        super::PROVIDERS
            .iter()
            .map(|p| p.name())
            .filter(|name| self.webhook_secret(name).is_none())
            .collect()
    }
}
