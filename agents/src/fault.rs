//! Rehearsal faults: make an agent panic or run slow, so drills can prove recovery.
//!
//! The table is shared by every plant supervisor of a process; the master only writes to it
//! when fault injection is enabled in its configuration.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Faults armed for one (plant, agent kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fault {
    /// The next N tasks panic inside the agent.
    pub panic_next: u32,
    /// Every task first sleeps this long.
    pub delay: Duration,
}

/// What the agent must do before running one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// Run normally after an optional delay.
    Run(Duration),
    /// Panic.
    Panic,
}

/// Shared fault table keyed by (plant id, canonical kind).
#[derive(Debug, Clone, Default)]
pub struct FaultTable(Arc<Mutex<HashMap<(String, String), Fault>>>);

impl FaultTable {
    /// Arms (or with a default `Fault`, clears) faults for an agent.
    pub fn set(&self, plant: &str, kind: &str, fault: Fault) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (plant.to_string(), kind.to_string());
        if fault == Fault::default() {
            t.remove(&key);
        } else {
            t.insert(key, fault);
        }
    }

    /// Consumes one armed panic, if any, and returns what to do.
    pub fn take(&self, plant: &str, kind: &str) -> Injected {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_empty() {
            return Injected::Run(Duration::ZERO);
        }
        match t.get_mut(&(plant.to_string(), kind.to_string())) {
            Some(f) if f.panic_next > 0 => {
                f.panic_next -= 1;
                Injected::Panic
            }
            Some(f) => Injected::Run(f.delay),
            None => Injected::Run(Duration::ZERO),
        }
    }
}
