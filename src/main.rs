//! The `hookledger` binary: a thin shell over [`hookledger::cli`].

fn main() -> std::process::ExitCode {
    hookledger::cli::main()
}
