//! Running `ip`, `tc` and `sysctl` for test hosts, with errors that say
//! which command failed and what it printed.

use std::process::Command;

use super::TopoError;

/// Runs `args` (program first); fails with its stderr.
pub fn run(args: &[&str]) -> Result<(), TopoError> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| TopoError::Command { cmd: args.join(" "), msg: format!("cannot run {}: {e}", args[0]) })?;
    if !out.status.success() {
        return Err(TopoError::Command {
            cmd: args.join(" "),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Runs `args` with `input` on its stdin; fails with its stderr.
pub fn run_with_input(args: &[&str], input: &str) -> Result<(), TopoError> {
    use std::io::Write;
    let fail = |msg: String| TopoError::Command { cmd: args.join(" "), msg };
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

/// Runs `args` inside network namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Result<(), TopoError> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Runs `args`, ignoring failure (cleanup of what may not exist).
pub fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).output();
}

/// Output of `args`, if it succeeded.
pub fn output(args: &[&str]) -> Option<String> {
    let out = Command::new(args[0]).args(&args[1..]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
