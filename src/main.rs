// The proxy allocates and frees a few hundred times per request: mimalloc
// does it in ~19k fewer instructions per request than glibc's allocator
// (callgrind, benches/README.md "Instructions per request").
#[global_allocator]
static ALLOCATOR: bluesminds::allocator::Allocator = bluesminds::allocator::Allocator;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process: mimalloc's arenas are large
    // aligned regions, and where THP is `always` (RHEL's default) the kernel
    // backs every touched part with 2 MiB pages; 1,000 open streams then held
    // 193 MiB instead of 95 (benches/README.md "Memory per stream"). The flag
    // covers mappings made before it, as it is checked at each page fault.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    bluesminds::cli::main()
}
