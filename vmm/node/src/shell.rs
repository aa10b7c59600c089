//! Running `tc` and `ip` for the intake and request steering (to be
//! replaced by netlink), with errors that say which command failed.

use std::process::Command;

use thiserror::Error;

/// A command that failed.
#[derive(Debug, Error)]
#[error("`{cmd}` failed: {msg}")]
pub struct CommandError {
    /// The command line.
    pub cmd: String,
    /// What it printed, or why it did not run.
    pub msg: String,
}

/// Runs `args` (program first); fails with its stderr.
pub fn run(args: &[&str]) -> Result<(), CommandError> {
    run_with_input(args, "")
}

/// Runs `args` with `input` on its stdin; fails with its stderr.
pub fn run_with_input(args: &[&str], input: &str) -> Result<(), CommandError> {
    use std::io::Write;
    let fail = |msg: String| CommandError { cmd: args.join(" "), msg };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run {}: {e}", args[0])))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    Ok(())
}

/// Runs `args`, ignoring failure (cleanup of what may not exist).
pub fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}
