//! The PostgreSQL side: `archive_mode`, `archive_command` and `wal_level` through
//! `ALTER SYSTEM`, and whether the server must restart for them.

use serde::Serialize;
use tokio_postgres::Client;

use crate::{BackupConfig, Result, pg_err, quote_literal};

/// One setting to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettingChange {
    /// Setting name.
    pub name: String,
    /// Current value.
    pub from: String,
    /// Wanted value.
    pub to: String,
    /// Takes effect only after a restart (`archive_mode`, `wal_level`).
    pub needs_restart: bool,
}

/// What [`plan`] found and [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchivingReport {
    /// Settings that differ(ed) from what backups need.
    pub changes: Vec<SettingChange>,
    /// Whether the server must be restarted before archiving works.
    pub restart_needed: bool,
    /// Settings PostgreSQL itself reports as `pending_restart` (after [`apply`]).
    pub pending_restart: Vec<String>,
}

/// The settings backups need, compared with the running server.
pub async fn plan(client: &Client, cfg: &BackupConfig) -> Result<ArchivingReport> {
    let current = |name: &'static str| async move {
        let row = client
            .query_one(
                "SELECT setting, pending_restart FROM pg_settings WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(pg_err("reading pg_settings"))?;
        Ok::<_, crate::Error>((row.get::<_, String>(0), row.get::<_, bool>(1)))
    };
    let mut changes = Vec::new();
    let (mode, _) = current("archive_mode").await?;
    if mode != "on" && mode != "always" {
        changes.push(SettingChange {
            name: "archive_mode".into(),
            from: mode,
            to: "on".into(),
            needs_restart: true,
        });
    }
    let (command, _) = current("archive_command").await?;
    let wanted = crate::conf::archive_command(cfg);
    if command != wanted {
        changes.push(SettingChange {
            name: "archive_command".into(),
            from: command,
            to: wanted,
            needs_restart: false,
        });
    }
    let (level, _) = current("wal_level").await?;
    if level == "minimal" {
        changes.push(SettingChange {
            name: "wal_level".into(),
            from: level,
            to: "replica".into(),
            needs_restart: true,
        });
    }
    let pending = pending_restart(client).await?;
    let restart_needed = changes.iter().any(|c| c.needs_restart)
        || pending
            .iter()
            .any(|p| p == "archive_mode" || p == "wal_level");
    Ok(ArchivingReport {
        changes,
        restart_needed,
        pending_restart: pending,
    })
}

/// Apply the changes of [`plan`] with `ALTER SYSTEM` and reload. The report says whether a
/// restart is still needed; this function never restarts the server.
pub async fn apply(client: &Client, cfg: &BackupConfig) -> Result<ArchivingReport> {
    let mut report = plan(client, cfg).await?;
    for c in &report.changes {
        client
            .batch_execute(&format!(
                "ALTER SYSTEM SET {} = {}",
                c.name,
                quote_literal(&c.to)
            ))
            .await
            .map_err(pg_err(&format!("ALTER SYSTEM SET {}", c.name)))?;
    }
    if !report.changes.is_empty() {
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(pg_err("pg_reload_conf()"))?;
        // The reload is asynchronous; give the postmaster a moment before asking.
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            report.pending_restart = pending_restart(client).await?;
            if !report.restart_needed || !report.pending_restart.is_empty() {
                break;
            }
        }
    }
    Ok(report)
}

async fn pending_restart(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name",
            &[],
        )
        .await
        .map_err(pg_err("reading pg_settings.pending_restart"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
