//! A sample of the fault matrix (`corehop faults`; its full run is benchmark-style, with its
//! last output in results/faults): four faults at two step boundaries of Stop-and-Copy, the
//! destination's memory and an image altered in transit among them.
mod common;
use common::*;

#[test]
fn a_sample_of_the_fault_matrix_settles() {
    let _lab = Lab::up();
    let out = std::env::temp_dir().join(format!("corehop-faults-{}", std::process::id()));
    let r = corehop(&[
        "faults",
        "--method",
        "stop-and-copy",
        "--at",
        "prepare",
        "--at",
        "restore",
        "--fault",
        "dst-link-cut",
        "--fault",
        "src-agent-killed",
        "--fault",
        "dst-oom",
        "--fault",
        "image-corrupt",
        "--out",
        out.to_str().unwrap(),
    ]);
    let matrix = std::fs::read_to_string(out.join("matrix.md")).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        r.status.success(),
        "{matrix}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert!(matrix.contains("8 cells, 0 failed"), "{matrix}");
    // Both faults took effect where they could: the restore was OOM-killed, and the image
    // (sent after the preparation) was altered and refused.
    assert!(matrix.contains("OOM kill"), "{matrix}");
    assert!(matrix.contains(" altered)"), "{matrix}");
}
