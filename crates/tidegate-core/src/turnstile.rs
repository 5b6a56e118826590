//! TODO(#2): in progress.
