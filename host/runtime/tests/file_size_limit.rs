//! A host whose process may not write long files (`ulimit -f`, systemd's
//! `LimitFSIZE=`) still serves actors. Memory images are normally kept in
//! memory files as long as a whole 32-bit memory (4 GiB, sparse); sizing one
//! past the limit would kill the process with SIGXFSZ, so under such a limit
//! the images are made as wasmtime makes them unpatched. The test has a
//! binary of its own because the limit holds for the whole process.

mod common;

use grove_host::ActorRef;
use wasmtime::component::Val;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_under_a_file_size_limit_serves_actors_from_images_it_can_write() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given;
    // SIGXFSZ goes back to its default action (ending the process), which
    // a parent may have set to ignore.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = 256 << 20;
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }

    let host = common::host();
    let counter = ActorRef::new("counter", "limited");
    assert_eq!(
        host.call(&counter, "add", vec![Val::U64(5)]).await.unwrap(),
        Some(Val::U64(5))
    );

    const ACTORS: usize = 100;
    let before = common::memory_mappings();
    for i in 0..ACTORS {
        let probe = ActorRef::new("probe", &format!("limited-{i}"));
        host.call(&probe, "remember", vec![Val::String(format!("memo {i}"))])
            .await
            .unwrap();
        assert_eq!(
            host.call(&probe, "recall", vec![]).await.unwrap(),
            Some(Val::Option(Some(Box::new(Val::String(format!(
                "memo {i}"
            ))))))
        );
    }
    // The images sit in the middle of their slots, as without the patch.
    let per_activation = (common::memory_mappings() - before) as f64 / ACTORS as f64;
    assert!(
        per_activation > 2.5,
        "{per_activation:.2} mappings per activation: the spanning images were used"
    );
}
