//! The `hookledger` binary: a thin shell over [`hookledger::cli`].
//!
//! mimalloc is the allocator (Rust's here; with its `override` feature also `malloc`/`free`
//! for DuckDB's C++ in every binary that links the library): see the README's "Allocator".

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hookledger::cli::main()
}
