//! The `tapline` command; everything it does lives in the library.

fn main() -> std::process::ExitCode {
    tapline::cli::main()
}
