//! loom models of walmdb's concurrency, over the real code: the crate's `sync` facade swaps
//! in loom's primitives under `--cfg walmdb_loom`, and the models in `tests/` drive the real
//! queue, flusher, completions, overlay, snapshots and checkpoint through them, with the log
//! on the in-memory `SimFs` and LMDB replaced by a small in-memory fake.
//!
//! Run them with `bash scripts/loom.sh` (release, `LOOM_MAX_PREEMPTIONS=3` by default).
//! What each model proves, and at which bound: `docs/design.md`, "Loom models".
//!
//! Every model has a deliberately broken variant (`walmdb::loom_support::set_bug`) that must
//! fail, so no model passes vacuously. A failing loom model can abort its process (its
//! panic unwinds through destructors that use loom's primitives), so each broken variant
//! runs in a child process: [`models!`] makes, per model, a test that must pass, an ignored
//! test that runs the model with the bug named in `WALMDB_LOOM_BUG`, and a test that runs
//! that one in a child and requires it to fail.

#![cfg(walmdb_loom)]

use std::process::Command;

pub use walmdb::loom_support::Bug;

/// Set in the child process of a broken variant: the bug to switch on.
pub const BUG_ENV: &str = "WALMDB_LOOM_BUG";

/// Runs `model` under loom with every bug off; it must pass.
pub fn holds(model: impl Fn() + Sync + Send + 'static) {
    walmdb::loom_support::set_bug(None);
    loom::model(model);
}

/// In the child process: runs `model` with the bug `BUG_ENV` names switched on.
pub fn with_bug_from_env(model: impl Fn() + Sync + Send + 'static) {
    let name = std::env::var(BUG_ENV).expect("run by a `catches` test");
    let bug = Bug::ALL
        .into_iter()
        .find(|b| format!("{b:?}") == name)
        .unwrap_or_else(|| panic!("no bug named {name}"));
    walmdb::loom_support::set_bug(Some(bug));
    loom::model(model);
}

/// Runs the ignored test `child` of this test binary in a child process with `bug` on; loom
/// must find an execution that breaks the model (a failed assertion, a deadlock).
pub fn catches(bug: Bug, child: &str) {
    let out = Command::new(std::env::current_exe().expect("the test binary"))
        .args([
            "--ignored",
            "--exact",
            child,
            "--test-threads=1",
            "--nocapture",
        ])
        .env(BUG_ENV, format!("{bug:?}"))
        .output()
        .expect("start the child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "{child} passed with {bug:?} switched on: the model does not check what it claims"
    );
    assert!(
        stdout.contains("running 1 test")
            && (stderr.contains("panicked") || stdout.contains("panicked")),
        "{child} with {bug:?} failed, but not in the model:\n{stdout}\n{stderr}"
    );
    // The first panic's message: later ones are loom unwinding through destructors.
    let why = stderr
        .lines()
        .chain(stdout.lines())
        .skip_while(|l| !l.contains("panicked at"))
        .nth(1)
        .unwrap_or("");
    eprintln!("{bug:?}: caught ({why})");
}

/// For each `model => bug`: a test `name` that must pass, and a test `caught` that runs the
/// model with `bug` in a child process (the ignored test `child`) and requires it to fail.
#[macro_export]
macro_rules! models {
    ($($model:path => $name:ident, $bug:expr, $caught:ident, $child:ident;)*) => {$(
        #[test]
        fn $name() {
            $crate::holds($model);
        }

        #[test]
        #[ignore = "the child process of its broken-variant test"]
        fn $child() {
            $crate::with_bug_from_env($model);
        }

        #[test]
        fn $caught() {
            $crate::catches($bug, stringify!($child));
        }
    )*};
}
