//! `moetile verify`: the selected backend against the CPU reference.

use crate::{model_arg, moetile, stdout_of};

#[test]
fn verify_reports_agreement_and_passes_on_matching_backends() {
    let out = stdout_of(moetile().args(["verify", "--cpu", "-m", model_arg(), "--chunk", "7"]));
    assert!(out.contains("top-1 agreement 100.0%"), "{out}");
    assert!(out.contains("max |logit diff|"), "{out}");
    assert!(out.trim_end().ends_with("OK"), "{out}");
}

#[test]
fn verify_prints_every_position_on_request() {
    let out = stdout_of(moetile().args([
        "verify",
        "--cpu",
        "-m",
        model_arg(),
        "-p",
        "Once upon a time",
        "--per-position",
    ]));
    // 10 prompt tokens: a header, a rule and a row each.
    assert_eq!(
        out.lines().filter(|l| l.starts_with("| ")).count(),
        11,
        "{out}"
    );
}
