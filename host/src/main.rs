fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(runner::main_impl() as u8)
}
