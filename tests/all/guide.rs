//! The rule author's guide (`guest-sdk/README.md`) is executable: its `sh`
//! blocks run here, in order, in a fresh folder, with `rulehost` on the PATH.

use std::process::Command;

use crate::support::root;

#[test]
fn every_command_of_the_guide_works() {
    let guide = std::fs::read_to_string(root().join("guest-sdk/README.md")).unwrap();
    let mut script = String::from("set -euxo pipefail\n");
    let mut in_sh = false;
    for line in guide.lines() {
        match (in_sh, line.trim_end()) {
            (false, "```sh") => in_sh = true,
            (true, "```") => in_sh = false,
            (true, l) => {
                script.push_str(l);
                script.push('\n');
            }
            _ => {}
        }
    }
    assert!(script.contains("rulehost new-rule") && script.contains("rulehost test --ruleset"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_rulehost")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env("PATH", path)
        .env("RULEHOST_REPO", root())
        // Dependencies come from the local cache; the scaffold has no lockfile.
        .env("CARGO_NET_OFFLINE", "true")
        .output()
        .unwrap();
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the guide failed:\n{log}");
    assert!(log.contains("2 passed, 0 failed"), "{log}");
    let last = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim().to_string();
    assert!(last.parse::<u64>().is_ok_and(|n| n > 0), "the new rule scored some transactions: {log}");
}
