//! `bluesminds usage verify`: reconciles the two places usage lives in the
//! database. `usage_records` holds one row per request; `usage_daily` the
//! totals per (day, key, model) that quotas, the usage API and the dashboard
//! read. The writer keeps both in one transaction, so every total must equal
//! the sum of its records; a difference means rows were edited, deleted or
//! written by something else. Records still in the local ledger (not yet in
//! the database) and rows the database refused (the quarantine) are reported
//! beside the comparison, since they are in neither table.

use std::collections::BTreeMap;
use std::path::Path;

use time::Date;

use crate::store::{GroupTotals, Store, StoreError};

/// The outcome of one reconciliation.
#[derive(Debug)]
pub struct Report {
    pub from: Date,
    pub to: Date,
    /// (day, key, model) groups compared.
    pub groups: usize,
    /// Requests found in `usage_records` over the range.
    pub records: i64,
    /// Groups whose totals differ: (from the records, from `usage_daily`);
    /// `None` where one side has no row.
    pub differences: Vec<(Option<GroupTotals>, Option<GroupTotals>)>,
    /// Segment files in the ledger directory on this machine (the running
    /// gateway's current one included).
    pub ledger_segments: usize,
    /// Lines of `quarantine.jsonl`.
    pub quarantined: usize,
}

pub async fn verify(
    store: &Store,
    ledger_dir: &Path,
    from: Date,
    to: Date,
) -> Result<Report, StoreError> {
    let (records, daily) = store.group_totals(from, to).await?;
    let key = |g: &GroupTotals| (g.day.clone(), g.key_id, g.model.clone());
    let mut groups: BTreeMap<_, (Option<GroupTotals>, Option<GroupTotals>)> = BTreeMap::new();
    let total_records = records.iter().map(|g| g.requests).sum();
    for g in records {
        let k = key(&g);
        groups.entry(k).or_default().0 = Some(g);
    }
    for g in daily {
        let k = key(&g);
        groups.entry(k).or_default().1 = Some(g);
    }
    let count = groups.len();
    let differences = groups
        .into_values()
        .filter(|(r, d)| r != d && !(r.is_none() && d.as_ref().is_some_and(is_empty)))
        .collect();
    let (ledger_segments, quarantined) = ledger_state(ledger_dir);
    Ok(Report {
        from,
        to,
        groups: count,
        records: total_records,
        differences,
        ledger_segments,
        quarantined,
    })
}

/// A daily row of zeros has nothing to reconcile.
fn is_empty(g: &GroupTotals) -> bool {
    g.requests == 0 && g.prompt_tokens == 0 && g.completion_tokens == 0 && g.cost_nanousd == 0
}

/// The ledger's segment files and the quarantine's line count.
fn ledger_state(dir: &Path) -> (usize, usize) {
    let segments = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ledger"))
        .count();
    let quarantined = std::fs::read_to_string(dir.join("quarantine.jsonl"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    (segments, quarantined)
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.differences.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "usage {} to {}: {} requests in usage_records, {} (day, key, model) groups",
            self.from, self.to, self.records, self.groups
        )?;
        for (records, daily) in &self.differences {
            let any = records
                .as_ref()
                .or(daily.as_ref())
                .expect("one side exists");
            let model = if any.model.is_empty() {
                "(none)"
            } else {
                &any.model
            };
            writeln!(
                f,
                "DIFFERENT {} key {} model {model}:\n  usage_records {}\n  usage_daily   {}",
                any.day,
                any.key_id,
                sums(records.as_ref()),
                sums(daily.as_ref())
            )?;
        }
        if self.is_consistent() {
            writeln!(f, "every usage_daily total equals the sum of its records")?;
        } else {
            writeln!(f, "{} groups differ", self.differences.len())?;
        }
        if self.ledger_segments > 0 {
            writeln!(
                f,
                "the local ledger has {} segment file(s): records in them reach the database while a gateway runs on this directory",
                self.ledger_segments
            )?;
        }
        if self.quarantined > 0 {
            writeln!(
                f,
                "{} record(s) the database refused are in quarantine.jsonl (in neither table)",
                self.quarantined
            )?;
        }
        Ok(())
    }
}

fn sums(g: Option<&GroupTotals>) -> String {
    let Some(g) = g else {
        return "no row".into();
    };
    format!(
        "requests {} prompt {} completion {} cached {} cache_write {} reasoning {} cost_nanousd {}",
        g.requests,
        g.prompt_tokens,
        g.completion_tokens,
        g.cached_tokens,
        g.cache_write_tokens,
        g.reasoning_tokens,
        g.cost_nanousd
    )
}
