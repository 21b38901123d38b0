//! Typed reads of single variables, each failing with a [`ConfigError`] that names it.

use std::str::FromStr;
use std::time::Duration;

use super::ConfigError;

/// The environment as the configuration readers see it: trimmed, empty meaning unset.
pub(super) struct Vars<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub(super) fn new(lookup: F) -> Self {
        Self { lookup }
    }

    /// The trimmed value, or `None` when unset or blank.
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A number, or `default` when unset.
    pub(super) fn number<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError::new(name, format!("`{v}` is not a valid number"))),
        }
    }

    /// A whole number of seconds, at least 1.
    pub(super) fn seconds(
        &self,
        name: &'static str,
        default: u64,
    ) -> Result<Duration, ConfigError> {
        self.at_least_one(name, default).map(Duration::from_secs)
    }

    /// A whole number of milliseconds, at least 1.
    pub(super) fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.at_least_one(name, default).map(Duration::from_millis)
    }

    /// A count that must be at least 1.
    pub(super) fn at_least_one(
        &self,
        name: &'static str,
        default: u64,
    ) -> Result<u64, ConfigError> {
        match self.number(name, default)? {
            0 => Err(ConfigError::new(name, "must be at least 1")),
            n => Ok(n),
        }
    }

    /// `true` or `false`.
    pub(super) fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(ConfigError::new(
                name,
                format!("`{other}` is not true or false"),
            )),
        }
    }
}
