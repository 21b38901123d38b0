//! The provider accounts this server holds: for each configured provider, its REST control
//! and the secret its webhooks are signed with. Routes and calls look providers up here by
//! name instead of matching on provider names themselves.

use std::sync::Arc;

use super::Provider;
use super::plivo::{Plivo, PlivoClient};
use super::rest::CallControl;
use super::twilio::{Twilio, TwilioClient};
use crate::config::{Config, Secret};
use crate::numbers::NumberSetup;

/// One configured provider account.
struct Account {
    provider: &'static dyn Provider,
    control: Arc<dyn CallControl>,
    numbers: Arc<dyn NumberSetup>,
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
            let client = Arc::new(TwilioClient::new(twilio.clone(), http.clone()));
            accounts.push(Account {
                provider: &Twilio,
                control: Arc::clone(&client) as Arc<dyn CallControl>,
                numbers: client,
                webhook_secret: twilio.auth_token.clone(),
            });
        }
        if let Some(plivo) = &config.plivo {
            let client = Arc::new(PlivoClient::new(plivo.clone(), http.clone()));
            accounts.push(Account {
                provider: &Plivo,
                control: Arc::clone(&client) as Arc<dyn CallControl>,
                numbers: client,
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

    /// Number set-up of the named provider, if configured.
    pub fn number_setup(&self, provider: &str) -> Option<Arc<dyn NumberSetup>> {
        self.account(provider).map(|a| Arc::clone(&a.numbers))
    }

    /// Number set-up of every configured provider, in the order of [`super::PROVIDERS`].
    pub fn number_setups(&self) -> Vec<Arc<dyn NumberSetup>> {
        self.accounts
            .iter()
            .map(|a| Arc::clone(&a.numbers))
            .collect()
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
