//! The `hookledger` binary: a thin shell over [`hookledger::cli`], on mimalloc (see
//! [`hookledger::alloc`] for why, and for the option it sets).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hookledger::alloc::configure();
    hookledger::cli::main()
}
