//! The `trimatch` binary: everything it does is in [`trimatch::cli`].

use std::process::ExitCode;

/// The dataflow allocates and frees many small rows; mimalloc does that far
/// cheaper than glibc's malloc (see `docs/performance.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    trimatch::cli::main()
}
