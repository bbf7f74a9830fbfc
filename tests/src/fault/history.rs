//! Operation histories: what each client invoked, when, and how it ended.
//!
//! Times are nanoseconds on one monotonic clock ([`Clock`]) shared by every
//! client of a run, so "A returned before B was invoked" is meaningful.

use std::sync::Mutex;
use std::time::Instant;

/// How an operation ended, as far as the client can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// It took effect and the client saw the result.
    Ok,
    /// It definitely did not take effect (e.g. a read that failed, a write
    /// refused before it was proposed).
    Fail,
    /// Unknown: it may or may not have taken effect (timeout, broken
    /// connection, leader change while in flight).
    Info,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// The monotonic clock of a run.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }
}

impl Clock {
    /// Nanoseconds since the clock was created.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// One completed (or abandoned) operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<O> {
    /// Which client (a sequential process) issued it.
    pub client: usize,
    pub invoke: u64,
    /// Return time; [`Record::NEVER`] for `Info` operations (they may take
    /// effect at any time after `invoke`).
    pub complete: u64,
    pub outcome: Outcome,
    pub op: O,
}

impl<O> Record<O> {
    pub const NEVER: u64 = u64::MAX;
}

/// An append-only, thread-safe list of records.
#[derive(Debug)]
pub struct History<O> {
    records: Mutex<Vec<Record<O>>>,
}

impl<O> Default for History<O> {
    fn default() -> Self {
        History {
            records: Mutex::new(Vec::new()),
        }
    }
}

impl<O: Clone> History<O> {
    /// Records an operation. `Info` operations get `complete = NEVER`
    /// whatever `complete` says.
    pub fn push(&self, client: usize, invoke: u64, complete: u64, outcome: Outcome, op: O) {
        let complete = if outcome == Outcome::Info {
            Record::<O>::NEVER
        } else {
            complete
        };
        self.records.lock().unwrap().push(Record {
            client,
            invoke,
            complete,
            outcome,
            op,
        });
    }

    pub fn snapshot(&self) -> Vec<Record<O>> {
        self.records.lock().unwrap().clone()
    }

    /// (ok, fail, info) counts.
    pub fn counts(&self) -> [u64; 3] {
        let mut c = [0u64; 3];
        for r in self.records.lock().unwrap().iter() {
            c[r.outcome as usize] += 1;
        }
        c
    }
}
