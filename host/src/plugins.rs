//! `runner plugins`: what a run here would load, and what each policy can
//! reach (every interface it imports and what the host gives it), so a
//! reviewer can audit a plugin before allowing it in CI. Nothing is
//! instantiated: no guest code runs.

use std::fmt::Write as _;

use crate::exit_code;
use crate::policy::text::safe;
use crate::policy::{PluginInfo, Policies, PolicyConfig, describe_import};

/// Prints the listing; returns the exit code.
pub fn list(config: &PolicyConfig) -> i32 {
    match Policies::list(config) {
        Ok(plugins) => {
            crate::stdio::out(&render(&plugins, config));
            exit_code::OK
        }
        Err(error) => {
            crate::errln!("error: {error}");
            if error.is_usage() {
                exit_code::USAGE_ERROR
            } else {
                exit_code::INTERNAL_ERROR
            }
        }
    }
}

/// The listing as text: a table, then each plugin's imports.
pub fn render(plugins: &[PluginInfo], config: &PolicyConfig) -> String {
    let rows: Vec<[String; 5]> = plugins
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.slot.to_string(),
                p.version.as_deref().map_or_else(|| "-".into(), safe),
                size(p.size),
                p.source.to_string(),
            ]
        })
        .collect();
    let header = ["NAME", "SLOT", "WIT", "SIZE", "SOURCE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let limits = &config.limits;
    let _ = writeln!(
        out,
        "\nEach policy: at most {} MiB of memory, {}s per call, {}s per run; no files, \
         environment, args or network unless listed below.",
        limits.memory_bytes >> 20,
        limits.deadline.as_secs_f64(),
        limits.budget.as_secs_f64()
    );
    for p in plugins {
        let _ = writeln!(out, "\n{} ({}), sha256 {}", p.name, p.slot, p.sha256);
        let _ = writeln!(out, "  imports:");
        // Import names are the component's own text: shown escaped.
        let imports: Vec<String> = p.imports.iter().map(|i| safe(i)).collect();
        let width = imports.iter().map(|i| i.chars().count()).max().unwrap_or(0);
        for (shown, import) in imports.iter().zip(&p.imports) {
            let _ = writeln!(out, "    {shown:<width$}  {}", describe_import(import));
        }
        if p.imports.is_empty() {
            let _ = writeln!(out, "    (nothing)");
        }
    }
    out
}

fn size(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1 << 20 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    }
}
