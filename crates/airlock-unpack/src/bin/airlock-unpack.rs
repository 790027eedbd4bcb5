fn main() -> std::process::ExitCode {
    airlock_unpack::cli::main()
}
