//! Scenario files: a scenario is a TOML file naming the steps that set a cluster up and make
//! the change the schedulers must answer, like PD's simulator cases. The model
//! ([`super::build`]) and `cairn sim --scenario` play the same files, so a scenario means the
//! same thing in both; the five built in are in `crates/cairn-sched/scenarios/`, and a user's
//! own file plays the same way (`--scenario-file`).
//!
//! ```toml
//! name = "add-nodes"
//! about = "every datanode holds the tables; 2 empty ones join"
//! steps = [
//!     { start = "all" },       # datanodes start: "all" of the run's, or the first N
//!     { create-tables = 1.0 }, # this share of the tables is created, placed by the cluster
//!     { join = 2 },            # N more datanodes join, empty
//! ]
//! ```
//!
//! The other steps: `{ kill = "first" }` or `{ kill = "zone-of-first" }` (datanodes die),
//! `"failover"` (failover moves the killed nodes' regions), `"restart-killed"` (they come back,
//! empty), `"balance"` (the schedulers run until the cluster is balanced), and
//! `{ heat = { every = N, factor = F } }` (the first of every N tables carries F times its
//! load). Steps run with maintenance mode on; the measurement starts after the last.

use serde::Deserialize;

/// Steps a scenario may have.
pub const SCENARIO_STEPS_MAX: usize = 32;
/// Datanodes one `join` step may add.
pub const SCENARIO_JOIN_MAX: u64 = 64;
/// The largest load factor of a `heat` step.
pub const SCENARIO_HEAT_FACTOR_MAX: f64 = 1_000.0;
/// Longest scenario file, bytes.
pub const SCENARIO_FILE_BYTES_MAX: usize = 64 * 1024;

/// The scenarios that come with Cairn, by name, as their files.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("add-nodes", include_str!("../../scenarios/add-nodes.toml")),
    (
        "remove-node",
        include_str!("../../scenarios/remove-node.toml"),
    ),
    ("hot-table", include_str!("../../scenarios/hot-table.toml")),
    (
        "zone-outage",
        include_str!("../../scenarios/zone-outage.toml"),
    ),
    (
        "half-on-one",
        include_str!("../../scenarios/half-on-one.toml"),
    ),
];

/// Which datanodes a `start` step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartNodes {
    /// Every datanode of the run not started yet.
    All,
    /// The first N of the run's datanodes (those not started yet).
    First(u64),
}

/// Which datanodes a `kill` step kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Victims {
    /// The run's first datanode.
    First,
    /// Every started datanode in the first datanode's zone.
    ZoneOfFirst,
}

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioStep {
    Start(StartNodes),
    /// This share of the scenario's tables is created, placed over the live datanodes.
    CreateTables(f64),
    /// Datanodes beyond the run's count join, empty.
    Join(u64),
    Kill(Victims),
    /// Failover moves every killed node's regions (the balancing schedulers paused).
    Failover,
    /// The killed datanodes come back, empty.
    RestartKilled,
    /// The schedulers run until the cluster is balanced.
    Balance,
    /// The first of every `every` tables (in creation order) carries `factor` times its load.
    Heat {
        every: u64,
        factor: f64,
    },
}

/// A scenario as its file gives it, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioSpec {
    pub name: String,
    pub about: String,
    pub steps: Vec<ScenarioStep>,
}

/// The file's form; [`ScenarioSpec::parse`] checks it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    #[serde(default)]
    about: String,
    steps: Vec<FileStep>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
enum FileStep {
    Start(StartValue),
    CreateTables(f64),
    Join(u64),
    Kill(Victims),
    Failover,
    RestartKilled,
    Balance,
    Heat { every: u64, factor: f64 },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StartValue {
    Count(u64),
    Word(String),
}

impl ScenarioSpec {
    /// A built-in scenario by name.
    pub fn built_in(name: &str) -> Option<ScenarioSpec> {
        let (_, text) = BUILT_IN.iter().find(|(n, _)| *n == name)?;
        Some(ScenarioSpec::parse(text).expect("a built-in scenario file is valid"))
    }

    /// Reads and checks a scenario file's text; the error names the step and field at fault.
    pub fn parse(text: &str) -> Result<ScenarioSpec, String> {
        if text.len() > SCENARIO_FILE_BYTES_MAX {
            return Err(format!(
                "{} bytes exceed scenario_file_bytes_max {SCENARIO_FILE_BYTES_MAX}",
                text.len()
            ));
        }
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        if file.steps.is_empty() || file.steps.len() > SCENARIO_STEPS_MAX {
            return Err(format!(
                "steps: {} steps; a scenario has 1..={SCENARIO_STEPS_MAX} (scenario_steps_max)",
                file.steps.len()
            ));
        }
        let mut steps = Vec::with_capacity(file.steps.len());
        let (mut created, mut killed, mut started) = (0.0, false, false);
        for (i, step) in file.steps.into_iter().enumerate() {
            let at = |field: &str, why: String| format!("steps[{i}].{field}: {why}");
            let step = match step {
                FileStep::Start(StartValue::Word(w)) if w == "all" => {
                    ScenarioStep::Start(StartNodes::All)
                }
                FileStep::Start(StartValue::Word(w)) => {
                    return Err(at(
                        "start",
                        format!("{w:?}: \"all\" or a count of datanodes"),
                    ))
                }
                FileStep::Start(StartValue::Count(0)) => {
                    return Err(at("start", "a count of at least 1".into()))
                }
                FileStep::Start(StartValue::Count(n)) => ScenarioStep::Start(StartNodes::First(n)),
                FileStep::CreateTables(share) => {
                    created += share;
                    if !(share > 0.0 && created <= 1.0 + 1e-9) {
                        return Err(at(
                            "create-tables",
                            format!(
                                "{share}: a share of the tables above 0, all shares together \
                                 at most 1"
                            ),
                        ));
                    }
                    ScenarioStep::CreateTables(share)
                }
                FileStep::Join(n) if n == 0 || n > SCENARIO_JOIN_MAX => {
                    return Err(at(
                        "join",
                        format!("{n}: 1..={SCENARIO_JOIN_MAX} datanodes (scenario_join_max)"),
                    ))
                }
                FileStep::Join(n) => ScenarioStep::Join(n),
                FileStep::Kill(v) => {
                    killed = true;
                    ScenarioStep::Kill(v)
                }
                FileStep::Failover | FileStep::RestartKilled if !killed => {
                    return Err(at("", "comes after a kill step".into()))
                }
                FileStep::Failover => ScenarioStep::Failover,
                FileStep::RestartKilled => {
                    killed = false;
                    ScenarioStep::RestartKilled
                }
                FileStep::Balance => ScenarioStep::Balance,
                FileStep::Heat { every: 0, .. } => {
                    return Err(at("heat.every", "at least 1".into()))
                }
                FileStep::Heat { factor, .. }
                    if !(factor > 0.0 && factor <= SCENARIO_HEAT_FACTOR_MAX) =>
                {
                    return Err(at(
                        "heat.factor",
                        format!(
                            "{factor}: above 0, at most {SCENARIO_HEAT_FACTOR_MAX} \
                             (scenario_heat_factor_max)"
                        ),
                    ))
                }
                FileStep::Heat { every, factor } => ScenarioStep::Heat { every, factor },
            };
            if !started && !matches!(step, ScenarioStep::Start(_)) {
                return Err(at(
                    "",
                    "the first step starts datanodes ({ start = ... })".into(),
                ));
            }
            started = true;
            steps.push(step);
        }
        if created <= 0.0 {
            return Err("steps: no create-tables step: the scenario has no regions".into());
        }
        Ok(ScenarioSpec {
            name: file.name,
            about: file.about,
            steps,
        })
    }

    /// Datanodes the `join` steps add beyond the run's count.
    pub fn joining(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| match s {
                ScenarioStep::Join(n) => *n,
                _ => 0,
            })
            .sum()
    }

    /// Whether a step kills a zone (the run needs a datanode in each zone).
    pub fn kills_a_zone(&self) -> bool {
        self.steps
            .contains(&ScenarioStep::Kill(Victims::ZoneOfFirst))
    }
}

/// How many of `total` tables exist once the shares up to a step, `created` in all, are created.
pub fn tables_after(created: f64, total: u64) -> u64 {
    ((created * total as f64).round() as u64).min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_reads_and_is_named_as_its_file() {
        for (name, _) in BUILT_IN {
            assert_eq!(ScenarioSpec::built_in(name).unwrap().name, *name);
        }
        let s = ScenarioSpec::built_in("zone-outage").unwrap();
        assert_eq!(
            s.steps,
            [
                ScenarioStep::Start(StartNodes::All),
                ScenarioStep::CreateTables(1.0),
                ScenarioStep::Kill(Victims::ZoneOfFirst),
                ScenarioStep::Failover,
                ScenarioStep::RestartKilled,
            ]
        );
        assert!(s.kills_a_zone());
        assert_eq!(ScenarioSpec::built_in("add-nodes").unwrap().joining(), 2);
        assert!(ScenarioSpec::built_in("meteor").is_none());
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_step_and_field() {
        let bad = |steps: &str| {
            ScenarioSpec::parse(&format!("name = \"x\"\nsteps = [{steps}]")).unwrap_err()
        };
        let start = "{ start = \"all\" }, ";
        assert!(bad("").contains("steps: 0 steps"));
        assert!(bad("{ create-tables = 1.0 }").contains("steps[0].: the first step starts"));
        assert!(bad("{ start = \"most\" }").contains("steps[0].start: \"most\""));
        assert!(bad("{ start = 0 }").contains("steps[0].start: a count of at least 1"));
        let over = format!("{start}{{ create-tables = 0.6 }}, {{ create-tables = 0.6 }}");
        assert!(bad(&over).contains("steps[2].create-tables: 0.6"));
        assert!(bad(start).contains("no create-tables step"));
        assert!(bad(&format!("{start}{{ join = 65 }}")).contains("steps[1].join: 65"));
        assert!(bad(&format!("{start}\"failover\"")).contains("steps[1].: comes after a kill"));
        let heat = format!("{start}{{ heat = {{ every = 0, factor = 2.0 }} }}");
        assert!(bad(&heat).contains("steps[1].heat.every"));
        let heat = format!("{start}{{ heat = {{ every = 5, factor = 1e9 }} }}");
        assert!(bad(&heat).contains("steps[1].heat.factor"));
        // Unknown steps, victims and fields are named by the TOML reader.
        assert!(bad(&format!("{start}\"explode\"")).contains("explode"));
        assert!(bad(&format!("{start}{{ kill = \"last\" }}")).contains("last"));
        let unknown = ScenarioSpec::parse("name = \"x\"\ncolour = 1\nsteps = []").unwrap_err();
        assert!(unknown.contains("colour"), "{unknown}");
        let big = "#".repeat(SCENARIO_FILE_BYTES_MAX + 1);
        assert!(ScenarioSpec::parse(&big)
            .unwrap_err()
            .contains("scenario_file_bytes_max"));
    }

    #[test]
    fn shares_of_tables_round_to_whole_tables() {
        assert_eq!(tables_after(0.5, 9), 5);
        assert_eq!(tables_after(1.0, 9), 9);
        assert_eq!(tables_after(1.0 + 1e-12, 9), 9);
    }
}
