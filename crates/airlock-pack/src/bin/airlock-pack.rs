fn main() -> std::process::ExitCode {
    airlock_pack::main()
}
