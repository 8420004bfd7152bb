//! Cairn's placement selectors: given the alive, non-draining datanodes and the regions of a new
//! (or growing) table, decide which node leads each region and which hold its followers.
//!
//! Everything here is pure: no I/O, no clock, no global randomness. The leader's scheduler hands in
//! a snapshot and executes the returned [`Placement`]; the same inputs and selector state always
//! give the same answer, so decisions can be replayed in tests and simulations.
//!
//! - [`RoundRobin`] rotates leaders over nodes and remembers where it stopped.
//! - [`LoadBased`] prefers nodes with fewer regions and less traffic.
//! - [`LabelAware`] spreads over the values of a label (zone, rack) first, then by load.
//!
//! [`SelectorKind`] builds one from its configuration name.

mod kind;
mod label_aware;
mod load;
mod load_based;
mod placement;
mod round_robin;

#[cfg(test)]
mod property_tests;
#[cfg(test)]
mod test_support;

pub use kind::{SelectorKind, UnknownSelector};
pub use label_aware::LabelAware;
pub use load::LoadWeights;
pub use load_based::LoadBased;
pub use placement::{
    Candidate, Placement, PlacementRequest, RegionPlacement, SelectError, Selector,
};
pub use round_robin::RoundRobin;
