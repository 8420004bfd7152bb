//! Choosing a selector by name, as configuration and the admin API spell it.

use std::fmt;
use std::str::FromStr;

use crate::label_aware::LabelAware;
use crate::load_based::LoadBased;
use crate::placement::Selector;
use crate::round_robin::RoundRobin;

/// The selectors Cairn ships, by configuration name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectorKind {
    /// `round_robin`: [`RoundRobin`].
    RoundRobin,
    /// `load_based`: [`LoadBased`] with default weights.
    LoadBased,
    /// `label_aware`: [`LabelAware`] over the configured spread label.
    LabelAware,
}

/// A selector name that is not one of [`SelectorKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown selector {0:?}: expected one of round_robin, load_based, label_aware")]
pub struct UnknownSelector(pub String);

impl SelectorKind {
    /// Every kind, in the order help texts list them.
    pub const ALL: [SelectorKind; 3] = [
        SelectorKind::RoundRobin,
        SelectorKind::LoadBased,
        SelectorKind::LabelAware,
    ];

    /// The configuration name; `FromStr` accepts exactly these.
    pub fn as_str(&self) -> &'static str {
        match self {
            SelectorKind::RoundRobin => "round_robin",
            SelectorKind::LoadBased => "load_based",
            SelectorKind::LabelAware => "label_aware",
        }
    }

    /// A fresh selector of this kind. `spread_label` (e.g. `"zone"`) is used only by
    /// `label_aware`; the others ignore it so one configuration shape serves every kind.
    pub fn build(&self, spread_label: &str) -> Box<dyn Selector> {
        match self {
            SelectorKind::RoundRobin => Box::new(RoundRobin::new()),
            SelectorKind::LoadBased => Box::new(LoadBased::default()),
            SelectorKind::LabelAware => Box::new(LabelAware::new(spread_label)),
        }
    }
}

impl FromStr for SelectorKind {
    type Err = UnknownSelector;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SelectorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownSelector(s.to_string()))
    }
}

impl fmt::Display for SelectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_built_selector() {
        for kind in SelectorKind::ALL {
            assert_eq!(kind.as_str().parse::<SelectorKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            assert_eq!(kind.build("zone").name(), kind.as_str());
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let err = "random".parse::<SelectorKind>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"random\""), "{text}");
        for kind in SelectorKind::ALL {
            assert!(text.contains(kind.as_str()), "{text}");
        }
        // Names are exact: configuration typos should fail loudly, not guess.
        assert!("Round_Robin".parse::<SelectorKind>().is_err());
        assert!("load-based".parse::<SelectorKind>().is_err());
    }
}
