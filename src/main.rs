fn main() -> std::process::ExitCode {
    bluesminds::cli::main()
}
