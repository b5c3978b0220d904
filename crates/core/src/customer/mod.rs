//! Customers: provision, deprovision, rotate, limit, list with drift detection, and the proof
//! that no customer can reach another's database.
//!
//! Every operation is a list of idempotent steps recorded in a [`journal::Journal`]: a crash
//! at any point leaves a journal; running the same command again finishes the job and
//! `--abort` undoes a half-done provisioning. Failpoints (`fail` crate, feature `failpoints`)
//! sit at every step boundary so tests can prove it.
//!
//! Data flow of a provisioning: validate the name -> vault record `pending` (the password is
//! generated here and never leaves the vault/our memory) -> `CREATE ROLE ... PASSWORD
//! '<SCRAM verifier>'` -> `CREATE DATABASE ... OWNER` -> revoke CONNECT/TEMP from PUBLIC, grant
//! CONNECT -> lock the public schema -> the customer's `hostssl` rules in the managed pg_hba
//! block, validated by the server and reloaded -> vault record `active` -> journal removed.

pub mod isolation;
pub mod journal;
pub mod names;
mod ops;
pub mod password;

pub use ops::*;
