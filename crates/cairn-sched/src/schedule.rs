//! What every scheduler is: the [`Schedule`] boundary (plan moves into a pass's tally, list
//! and set parameters), and the typed error of a refused setting with its parsing helpers.
//! The schedulers (one file each) and the set that runs them ([`crate::Schedulers`]) sit above.

use std::fmt;

use crate::cluster::Tally;

/// A scheduler's configuration knob was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown scheduler {name:?}: expected one of {known}")]
    UnknownScheduler { name: String, known: String },
    /// `expected` names the parameters there are, or says there are none.
    #[error("scheduler {scheduler}: unknown parameter {key:?}: {expected}")]
    UnknownParam {
        scheduler: &'static str,
        key: String,
        expected: String,
    },
    #[error("scheduler {scheduler}: {key} = {value:?}: {why}")]
    BadValue {
        scheduler: &'static str,
        key: String,
        value: String,
        why: String,
    },
}

/// One scheduler's behaviour; implementations live one per file.
pub(crate) trait Schedule: Send + Sync + fmt::Debug {
    fn name(&self) -> &'static str;
    fn describe(&self) -> &'static str;
    /// Plans moves into `tally` (through [`Tally::apply`]).
    fn schedule(&self, tally: &mut Tally);
    fn params(&self) -> Vec<(&'static str, String)>;
    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError>;
    /// The load tolerance and floor every scheduler must respect (hot-region's, whether it is
    /// on or not: balancing counts must not make a node hot either way).
    fn load_limits(&self) -> Option<(f64, f64)> {
        None
    }
    /// Whether it carries out an operator's request (a drain) rather than evening something
    /// out: it runs in maintenance mode too.
    fn requested(&self) -> bool {
        false
    }
}

/// Parses a fraction parameter in `[min, max]`.
pub(crate) fn fraction(
    scheduler: &'static str,
    key: &str,
    value: &str,
    min: f64,
    max: f64,
) -> Result<f64, ConfigError> {
    let bad = |why: String| ConfigError::BadValue {
        scheduler,
        key: key.to_string(),
        value: value.to_string(),
        why,
    };
    let v: f64 = value.parse().map_err(|_| bad("not a number".to_string()))?;
    if !(v.is_finite() && v >= min && v <= max) {
        return Err(bad(format!("must be between {min} and {max}")));
    }
    Ok(v)
}

/// Parses a switch parameter: `true` or `false`.
pub(crate) fn flag(scheduler: &'static str, key: &str, value: &str) -> Result<bool, ConfigError> {
    value.parse().map_err(|_| ConfigError::BadValue {
        scheduler,
        key: key.to_string(),
        value: value.to_string(),
        why: "must be true or false".to_string(),
    })
}

/// The error for a parameter `scheduler` does not have.
pub(crate) fn unknown_param(scheduler: &'static str, key: &str, known: &[&str]) -> ConfigError {
    // "expected one of " with nothing after it would leave a user guessing.
    let expected = if known.is_empty() {
        "it takes no parameters".to_string()
    } else {
        format!("expected one of {}", known.join(", "))
    };
    ConfigError::UnknownParam {
        scheduler,
        key: key.to_string(),
        expected,
    }
}
