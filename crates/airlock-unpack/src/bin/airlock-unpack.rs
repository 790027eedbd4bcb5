fn main() -> std::process::ExitCode {
    airlock_unpack::commands::main()
}
