//! Output helpers: human or JSON, colour only on a terminal and without `NO_COLOR`.

use std::io::IsTerminal;

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Text for a person (`text` is accepted too).
    #[default]
    #[value(alias = "text")]
    Human,
    /// JSON for programs (documented, stable keys).
    Json,
}

/// Whether to colour stderr.
pub fn color_enabled_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Whether to colour stdout.
pub fn color_enabled_stdout() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal()
}

/// Print a value as pretty JSON on stdout. A reader that went away (`| head`) is not an error.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value)?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}
