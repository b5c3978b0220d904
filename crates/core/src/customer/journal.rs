//! The journal of a customer operation in progress: which steps are done. A crash leaves it
//! behind; running the same command again finishes the job, `--abort` undoes it.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};
use costplus_fs::{WriteOptions, write_atomic};

/// Which operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Creating a customer.
    Provision,
    /// Removing a customer.
    Deprovision,
    /// Changing a customer's password.
    Rotate,
}

/// A journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Operation.
    pub operation: Operation,
    /// Server name.
    pub server: String,
    /// Customer.
    pub customer: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Steps completed, in order.
    pub done: Vec<String>,
}

/// The directory of `server`'s journals (and the per-customer locks beside them).
pub fn dir(state_dir: &Path, server: &str) -> PathBuf {
    state_dir.join("journal").join(server)
}

/// Where journals live: `<state_dir>/journal/<server>/<customer>.json`.
pub fn path(state_dir: &Path, server: &str, customer: &str) -> PathBuf {
    dir(state_dir, server).join(format!("{customer}.json"))
}

impl Journal {
    /// Read the journal of `customer`, if one exists.
    pub fn load(state_dir: &Path, server: &str, customer: &str) -> Result<Option<Journal>> {
        let p = path(state_dir, server, customer);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Invalid(format!("{}: damaged journal: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// A new journal (not yet written).
    pub fn new(operation: Operation, server: &str, customer: &str) -> Self {
        Journal {
            operation,
            server: server.into(),
            customer: customer.into(),
            started_at: Utc::now(),
            done: Vec::new(),
        }
    }

    /// Whether a step is done.
    pub fn is_done(&self, step: &str) -> bool {
        self.done.iter().any(|d| d == step)
    }

    /// Record a step as done (durably) before the next one starts.
    pub fn mark(&mut self, state_dir: &Path, step: &str) -> Result<()> {
        self.note(step);
        self.save(state_dir)
    }

    /// Record a step as done in memory only; [`Journal::save`] or [`Journal::save_all`] makes
    /// it durable.
    pub fn note(&mut self, step: &str) {
        if !self.is_done(step) {
            self.done.push(step.into());
        }
    }

    /// Write the journal atomically.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        let p = path(state_dir, &self.server, &self.customer);
        if let Some(dir) = p.parent() {
            costplus_fs::create_dir_with_mode(dir, 0o700)?;
        }
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&p, &text, &WriteOptions::private())?;
        Ok(())
    }

    /// Write many journals, each atomically, with their syncs batched (see
    /// [`costplus_fs::write_atomic_many`]): what a batch of customers costs one sync round.
    pub fn save_all(state_dir: &Path, journals: &[Journal]) -> Result<()> {
        let mut files = Vec::with_capacity(journals.len());
        let mut dirs: Vec<PathBuf> = Vec::new();
        for j in journals {
            let p = path(state_dir, &j.server, &j.customer);
            if let Some(dir) = p.parent()
                && !dirs.iter().any(|d| d == dir)
            {
                costplus_fs::create_dir_with_mode(dir, 0o700)?;
                dirs.push(dir.to_path_buf());
            }
            let text = serde_json::to_vec_pretty(j).map_err(|e| Error::Invalid(e.to_string()))?;
            files.push((p, text));
        }
        costplus_fs::write_atomic_many(&files, &WriteOptions::private())?;
        Ok(())
    }

    /// Remove the journal: the operation is complete (or undone).
    pub fn finish(&self, state_dir: &Path) -> Result<()> {
        let p = path(state_dir, &self.server, &self.customer);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Every journal of `server`.
    pub fn list(state_dir: &Path, server: &str) -> Result<Vec<Journal>> {
        let dir = dir(state_dir, server);
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(Error::Io {
                    path: dir,
                    source: e,
                });
            }
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(customer) = name.strip_suffix(".json")
                && let Some(j) = Journal::load(state_dir, server, customer)?
            {
                out.push(j);
            }
        }
        out.sort_by(|a, b| a.customer.cmp(&b.customer));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::new(Operation::Provision, "s", "acme");
        j.mark(dir.path(), "role").unwrap();
        j.mark(dir.path(), "role").unwrap();
        let back = Journal::load(dir.path(), "s", "acme").unwrap().unwrap();
        assert_eq!(back.done, vec!["role".to_string()]);
        assert_eq!(Journal::list(dir.path(), "s").unwrap().len(), 1);
        back.finish(dir.path()).unwrap();
        assert!(Journal::load(dir.path(), "s", "acme").unwrap().is_none());
    }

    #[test]
    fn journals_saved_together_load_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<Journal> = ["ann", "bob", "cat"]
            .iter()
            .map(|c| Journal::new(Operation::Provision, "s", c))
            .collect();
        Journal::save_all(dir.path(), &all).unwrap();
        assert_eq!(Journal::list(dir.path(), "s").unwrap(), all);
        for j in &mut all {
            j.note("role");
            j.note("role");
        }
        Journal::save_all(dir.path(), &all).unwrap();
        let bob = Journal::load(dir.path(), "s", "bob").unwrap().unwrap();
        assert_eq!(bob.done, vec!["role".to_string()]);
    }
}
