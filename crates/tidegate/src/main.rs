//! The `tidegate` command. TODO(#2): in progress.
fn main() {}
