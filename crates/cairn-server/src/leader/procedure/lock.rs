//! Per-resource locks for procedures, held in the leader's memory.
//!
//! Only the leader runs procedures, so the locks need not be replicated: a procedure records the
//! locks it holds, and a new leader takes them again (before serving any DDL) when it resumes
//! the procedure. A database is locked shared by the table DDL inside it and exclusively by
//! dropping it; a table name is locked exclusively by any DDL on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The lock name of a database.
pub fn database_lock(catalog: &str, schema: &str) -> String {
    format!("database/{catalog}/{schema}")
}

/// The lock name of a table name.
pub fn table_lock(catalog: &str, schema: &str, name: &str) -> String {
    format!("table/{catalog}/{schema}/{name}")
}

/// The locks of DDL on one table: its database shared (so the database cannot be dropped
/// meanwhile), its name exclusive.
pub fn table_ddl_locks(name: &cairn_meta::TableName) -> LockSet {
    vec![
        (database_lock(&name.catalog, &name.schema), Mode::Shared),
        (
            table_lock(&name.catalog, &name.schema, &name.name),
            Mode::Exclusive,
        ),
    ]
}

/// How a procedure holds a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// Lock names a procedure takes, in the order it takes them.
pub type LockSet = Vec<(String, Mode)>;

enum Guard {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// Held locks; dropping it releases them.
pub struct Held {
    guards: Vec<(String, Guard)>,
    table: Arc<LockTable>,
}

impl Held {
    /// One set of held locks from two (released together).
    pub fn merge(mut self, mut other: Held) -> Held {
        self.guards.append(&mut other.guards);
        self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let names: Vec<String> = self.guards.drain(..).map(|(n, _)| n).collect();
        self.table.forget_unused(&names);
    }
}

/// The leader's locks by name. Entries exist only while someone holds or waits for them.
#[derive(Default)]
pub struct LockTable {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl LockTable {
    fn entry(&self, name: &str) -> Arc<RwLock<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_string()).or_default().clone()
    }

    /// Takes every lock of `set`. Callers order sets the same way (database before table) so
    /// two procedures never wait for each other.
    pub async fn acquire(self: &Arc<Self>, set: &LockSet) -> Held {
        let mut guards = Vec::with_capacity(set.len());
        for (name, mode) in set {
            let lock = self.entry(name);
            let g = match mode {
                Mode::Shared => Guard::Shared(lock.read_owned().await),
                Mode::Exclusive => Guard::Exclusive(lock.write_owned().await),
            };
            guards.push((name.clone(), g));
        }
        Held {
            guards,
            table: self.clone(),
        }
    }

    /// Takes every lock of `set` if none is held or awaited by anyone else; otherwise takes none
    /// and returns the first lock that is busy.
    pub fn try_acquire(self: &Arc<Self>, set: &LockSet) -> Result<Held, String> {
        let mut held = Held {
            guards: Vec::with_capacity(set.len()),
            table: self.clone(),
        };
        for (name, mode) in set {
            let lock = self.entry(name);
            let g = match mode {
                Mode::Shared => lock.try_read_owned().map(Guard::Shared),
                Mode::Exclusive => lock.try_write_owned().map(Guard::Exclusive),
            };
            match g {
                Ok(g) => held.guards.push((name.clone(), g)),
                // Dropping `held` releases what was taken and forgets unused entries; the busy
                // one is held by someone else, so it stays.
                Err(_) => return Err(name.clone()),
            }
        }
        Ok(held)
    }

    fn forget_unused(&self, names: &[String]) {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        for n in names {
            // Only our map entry refers to it: nobody holds or waits.
            if m.get(n).is_some_and(|l| Arc::strong_count(l) == 1) {
                m.remove(n);
            }
        }
    }

    /// Lock entries alive (held or awaited).
    pub fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn exclusive_waits_for_shared_and_entries_are_forgotten() {
        let t = Arc::new(LockTable::default());
        let db = vec![(database_lock("c", "s"), Mode::Shared)];
        let a = t.acquire(&db).await;
        let b = t.acquire(&db).await; // shared twice is fine
        let t2 = t.clone();
        let drop_db = tokio::spawn(async move {
            t2.acquire(&vec![(database_lock("c", "s"), Mode::Exclusive)])
                .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !drop_db.is_finished(),
            "exclusive must wait for shared holders"
        );
        drop(a);
        drop(b);
        let held = tokio::time::timeout(Duration::from_secs(5), drop_db)
            .await
            .expect("exclusive acquired after release")
            .unwrap();
        drop(held);
        assert!(t.is_empty(), "no entry outlives its holders");
    }

    #[tokio::test]
    async fn try_acquire_takes_all_or_nothing() {
        let t = Arc::new(LockTable::default());
        let region = vec![("region/7".to_string(), Mode::Exclusive)];
        let first = t.try_acquire(&region).expect("free");
        let both = vec![
            ("region/8".to_string(), Mode::Exclusive),
            ("region/7".to_string(), Mode::Exclusive),
        ];
        assert_eq!(t.try_acquire(&both).err().as_deref(), Some("region/7"));
        // region/8 was released again: only region/7 is still known.
        assert_eq!(t.len(), 1);
        let other = t
            .try_acquire(&vec![("region/8".to_string(), Mode::Exclusive)])
            .expect("region/8 is free");
        let merged = first.merge(other);
        assert_eq!(t.len(), 2);
        drop(merged);
        assert!(t.is_empty());
    }
}
