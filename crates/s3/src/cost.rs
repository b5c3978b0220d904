//! The monthly bill of the offsite, before it arrives (pure arithmetic, no IO).
//!
//! Wasabi pay-as-you-go bills, per month:
//! - *timed active storage*: the average bytes stored during the month, but at least 1 TB
//!   (Wasabi's 1 TB = 1,024 GB; we count 2^40 bytes by default);
//! - *timed deleted storage*: an object deleted before it was stored 90 days is billed for the
//!   remaining days, on top of the active storage.
//!
//! The model is the steady state of a pgBackRest schedule: every `full_every_days` a full
//! backup, on the days between a differential (every `diff_every_days`) or an incremental
//! backup, and WAL archived evenly all day. A backup set (the full, the backups that depend on
//! it and the WAL written until the next full) is expired together, `K` days after its full:
//! - count retention (`repo2-retention-full=N`): when the (N+1)-th newer full completes,
//!   `K = N * F`;
//! - time retention (`repo2-retention-full-type=time`, `R` days): pgBackRest keeps the newest
//!   full older than `R` days, so a full goes when the *next* full turns `R` days old,
//!   `K = F + R`.
//!
//! An object written `d` days after its set's full lives `L = K - d` days. Per set (`F` days),
//! active storage is `sum(size * L)` byte-days and deleted storage `sum(size * max(0, 90 - L))`;
//! dividing by `F` gives the average bytes, hence TB-months per month.

use crate::ObjectInfo;
use crate::pgbackrest_info::Stanza;

/// Wasabi's minimum storage duration (pay-as-you-go).
pub const MIN_STORAGE_DAYS: f64 = 90.0;
/// Bytes in Wasabi's billing TB (1 TB = 1,024 GB).
pub const TB_BYTES: f64 = 1_099_511_627_776.0;

/// How long pgBackRest keeps backups in the repository.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Retention {
    /// `retention-full-type=count`: this many full backups.
    Count {
        /// Full backups kept.
        full: u32,
    },
    /// `retention-full-type=time`: full backups needed to restore to any point of this many days.
    Time {
        /// Days.
        days: u32,
    },
}

/// When backups run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Schedule {
    /// Days between full backups (`F`, at least 1).
    pub full_every_days: u32,
    /// Days between differential backups inside a cycle (0: none).
    pub diff_every_days: u32,
    /// An incremental backup on every other day of the cycle.
    pub incremental_daily: bool,
}

/// What the bill depends on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostInput {
    /// USD per TB-month.
    pub price_per_tb_month_usd: f64,
    /// Bytes in a billing TB ([`TB_BYTES`]).
    pub bytes_per_tb: f64,
    /// Minimum storage duration in days ([`MIN_STORAGE_DAYS`]).
    pub min_storage_days: f64,
    /// Minimum billed active storage in TB (1).
    pub min_billed_tb: f64,
    /// Bytes one full backup stores in the repository (compressed, encrypted).
    pub full_bytes: f64,
    /// Bytes one differential backup stores (average).
    pub diff_bytes: f64,
    /// Bytes one incremental backup stores (average).
    pub incr_bytes: f64,
    /// WAL bytes archived per day (compressed, encrypted).
    pub wal_bytes_per_day: f64,
    /// The schedule.
    pub schedule: Schedule,
    /// The retention.
    pub retention: Retention,
}

impl CostInput {
    /// Wasabi's prices and minimums, weekly full and daily incremental backups kept 90 days,
    /// and zero sizes (fill them in).
    pub fn example() -> Self {
        Self {
            price_per_tb_month_usd: crate::config::WASABI_PRICE_PER_TB_MONTH_USD,
            bytes_per_tb: TB_BYTES,
            min_storage_days: MIN_STORAGE_DAYS,
            min_billed_tb: 1.0,
            full_bytes: 0.0,
            diff_bytes: 0.0,
            incr_bytes: 0.0,
            wal_bytes_per_day: 0.0,
            schedule: Schedule {
                full_every_days: 7,
                diff_every_days: 0,
                incremental_daily: true,
            },
            retention: Retention::Time { days: 90 },
        }
    }
}

/// One class of objects in the estimate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClassCost {
    /// `full`, `diff`, `incr` or `wal`.
    pub class: &'static str,
    /// Average TB stored.
    pub active_tb: f64,
    /// TB-months of early-deletion charges per month.
    pub deleted_tb: f64,
    /// Shortest life of an object of this class, days.
    pub min_lifetime_days: f64,
    /// Longest life, days.
    pub max_lifetime_days: f64,
}

/// A retention that avoids early-deletion charges, and the bill with it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RetentionAdvice {
    /// The retention.
    pub retention: Retention,
    /// The monthly bill with it.
    pub monthly_usd: f64,
}

/// The estimate.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CostEstimate {
    /// The monthly bill, USD (rounded to cents).
    pub monthly_usd: f64,
    /// Average TB stored.
    pub active_tb: f64,
    /// TB-months billed per month for objects deleted before the minimum duration.
    pub deleted_tb: f64,
    /// USD for active storage (including the minimum charge).
    pub active_usd: f64,
    /// USD of the bill due to the 1 TB minimum (included in `active_usd`).
    pub minimum_charge_usd: f64,
    /// USD of the bill caused by early deletion.
    pub early_deletion_usd: f64,
    /// Shortest life of any object, days.
    pub shortest_lifetime_days: f64,
    /// The cheapest retention of the same kind that avoids early deletion (`None` when there
    /// is none to avoid).
    pub avoid_early_deletion: Option<RetentionAdvice>,
    /// Per class.
    pub classes: Vec<ClassCost>,
    /// The input.
    pub input: CostInput,
}

fn cents(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Days after its set's full at which a set expires (`K`).
pub fn set_lifetime_days(s: &Schedule, r: &Retention) -> f64 {
    let f = f64::from(s.full_every_days.max(1));
    match *r {
        Retention::Count { full } => f * f64::from(full.max(1)),
        Retention::Time { days } => f + f64::from(days),
    }
}

/// Byte-days of active and early-deleted storage of one set, per class.
fn per_set(input: &CostInput) -> Vec<(&'static str, f64, f64, f64, f64)> {
    let s = &input.schedule;
    let f = s.full_every_days.max(1);
    let k = set_lifetime_days(s, &input.retention);
    let m = input.min_storage_days;
    let mut out = Vec::new();
    let mut point = |class: &'static str, size: f64, days: &[u32]| {
        if days.is_empty() {
            return;
        }
        let (mut active, mut deleted) = (0.0, 0.0);
        let (mut lo, mut hi) = (f64::MAX, 0.0f64);
        for &d in days {
            let l = k - f64::from(d);
            active += size * l;
            deleted += size * (m - l).max(0.0);
            lo = lo.min(l);
            hi = hi.max(l);
        }
        out.push((class, active, deleted, lo, hi));
    };
    let diff_days: Vec<u32> = (1..f)
        .filter(|d| s.diff_every_days > 0 && d % s.diff_every_days == 0)
        .collect();
    let incr_days: Vec<u32> = (1..f)
        .filter(|d| !(s.diff_every_days > 0 && d % s.diff_every_days == 0) && s.incremental_daily)
        .collect();
    point("full", input.full_bytes, &[0]);
    point("diff", input.diff_bytes, &diff_days);
    point("incr", input.incr_bytes, &incr_days);
    // WAL written at t in [0, F) lives K - t: integrate.
    let ff = f64::from(f);
    let w = input.wal_bytes_per_day;
    let active = w * (ff * k - ff * ff / 2.0);
    let a = m - k;
    let deleted = if a >= 0.0 {
        w * (a * ff + ff * ff / 2.0)
    } else if a + ff <= 0.0 {
        0.0
    } else {
        w * (a + ff) * (a + ff) / 2.0
    };
    out.push(("wal", active, deleted, k - ff, k));
    out
}

/// Estimate the monthly bill.
pub fn estimate(input: &CostInput) -> CostEstimate {
    let mut e = bill(input);
    if e.early_deletion_usd > 0.0 {
        e.avoid_early_deletion = advise(input);
    }
    e
}

fn bill(input: &CostInput) -> CostEstimate {
    let f = f64::from(input.schedule.full_every_days.max(1));
    let tb = input.bytes_per_tb;
    let classes: Vec<ClassCost> = per_set(input)
        .into_iter()
        .map(|(class, active, deleted, lo, hi)| ClassCost {
            class,
            active_tb: active / f / tb,
            deleted_tb: deleted / f / tb,
            min_lifetime_days: lo,
            max_lifetime_days: hi,
        })
        .collect();
    let active_tb: f64 = classes.iter().map(|c| c.active_tb).sum();
    let deleted_tb: f64 = classes.iter().map(|c| c.deleted_tb).sum();
    let price = input.price_per_tb_month_usd;
    let billed_active = active_tb.max(input.min_billed_tb);
    let active_usd = price * billed_active;
    let early = price * deleted_tb;
    let shortest = classes
        .iter()
        .filter(|c| c.active_tb > 0.0)
        .map(|c| c.min_lifetime_days)
        .fold(f64::INFINITY, f64::min);
    CostEstimate {
        monthly_usd: cents(active_usd + early),
        active_tb,
        deleted_tb,
        active_usd: cents(active_usd),
        minimum_charge_usd: cents(price * (billed_active - active_tb)),
        early_deletion_usd: cents(early),
        shortest_lifetime_days: if shortest.is_finite() { shortest } else { 0.0 },
        avoid_early_deletion: None,
        classes,
        input: input.clone(),
    }
}

/// The smallest retention of the same kind with no early-deletion charge.
fn advise(input: &CostInput) -> Option<RetentionAdvice> {
    let candidates: Box<dyn Iterator<Item = Retention>> = match input.retention {
        Retention::Count { full } => Box::new((full..=1000).map(|n| Retention::Count { full: n })),
        Retention::Time { days } => Box::new((days..=3650).map(|d| Retention::Time { days: d })),
    };
    for r in candidates {
        let trial = CostInput {
            retention: r,
            ..input.clone()
        };
        let b = bill(&trial);
        if b.deleted_tb <= 0.0 {
            return Some(RetentionAdvice {
                retention: r,
                monthly_usd: b.monthly_usd,
            });
        }
    }
    None
}

/// Sizes measured for the model.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Measured {
    /// Latest full backup's bytes.
    pub full_bytes: Option<f64>,
    /// Average differential backup bytes.
    pub diff_bytes: Option<f64>,
    /// Average incremental backup bytes.
    pub incr_bytes: Option<f64>,
    /// WAL bytes per day.
    pub wal_bytes_per_day: Option<f64>,
    /// Where the numbers come from.
    pub source: Vec<String>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Backup sizes from pgBackRest's `info --output=json` (repository delta of each backup in
/// repository `repo`).
pub fn measure_info(stanzas: &[Stanza], repo: u32) -> Measured {
    let mut full = Vec::new();
    let (mut diff, mut incr) = (Vec::new(), Vec::new());
    for s in stanzas {
        for b in s.backups_in(repo) {
            let d = b.info.repository.delta as f64;
            match b.kind.as_str() {
                "full" => full.push(d),
                "diff" => diff.push(d),
                _ => incr.push(d),
            }
        }
    }
    Measured {
        full_bytes: full.last().copied(),
        diff_bytes: mean(&diff),
        incr_bytes: mean(&incr),
        wal_bytes_per_day: None,
        source: vec!["pgbackrest info".into()],
    }
}

/// Backup sizes and the WAL rate from the bucket listing under the repository prefix.
pub fn measure_listing(prefix: &str, listing: &[ObjectInfo]) -> Measured {
    use std::collections::BTreeMap;
    let mut per_backup: BTreeMap<&str, f64> = BTreeMap::new();
    let (mut wal_bytes, mut first, mut last) = (0.0, i64::MAX, i64::MIN);
    for o in listing {
        let Some(rest) = o.key.strip_prefix(prefix) else {
            continue;
        };
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        match parts.as_slice() {
            ["backup", _, label, file]
                if crate::verify::label_kind(label).is_some()
                    && !file.starts_with("backup.manifest") =>
            {
                *per_backup.entry(label).or_default() += o.size as f64;
            }
            ["archive", _, _, file] if file.len() > 24 && file.contains('-') => {
                wal_bytes += o.size as f64;
                if let Some(t) = o.last_modified {
                    first = first.min(t);
                    last = last.max(t);
                }
            }
            _ => {}
        }
    }
    let (mut full, mut diff, mut incr) = (Vec::new(), Vec::new(), Vec::new());
    for (label, bytes) in per_backup {
        match crate::verify::label_kind(label) {
            Some("full") => full.push(bytes),
            Some("diff") => diff.push(bytes),
            _ => incr.push(bytes),
        }
    }
    // At least one day: a young archive would otherwise give absurd rates.
    let days = if last > first {
        ((last - first) as f64 / 86_400.0).max(1.0)
    } else {
        1.0
    };
    Measured {
        full_bytes: full.last().copied(),
        diff_bytes: mean(&diff),
        incr_bytes: mean(&incr),
        wal_bytes_per_day: (wal_bytes > 0.0).then_some(wal_bytes / days),
        source: vec!["bucket listing".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round numbers: price 6 USD, 1 TB = 10^12 bytes, 90 days, 1 TB minimum.
    fn base() -> CostInput {
        CostInput {
            price_per_tb_month_usd: 6.0,
            bytes_per_tb: 1e12,
            ..CostInput::example()
        }
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    #[test]
    fn weekly_full_kept_two_weeks_is_mostly_early_deletion() {
        // 1 TB full every 7 days, nothing else, retention-full=2 (count): K = 2*7 = 14 days.
        // active = 1e12 * 14 / 7 = 2 TB; deleted = 1e12 * (90-14) / 7 = 76/7 = 10.857142857 TB.
        // bill = 6 * (2 + 10.857142857) = 77.142857 -> 77.14; early = 6 * 10.857142857 = 65.14.
        let input = CostInput {
            full_bytes: 1e12,
            schedule: Schedule {
                full_every_days: 7,
                diff_every_days: 0,
                incremental_daily: false,
            },
            retention: Retention::Count { full: 2 },
            ..base()
        };
        let e = estimate(&input);
        close(e.active_tb, 2.0);
        close(e.deleted_tb, 76.0 / 7.0);
        assert_eq!(e.monthly_usd, 77.14);
        assert_eq!(e.early_deletion_usd, 65.14);
        assert_eq!(e.minimum_charge_usd, 0.0);
        assert_eq!(e.shortest_lifetime_days, 14.0);
        // Avoiding it: 7 * N >= 90 -> N = 13 (91 days); active = 1e12 * 91 / 7 = 13 TB -> 78.00.
        let advice = e.avoid_early_deletion.unwrap();
        assert_eq!(advice.retention, Retention::Count { full: 13 });
        assert_eq!(advice.monthly_usd, 78.0);
    }

    #[test]
    fn time_retention_of_90_days_has_no_early_deletion() {
        // 100 GB full weekly, 10 GB incremental days 1..6, 90 days (time): K = 7 + 90 = 97.
        // full: 1e11 * 97 = 9.7e12 byte-days; incr: 1e10 * sum(97-d, d=1..6) = 1e10 * 561 = 5.61e12.
        // active = 15.31e12 / 7 = 2.187142857 TB; every life >= 91 days: no deleted storage.
        // bill = 6 * 2.187142857 = 13.1228 -> 13.12.
        let input = CostInput {
            full_bytes: 1e11,
            incr_bytes: 1e10,
            ..base()
        };
        let e = estimate(&input);
        close(e.active_tb, 15.31 / 7.0);
        close(e.deleted_tb, 0.0);
        assert_eq!(e.monthly_usd, 13.12);
        assert_eq!(e.early_deletion_usd, 0.0);
        assert!(e.avoid_early_deletion.is_none());
        assert_eq!(e.shortest_lifetime_days, 91.0);
    }

    #[test]
    fn wal_just_short_of_90_days() {
        // Only WAL, 100 GB/day, weekly full of 0 bytes, 85 days (time): K = 92.
        // active = w * (F*K - F^2/2) / F = 1e11 * (644 - 24.5) / 7 = 8.85 TB.
        // WAL written at t lives 92 - t, early for t > 2: deleted = w * (a+F)^2/2 with
        // a = 90 - 92 = -2: 1e11 * 25/2 / 7 = 0.178571 TB.
        // bill = 6 * (8.85 + 0.178571) = 54.17; early = 6 * 0.178571 = 1.07.
        let input = CostInput {
            wal_bytes_per_day: 1e11,
            retention: Retention::Time { days: 85 },
            ..base()
        };
        let e = estimate(&input);
        close(e.active_tb, 8.85);
        close(e.deleted_tb, 12.5e11 / 7.0 / 1e12);
        assert_eq!(e.monthly_usd, 54.17);
        assert_eq!(e.early_deletion_usd, 1.07);
        // WAL needs K - F >= 90, i.e. 90 days of time retention.
        assert_eq!(
            e.avoid_early_deletion.unwrap().retention,
            Retention::Time { days: 90 }
        );
    }

    #[test]
    fn the_one_tb_minimum() {
        // Nothing stored: the minimum charge is the whole bill, 6 * 1 TB.
        let e = estimate(&base());
        assert_eq!(e.monthly_usd, 6.0);
        assert_eq!(e.minimum_charge_usd, 6.0);
        // 250 GB stored for good (K=97 >= 90): 6 * max(0.25, 1) = 6; minimum part 6 * 0.75 = 4.5.
        // (full 250 GB every 7 days kept K=97 days is 250e9*97/7 = 3.46 TB, so use WAL-free
        // daily fulls kept 90 days: F=1, K=1+89=90: active = 2.7778e9 * 90 = 250e9.)
        let input = CostInput {
            full_bytes: 250e9 / 90.0,
            schedule: Schedule {
                full_every_days: 1,
                diff_every_days: 0,
                incremental_daily: false,
            },
            retention: Retention::Time { days: 89 },
            ..base()
        };
        let e = estimate(&input);
        close(e.active_tb, 0.25);
        assert_eq!(e.monthly_usd, 6.0);
        assert_eq!(e.minimum_charge_usd, 4.5);
        assert_eq!(e.early_deletion_usd, 0.0);
    }

    #[test]
    fn diff_and_incr_days() {
        // F=7, diff every 3 days: diffs on days 3 and 6, incrementals on 1, 2, 4, 5.
        // K = 7 + 90 = 97: diff byte-days = 1e10 * (94 + 91) = 1.85e12; incr = 1e9 *
        // (96 + 95 + 93 + 92) = 3.76e11.
        let input = CostInput {
            diff_bytes: 1e10,
            incr_bytes: 1e9,
            schedule: Schedule {
                full_every_days: 7,
                diff_every_days: 3,
                incremental_daily: true,
            },
            ..base()
        };
        let e = estimate(&input);
        let get = |c: &str| e.classes.iter().find(|x| x.class == c).unwrap().clone();
        close(get("diff").active_tb, 1.85e12 / 7.0 / 1e12);
        close(get("incr").active_tb, 3.76e11 / 7.0 / 1e12);
        assert_eq!(get("diff").min_lifetime_days, 91.0);
        assert_eq!(get("incr").max_lifetime_days, 96.0);
    }

    #[test]
    fn measuring_a_listing() {
        let o = |key: &str, size: u64, t: i64| ObjectInfo {
            key: format!("r/{key}"),
            size,
            last_modified: Some(t),
            etag: None,
        };
        let day = 86_400;
        let listing = vec![
            o("backup/s/20240101-020000F/backup.manifest", 999, 0),
            o("backup/s/20240101-020000F/pg_data/a.gz", 100, 0),
            o("backup/s/20240101-020000F/pg_data/b.gz", 50, 0),
            o(
                "backup/s/20240101-020000F_20240102-020000I/pg_data/a.gz",
                10,
                0,
            ),
            o(
                "backup/s/20240101-020000F_20240103-020000I/pg_data/a.gz",
                20,
                0,
            ),
            o(
                "archive/s/15-1/0000000100000000/000000010000000000000001-0123456789abcdef0123456789abcdef01234567.gz",
                300,
                0,
            ),
            o(
                "archive/s/15-1/0000000100000000/000000010000000000000002-0123456789abcdef0123456789abcdef01234567.gz",
                300,
                2 * day,
            ),
            o("archive/s/archive.info", 5, 0),
        ];
        let m = measure_listing("r/", &listing);
        assert_eq!(m.full_bytes, Some(150.0));
        assert_eq!(m.incr_bytes, Some(15.0));
        assert_eq!(m.diff_bytes, None);
        // 600 bytes over 2 days.
        assert_eq!(m.wal_bytes_per_day, Some(300.0));
    }
}
