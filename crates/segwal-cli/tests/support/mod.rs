//! What the CLI tests share: running the binary and reading its output.

use std::process::{Command, Output};

/// Runs the `segwal` binary with `args` and waits for it.
pub(crate) fn segwal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_segwal"))
        .args(args)
        .output()
        .expect("the segwal binary runs")
}

/// Output bytes as text.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
